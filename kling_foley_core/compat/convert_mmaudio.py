"""MMAudio MM-DiT checkpoints → :class:`~kling_foley_core.models.mmdit.KlingFoleyMMDiT`.

Accepts the released ``mmaudio_{small_16k,small_44k,medium_44k,large_44k,large_44k_v2}.pth`` files (read with
``torch.load(weights_only=True, mmap=True)``) and their fp16/fp32 ``.safetensors`` re-exports, whose keys may
carry a wrapper prefix (``model.``, ``net.`` …). The library keeps MMAudio's parameter names, so conversion is
the identity apart from the prefix and three derived tensors some exports include (``t_embed.freqs``,
``latent_rot``, ``clip_rot``), which the library recomputes per sequence length. The architecture (widths,
depths, v1/v2 projections, timestep features, 16k/44.1k latent rate) is read from the tensor shapes, so
custom-size MMAudio networks load too; a checkpoint of another kind fails with the keys that did not fit and
what it looks like.

CLI::

    python -m kling_foley_core.compat.convert_mmaudio SRC.pth OUTDIR [--dtype fp16|bf16|fp32] [--overwrite]

writes a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) loadable with
``KlingFoleyMMDiT.from_pretrained(OUTDIR)`` or :func:`load_mmdit`.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..layers import swiglu_hidden_dim
from ..models.mmdit_presets import MMDIT_PRESETS
from .checkpoints import (CheckpointError, dtype_from_name, init_empty, load_state_dict_strict, read_state_dict)

log = logging.getLogger(__name__)

__all__ = ["MMAudioVariant", "detect_mmaudio_variant", "convert_mmaudio_state_dict", "load_mmaudio_mmdit",
           "load_mmdit", "convert_checkpoint", "looks_like", "main"]

ANCHOR = "audio_input_proj.0.weight"
DERIVED_KEYS = ("t_embed.freqs", "latent_rot", "clip_rot")
# fields that define the network (others such as max_duration are library policy)
ARCH_FIELDS = ("latent_dim", "clip_dim", "sync_dim", "text_dim", "hidden_dim", "depth", "fused_depth", "num_heads",
               "text_seq_len", "proj_style", "t_frequency_dim", "t_max_period")

# (pattern over key names, description) — first match wins; used to say what a foreign checkpoint is
_SIGNATURES: list[tuple[str, str]] = [
    (r"^duration_embed\.", "a Kling-Foley library MM-DiT (load it with KlingFoleyMMDiT.from_pretrained or load_mmdit)"),
    (r"^triple_blocks\.|^single_blocks\.", "a HunyuanVideo-Foley DiT (use the hunyuan loader)"),
    (r"^vfeat_extractor\.|^afeat_extractor\.", "a Synchformer checkpoint (synchformer_state_dict.pth)"),
    (r"^(encoder|decoder)\.(conv_in|down|mid|up)|^data_mean$", "an MMAudio mel VAE (v1-16.pth / v1-44.pth)"),
    (r"^(encoder|decoder)\.model\.\d+\.|^quant_conv\.", "a DAC-style audio VAE"),
    (r"^conv_pre\.|^ups\.\d+|^resblocks\.\d+", "a BigVGAN vocoder"),
    (r"^visual\.|^token_embedding\.|^transformer\.resblocks\.", "an (open_clip) CLIP model"),
    (r"^encoder\.block\.\d+\.layer|^shared\.weight$", "a T5 text encoder"),
    (r"joint_blocks\.\d+\.", "an MMAudio-like MM-DiT whose input projections differ from MMAudio's"),
]


@dataclass
class MMAudioVariant:
    """What a checkpoint holds: the preset name it matches ("custom" otherwise), the constructor config of
    the library model, and the key prefix it was stored under."""

    name: str
    config: dict[str, Any]
    prefix: str = ""

    @property
    def description(self) -> str:
        c = self.config
        return (f"MMAudio {self.name} ({c['proj_style']}, hidden {c['hidden_dim']}, {c['num_heads']} heads, depth "
                f"{c['depth']} of which {c['fused_depth']} audio-only, {c['latent_dim']}-d latents @ "
                f"{c['sample_rate']} Hz)")


def looks_like(keys) -> str | None:
    """A short description of the model a set of state-dict keys belongs to, or None if unrecognised."""
    keys = list(keys)
    for pattern, what in _SIGNATURES:
        rx = re.compile(pattern)
        if sum(1 for k in keys if rx.search(k)) >= 1:
            return what
    return None


def _find_prefix(sd: dict[str, torch.Tensor], source: str) -> str:
    hits = [k[: -len(ANCHOR)] for k in sd if k.endswith(ANCHOR) and (k == ANCHOR or k[: -len(ANCHOR)].endswith("."))]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise CheckpointError(f"{source}: holds several MM-DiTs (key prefixes {hits}); extract one first")
    what = looks_like(sd)
    hint = f"; this looks like {what}" if what else ""
    raise CheckpointError(f"{source}: not an MMAudio MM-DiT checkpoint — no '{ANCHOR}' among its {len(sd)} keys "
                          f"(first: {', '.join(list(sd)[:4])}){hint}")


def _shape(sd, key, source) -> tuple[int, ...]:
    if key not in sd:
        what = looks_like(sd)
        raise CheckpointError(f"{source}: missing key '{key}' that every MMAudio MM-DiT has"
                              + (f"; this looks like {what}" if what else ""))
    return tuple(sd[key].shape)


def _count_blocks(sd, name: str) -> int:
    rx = re.compile(rf"^{name}\.(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(idx) + 1 if idx else 0


def detect_mmaudio_variant(sd: dict[str, torch.Tensor], *, source: str = "checkpoint") -> MMAudioVariant:
    """Read the architecture from key names and shapes; name the preset it matches (or "custom")."""
    prefix = _find_prefix(sd, source)
    body = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if "duration_embed.start.weights" in body:
        raise CheckpointError(f"{source}: this looks like {looks_like(['duration_embed.'])}, not an MMAudio checkpoint")
    hidden, latent_dim, _ = _shape(body, "audio_input_proj.0.weight", source)
    head_dim = _shape(body, "joint_blocks.0.latent_block.attn.q_norm.weight", source)[0]
    n_joint, n_fused = _count_blocks(body, "joint_blocks"), _count_blocks(body, "fused_blocks")
    if "clip_input_proj.2.w1.weight" in body:
        style = "v2"
    elif "clip_input_proj.1.w1.weight" in body:
        style = "v1"
    else:
        raise CheckpointError(f"{source}: clip_input_proj has neither the v1 (index 1) nor the v2 (index 2) SwiGLU; "
                              f"keys: {sorted(k for k in body if k.startswith('clip_input_proj'))}")
    t_freq = _shape(body, "t_embed.mlp.0.weight", source)[1]
    ffn = _shape(body, "joint_blocks.0.latent_block.ffn.w1.weight", source)[0]
    mlp_ratio = 4.0
    if swiglu_hidden_dim(int(hidden * mlp_ratio)) != ffn:
        raise CheckpointError(f"{source}: feed-forward width {ffn} does not match MMAudio's 4x SwiGLU for hidden "
                              f"{hidden} ({swiglu_hidden_dim(hidden * 4)})")
    rate = dict(sample_rate=16000, mel_hop=256) if latent_dim == 20 else dict(sample_rate=44100, mel_hop=512)
    if latent_dim not in (20, 40):
        log.warning("%s: %d-d latents match neither MMAudio VAE (20-d 16 kHz, 40-d 44.1 kHz); assuming 44.1 kHz",
                    source, latent_dim)
    config = {**MMDIT_PRESETS["mmaudio_small_44k"], **rate,
              "latent_dim": latent_dim,
              "clip_dim": _shape(body, "clip_input_proj.0.weight", source)[1],
              "sync_dim": _shape(body, "sync_pos_emb", source)[-1],
              "text_dim": _shape(body, "text_input_proj.0.weight", source)[1],
              "text_seq_len": _shape(body, "empty_string_feat", source)[0],
              "hidden_dim": hidden, "num_heads": hidden // head_dim, "depth": n_joint + n_fused,
              "fused_depth": n_fused, "mlp_ratio": mlp_ratio, "proj_style": style,
              "t_frequency_dim": t_freq if style == "v1" else None,
              "t_max_period": 10000.0 if style == "v1" else 1.0}
    if style == "v2" and t_freq != hidden:
        raise CheckpointError(f"{source}: v2 checkpoint with {t_freq} timestep frequencies (expected hidden={hidden})")
    name = "custom"
    for preset, cfg in MMDIT_PRESETS.items():
        if preset.startswith("mmaudio_") and all(_norm(cfg.get(f)) == _norm(config[f]) for f in ARCH_FIELDS):
            name = preset[len("mmaudio_"):]
            break
    return MMAudioVariant(name=name, config=config, prefix=prefix)


def _norm(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def convert_mmaudio_state_dict(sd: dict[str, torch.Tensor], variant: MMAudioVariant | None = None, *,
                               source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Strip the prefix and the derived tensors; keys are otherwise MMAudio's own. Keys outside the prefix
    (other models stored in the same file) are ignored with a log message."""
    variant = variant or detect_mmaudio_variant(sd, source=source)
    p = variant.prefix
    out = {k[len(p):]: v for k, v in sd.items() if k.startswith(p) and k[len(p):] not in DERIVED_KEYS}
    others = sum(1 for k in sd if not k.startswith(p))
    if others:
        log.info("%s: ignoring %d keys outside the MM-DiT prefix '%s'", source, others, p)
    return out


def load_mmaudio_mmdit(src: str | Path | dict[str, torch.Tensor], *, dtype: torch.dtype | str | None = None,
                       device: torch.device | str | None = None, **config_overrides):
    """Build the library model from an MMAudio checkpoint (path or state dict) without a second weight copy:
    the model is created on the meta device and receives the (memory-mapped) tensors themselves.

    ``dtype`` (fp32/fp16/bf16 or a torch dtype) casts at load; None keeps the checkpoint's dtype.
    ``config_overrides`` change library policy fields (e.g. ``max_duration``), not the architecture.
    """
    from ..models.mmdit import KlingFoleyMMDiT

    source = Path(src).name if isinstance(src, (str, Path)) else "state dict"
    sd = read_state_dict(src) if isinstance(src, (str, Path)) else src
    variant = detect_mmaudio_variant(sd, source=source)
    bad = [k for k in config_overrides if k in ARCH_FIELDS]
    if bad:
        raise ValueError(f"config overrides {bad} would change the architecture the checkpoint defines")
    variant.config.update(config_overrides)
    body = convert_mmaudio_state_dict(sd, variant, source=source)
    model = init_empty(KlingFoleyMMDiT, **variant.config)
    # the variant was recognised, so a misfit is a damaged/modified checkpoint of it: the message names the
    # detected variant and the keys, not a guess at another model
    load_state_dict_strict(model, body, what=f"{source} (detected {variant.description})",
                           dtype=dtype_from_name(dtype))
    log.info("loaded %s from %s", variant.description, source)
    model.eval().requires_grad_(False)
    return model.to(device) if device is not None else model


def load_mmdit(path: str | Path, *, dtype: torch.dtype | str | None = None,
               device: torch.device | str | None = None):
    """Load an MM-DiT from a library folder (``config.json`` + safetensors) or an MMAudio checkpoint file,
    memory-mapped into a meta-initialised model (peak memory ≈ one copy of the weights)."""
    from ..models.mmdit import KlingFoleyMMDiT

    path = Path(path)
    if path.is_file():
        return load_mmaudio_mmdit(path, dtype=dtype, device=device)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"'{path}' is neither a checkpoint file nor a model folder with config.json")
    weights = sorted(path.glob("*.safetensors"))
    if len(weights) != 1:
        raise CheckpointError(f"model folder '{path}' must hold exactly one .safetensors file, found "
                              f"{[w.name for w in weights]}")
    config = {k: v for k, v in json.loads(cfg_path.read_text()).items() if not k.startswith("_")}
    try:
        model = init_empty(KlingFoleyMMDiT, **config)
    except TypeError as exc:
        raise CheckpointError(f"'{cfg_path}' is not an MM-DiT config: {exc}") from None
    sd = read_state_dict(weights[0])
    load_state_dict_strict(model, sd, what=f"MM-DiT folder '{path.name}'", looks_like=looks_like(sd),
                           dtype=dtype_from_name(dtype))
    model.eval().requires_grad_(False)
    return model.to(device) if device is not None else model


def convert_checkpoint(src: str | Path, outdir: str | Path, *, dtype: str | torch.dtype | None = "fp32",
                       overwrite: bool = False) -> Path:
    """Convert an MMAudio checkpoint into a diffusers folder. The folder is written next to its final place
    and renamed at the end, so an interrupted run never leaves a half-written model."""
    src, outdir = Path(src), Path(outdir)
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder '{outdir}' exists and is not empty; pass --overwrite or choose "
                              f"another folder")
    model = load_mmaudio_mmdit(src, dtype=dtype)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if outdir.exists():
            shutil.rmtree(outdir)
        tmp.rename(outdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return outdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kling_foley_core.compat.convert_mmaudio",
                                     description="Convert an MMAudio MM-DiT checkpoint into a diffusers folder.")
    parser.add_argument("src", help="mmaudio_*.pth or a .safetensors re-export")
    parser.add_argument("outdir", help="output folder (config.json + diffusion_pytorch_model.safetensors)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="weights dtype to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert_checkpoint(args.src, args.outdir, dtype=args.dtype, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError, ValueError) as exc:
        print(f"convert_mmaudio: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
