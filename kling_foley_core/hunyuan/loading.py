"""Load HunyuanVideo-Foley checkpoints: the DiT (XXL/XL, bf16 pickles or fp16/fp8 safetensors) and the DAC-VAE.

* Files are read only through the library's safe reader (safetensors memory-mapped; pickles with
  ``weights_only=True``), then checked key-by-key against the model built on the meta device, so a truncated
  file names its missing keys and a file of another family names what it looks like and which loader to use.
* The model size (XXL 18+36 blocks × 1536, XL 12+24 × 1408, or anything else) is read off the tensor shapes.
* ``precision="fp8"`` stores the transformer blocks' matrices as float8_e4m3fn with per-row scales and upcasts
  them on the fly (:mod:`.quant`); conversion happens tensor by tensor while loading.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..compat.checkpoints import (CheckpointError, check_state_dict, dtype_from_name, init_empty, read_state_dict,
                                  strip_prefix)
from ..compat.checkpoints import fold_weight_norm
from .dac_vae import DacVae, dac_config_from_state_dict
from .dit import PRESETS, HunyuanFoleyDiT
from .quant import convert_to_fp8, fp8_state_dict, require_fp8

log = logging.getLogger(__name__)

FAMILY_LOADERS = {
    "hunyuan-dit": "kling_foley_core.hunyuan.loading.load_hunyuan_dit",
    "hunyuan-dac-vae": "kling_foley_core.hunyuan.loading.load_dac_vae",
    "mmaudio-mmdit": "the MMAudio / Kling-Foley MM-DiT loader",
    "mmaudio-vae": "the MMAudio mel-VAE loader",
    "synchformer": "the Synchformer loader",
}
FAMILY_DESCRIPTIONS = {
    "hunyuan-dit": "a HunyuanVideo-Foley diffusion transformer",
    "hunyuan-dac-vae": "a HunyuanVideo-Foley DAC-VAE (audio autoencoder)",
    "mmaudio-mmdit": "an MMAudio / Kling-Foley MM-DiT (joint_blocks/fused_blocks)",
    "mmaudio-vae": "an MMAudio mel-VAE",
    "synchformer": "a Synchformer video/audio sync encoder",
    "unknown": "no known model family",
}


class WrongFamilyError(CheckpointError):
    """A checkpoint of another model family was given to a loader."""


def _has(keys: set[str], *patterns: str) -> bool:
    return all(any(re.search(p, k) for k in keys) for p in patterns)


def sniff_checkpoint(state_dict: dict[str, torch.Tensor]) -> str:
    """Name the family of a state dict from its key names alone (after stripping wrapper prefixes).

    Returns one of "hunyuan-dit", "hunyuan-dac-vae", "mmaudio-mmdit", "mmaudio-vae", "synchformer", "unknown".
    """
    keys = set(strip_prefix(dict.fromkeys(state_dict, None)))
    if _has(keys, r"^triple_blocks\.\d+\.audio_self_attn_qkv\.") or _has(keys, r"^single_blocks\.\d+\.linear_qkv\.",
                                                                         r"^audio_embedder\.proj\."):
        return "hunyuan-dit"
    if _has(keys, r"^joint_blocks\.\d+\.(latent|clip|text)_block\.") or _has(keys, r"^fused_blocks\.\d+\.attn\.qkv\."):
        return "mmaudio-mmdit"
    if _has(keys, r"^encoder\.block\.\d+\.", r"^decoder\.model\.\d+\.") and _has(keys, r"\.alpha$"):
        return "hunyuan-dac-vae"
    if _has(keys, r"^(encoder|decoder)\.(down|up|mid)\.") or _has(keys, r"^decoder\.conv_in\.", r"^data_mean$"):
        return "mmaudio-vae"
    if _has(keys, r"^(vfeat_extractor|afeat_extractor)\.") or _has(keys, r"^(vfeat|afeat)_extractor"):
        return "synchformer"
    return "unknown"


def _ensure_family(sd: dict, expected: str, source: str) -> None:
    family = sniff_checkpoint(sd)
    if family == expected:
        return
    use = FAMILY_LOADERS.get(family)
    hint = f"; load it with {use}" if use else ""
    raise WrongFamilyError(f"{source}: expected {FAMILY_DESCRIPTIONS[expected]}, but this checkpoint looks like "
                           f"{FAMILY_DESCRIPTIONS[family]} ({len(sd)} tensors){hint}")


def _read(path_or_sd, what: str) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_sd, dict):
        return strip_prefix(dict(path_or_sd)), what
    path = Path(path_or_sd)
    return strip_prefix(read_state_dict(path)), f"{what} '{path.name}'"


class _LazySafetensors:
    """A pop-able view of a safetensors file that reads each tensor only when it is taken (streamed fp8 loads)."""

    def __init__(self, path: Path, names: dict[str, str]):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._names = dict(names)  # stripped key → key in the file

    def keys(self):
        return list(self._names)

    def __iter__(self):
        return iter(list(self._names))

    def __len__(self):
        return len(self._names)

    def __contains__(self, key):
        return key in self._names

    def __getitem__(self, key):
        return self._file.get_tensor(self._names[key])

    def pop(self, key):
        value = self[key]
        del self._names[key]
        return value


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool, "F8_E4M3": getattr(torch, "float8_e4m3fn", torch.uint8),
              "F8_E5M2": getattr(torch, "float8_e5m2", torch.uint8)}


def _safetensors_index(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Shapes/dtypes of a safetensors file as meta tensors (nothing read), plus stripped-name → file-name."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = {}
            for key in f.keys():
                sl = f.get_slice(key)
                raw[key] = torch.empty(sl.get_shape(), dtype=_ST_DTYPES.get(sl.get_dtype(), torch.float32),
                                       device="meta")
    except Exception as exc:  # truncated or garbled header
        raise CheckpointError(f"checkpoint '{path.name}' is not a valid safetensors file (truncated or corrupt?): "
                              f"{exc}") from None
    names = strip_prefix({k: k for k in raw})
    return {k: raw[v] for k, v in names.items()}, names


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS after a conversion that allocated many temporaries (glibc only)."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl, …): nothing to do
            pass


# ------------------------------------------------------------------------------------------------------ DiT
def dit_config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict:
    """Read depth, width, heads and feature sizes off the tensor shapes of a HunyuanVideo-Foley DiT."""
    def shape(key):
        if key not in sd:
            raise CheckpointError(f"HunyuanVideo-Foley DiT checkpoint lacks '{key}', needed to infer the model size "
                                  f"(truncated file?)")
        return tuple(sd[key].shape)

    def depth(prefix):
        idx = [int(m.group(1)) for k in sd if (m := re.match(rf"^{prefix}\.(\d+)\.", k))]
        return max(idx) + 1 if idx else 0

    hidden, latent = shape("audio_embedder.proj.weight")[:2]
    head_dim = shape("triple_blocks.0.audio_self_q_norm.weight")[0] if "triple_blocks.0.audio_self_q_norm.weight" in sd \
        else shape("single_blocks.0.q_norm.weight")[0]
    cfg = dict(
        depth_triple_blocks=depth("triple_blocks"), depth_single_blocks=depth("single_blocks"),
        hidden_size=hidden, num_heads=hidden // head_dim, audio_vae_latent_dim=latent,
        clip_dim=shape("visual_proj.w1.weight")[1], condition_dim=shape("cond_in.linear_1.weight")[1],
        qkv_bias="triple_blocks.0.audio_self_attn_qkv.bias" in sd if depth("triple_blocks") else True,
        qk_norm="triple_blocks.0.audio_self_q_norm.weight" in sd if depth("triple_blocks") else True,
    )
    if depth("triple_blocks"):
        cfg["mlp_ratio"] = shape("triple_blocks.0.audio_mlp.fc1.weight")[0] / hidden
    if "sync_in.0.weight" in sd:
        cfg["sync_feat_dim"] = shape("sync_in.0.weight")[1]
        cfg["sync_in_ksz"] = shape("sync_in.2.w1.weight")[-1]
    elif "empty_sync_feat" in sd:
        cfg["sync_feat_dim"] = shape("empty_sync_feat")[-1]
        cfg["add_sync_feat_to_audio"] = False
    return cfg


def dit_size_name(config: dict) -> str:
    """'xxl', 'xl' or 'custom' for a config (as returned by :func:`dit_config_from_state_dict`)."""
    for name in ("xxl", "xl"):
        if all(config.get(k) == v for k, v in PRESETS[name].items()):
            return name
    return "custom"


def load_hunyuan_dit(path_or_sd, *, precision: str = "bf16", device: str | torch.device = "cpu",
                     fp8_per: str = "row", fp8_compute: str = "bf16", config: dict | None = None) -> HunyuanFoleyDiT:
    """Load ``hunyuanvideo_foley.pth`` (XXL), ``hunyuanvideo_foley_xl.pth`` (XL) or a safetensors conversion.

    ``precision``: "fp32" | "fp16" | "bf16" (weights cast at load) or "fp8" (block matrices stored as
    float8_e4m3fn with per-row (``fp8_per="row"``) or per-tensor scales; activations and the remaining weights use
    ``fp8_compute``, bf16 by default — "fp32" is faster on CPUs without bf16 units). A file that already holds fp8
    weights (community fp8 safetensors) needs ``precision="fp8"``. ``config`` overrides what the shapes cannot
    tell (e.g. ``interleaved_audio_visual_rope``); the released models need none.
    """
    fp8 = precision == "fp8"
    if fp8:
        require_fp8()
    compute_dtype = dtype_from_name(fp8_compute) if fp8 else dtype_from_name(precision)
    streamed = (fp8 and not isinstance(path_or_sd, dict)
                and Path(path_or_sd).suffix.lower() in (".safetensors", ".sft") and Path(path_or_sd).is_file())
    if streamed:
        # fp8 from safetensors: check keys/shapes on the header alone, then read + quantise one tensor at a time,
        # so peak memory is the fp8 model plus one source tensor (not the whole bf16 file)
        sd, names = _safetensors_index(Path(path_or_sd))
        source = f"HunyuanVideo-Foley DiT '{Path(path_or_sd).name}'"
    else:
        sd, source = _read(path_or_sd, "HunyuanVideo-Foley DiT")
    _ensure_family(sd, "hunyuan-dit", source)
    cfg = {**dit_config_from_state_dict(sd), **(config or {})}
    model = init_empty(HunyuanFoleyDiT, **cfg)
    if fp8:
        swapped = convert_to_fp8(model, compute_dtype=compute_dtype, per=fp8_per)
        # check the float layout first (clear key errors), then convert tensor by tensor
        float_keys_model = init_empty(HunyuanFoleyDiT, **cfg)
        plain = {k: v for k, v in sd.items() if not k.endswith((".weight_scale", ".scale_weight"))}
        check_state_dict(float_keys_model, plain, what=source, looks_like=None)
        del float_keys_model, plain
        if streamed:
            sd = _LazySafetensors(Path(path_or_sd), names)
        sd = fp8_state_dict(sd, [f"{n}.weight" for n in swapped], per=fp8_per, compute_dtype=compute_dtype)
        _release_freed_memory()
    else:
        if any(t.dtype == getattr(torch, "float8_e4m3fn", None) for t in sd.values()):
            raise CheckpointError(f"{source} stores fp8 weights; load it with precision='fp8'")
        check_state_dict(model, sd, what=source)
        sd = {k: (v.to(compute_dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device)
    model.eval().requires_grad_(False)
    log.info("loaded %s: %s size, %d+%d blocks, hidden %d, %s", source, dit_size_name(cfg),
             cfg["depth_triple_blocks"], cfg["depth_single_blocks"], cfg["hidden_size"], precision)
    return model


# -------------------------------------------------------------------------------------------------- DAC-VAE
def load_dac_vae(path_or_sd, *, dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu",
                 sample_rate: int = 48000) -> DacVae:
    """Load ``vae_128d_48k.pth`` (weight-norm keys are folded) or a safetensors conversion of it.

    The released file has no reliable sample-rate field readable without unpickling code, hence ``sample_rate``
    (48 kHz for the released VAE); all sizes come from the tensor shapes.
    """
    sd, source = _read(path_or_sd, "DAC-VAE")
    _ensure_family(sd, "hunyuan-dac-vae", source)
    try:
        sd = fold_weight_norm(sd)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    try:
        cfg = dac_config_from_state_dict(sd, sample_rate)
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing '{exc.args[0]}', needed to infer the VAE size (truncated file?)"
                              ) from None
    model = init_empty(DacVae, **cfg)
    check_state_dict(model, sd, what=source)
    dt = dtype_from_name(dtype)
    model.load_state_dict({k: v.to(dt) if v.is_floating_point() else v for k, v in sd.items()}, strict=True,
                          assign=True)
    return model.to(device).eval().requires_grad_(False)
