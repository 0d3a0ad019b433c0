"""Reference-format MMAudio mel-VAE checkpoints → ``MMAudioMelVAE`` (inference form).

What a real checkpoint (``v1-16.pth``, ``v1-44.pth``, or a safetensors re-export of either) holds: the raw
training-form weights of every magnitude-preserving convolution (``encoder.*``/``decoder.*`` ``.weight``, no
biases), the two scalar ``learnable_gain``s and the per-bin ``data_mean``/``data_std`` buffers ``(1, M, 1)``.
The reference inference path loads them into its module and then calls ``remove_weight_norm()``, which replaces
each conv weight ``w`` (computed in float32) by ``w / (1e-4 + ||w_o|| / sqrt(fan_in)) / sqrt(fan_in)`` per output
row ``o``. This converter does the same, once, and infers the architecture (data_dim, embed_dim, widths, levels,
attention and resampling positions) from the tensor shapes, so 16 kHz and 44.1 kHz files need no flag.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from kling_foley_core.models.mel_vae_mmaudio import MEL_STATS, normalized_mp_weight

log = logging.getLogger(__name__)

__all__ = ["ConvertedMelVAE", "MelVAECheckpointError", "convert_mmaudio_vae_state_dict", "describe_state_dict",
           "infer_mmaudio_vae_config", "is_inference_form"]

_NON_CONV = ("encoder.learnable_gain", "decoder.learnable_gain", "data_mean", "data_std")

# Key fragments of other checkpoints users are likely to pick by mistake, to say what the file looks like.
_LOOKS_LIKE = [
    (("joint_blocks", "audio_input_proj", "fused_blocks"), "an MMAudio MM-DiT (flow network) checkpoint"),
    (("conv_pre", "ups.", "resblocks.", "conv_post"), "a BigVGAN vocoder checkpoint"),
    (("vfeat_extractor", "afeat_extractor", "transformer.resblocks"), "a Synchformer / CLIP encoder checkpoint"),
    (("quantizer", "encoder.block.", "decoder.model."), "a DAC codec checkpoint"),
    (("triple_blocks", "single_blocks"), "a HunyuanVideo-Foley DiT checkpoint"),
    (("encoder.blocks.", "decoder.blocks.", "encoder.norm_out"), "a Kling-Foley Mel-VAE (library format: load it with "
                                                           "KlingMelVAE.from_pretrained)"),
]


class MelVAECheckpointError(ValueError):
    """The file is not an MMAudio mel-VAE checkpoint (or not the one asked for)."""


@dataclass
class ConvertedMelVAE:
    state_dict: dict[str, torch.Tensor]
    config: dict
    mode: str | None  # "16k", "44k" or None for a non-standard size


def describe_state_dict(sd: dict[str, torch.Tensor], limit: int = 5) -> str:
    """What a state dict looks like, for error messages: a guess at its kind, its size and its first keys."""
    keys = list(sd)
    guess = next((what for frags, what in _LOOKS_LIKE if sum(any(f in k for k in keys) for f in frags) >= 2), None)
    n_params = sum(v.numel() for v in sd.values() if torch.is_tensor(v))
    head = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{guess or 'an unknown model'} ({len(keys)} tensors, {n_params / 1e6:.2f} M values; keys: {head})"


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept a VAE nested in a larger module (``vae.``, as in MMAudio's AutoEncoderModule) or a DDP ``module.``."""
    for prefix in ("module.", "vae.", "tod.vae."):
        if any(k.startswith(prefix + "encoder.") or k.startswith(prefix + "decoder.") for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _levels(sd: dict, pattern: str) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for key in sd:
        m = re.fullmatch(pattern, key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return found


def infer_mmaudio_vae_config(sd: dict[str, torch.Tensor], source: str = "state dict") -> dict:
    """Constructor arguments of ``MMAudioMelVAE`` read off the tensor shapes of a (prefix-free) state dict."""
    needed = ["encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight", "decoder.conv_out.weight"]
    missing = [k for k in needed if k not in sd]
    if missing:
        raise MelVAECheckpointError(
            f"{source}: not an MMAudio mel-VAE checkpoint (missing {', '.join(missing)}); it looks like "
            f"{describe_state_dict(sd)}."
            f" Expected v1-16.pth or v1-44.pth (or a safetensors export of one)")
    enc_in = sd["encoder.conv_in.weight"]  # (hidden, data_dim, k)
    hidden, data_dim, kernel = enc_in.shape
    embed_dim = sd["decoder.conv_in.weight"].shape[1]
    blocks = _levels(sd, r"encoder\.down\.(\d+)\.block\.(\d+)\.conv1\.weight")
    if not blocks:
        raise MelVAECheckpointError(f"{source}: MMAudio mel-VAE keys without encoder.down.*.block.* "
                                    f"({describe_state_dict(sd)})")
    n_levels = max(blocks) + 1
    num_res_blocks = max(blocks[0]) + 1
    ch_mult = []
    for level in range(n_levels):
        out_ch = sd[f"encoder.down.{level}.block.0.conv1.weight"].shape[0]
        if out_ch % hidden:
            raise MelVAECheckpointError(f"{source}: level {level} width {out_ch} is not a multiple of {hidden}")
        ch_mult.append(out_ch // hidden)
    attn_layers = sorted(_levels(sd, r"encoder\.down\.(\d+)\.attn\.(\d+)\.qkv\.weight"))
    down_layers = sorted({int(m.group(1)) for k in sd
                          if (m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv1\.weight", k))})
    # The reference never puts attention inside the levels of the released models; its placeholder "[3]" points
    # past the last level. Keep that value when no level has attention so the config matches the reference's.
    if not attn_layers:
        attn_layers = [n_levels]
    return dict(data_dim=int(data_dim), embed_dim=int(embed_dim), hidden_dim=int(hidden), ch_mult=ch_mult,
                num_res_blocks=int(num_res_blocks), attn_layers=attn_layers, down_layers=down_layers,
                kernel_size=int(kernel))


def _mp_weights(sd: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in sd if k.endswith(".weight") and k not in _NON_CONV and sd[k].ndim == 3]


def is_inference_form(sd: dict[str, torch.Tensor], tol: float = 1e-2) -> bool:
    """True when every conv weight already has unit-norm output rows (weight norm already removed).

    Raw weights have row norms near sqrt(fan_in) (forced weight normalisation during training, or random init),
    far from 1 for any fan-in above 1; inference-form rows are 1/(1 + 1e-4·sqrt(fan_in)/||w||) ≈ 1.
    """
    for key in _mp_weights(sd):
        norms = sd[key].to(torch.float32).flatten(1).norm(dim=1)
        if (norms - 1).abs().max() > tol:
            return False
    return True


def convert_mmaudio_vae_state_dict(sd: dict[str, torch.Tensor], *, source: str = "state dict",
                                   weight_norm: str = "remove") -> ConvertedMelVAE:
    """Reference keys → library state dict (float32, weight norm removed) plus the inferred config.

    ``weight_norm``: "remove" (reference inference path; the default for real checkpoints), "keep" (the
    weights are already in inference form) or "auto" (decide by :func:`is_inference_form`).
    """
    if weight_norm not in ("remove", "keep", "auto"):
        raise ValueError(f"convert_mmaudio_vae_state_dict: weight_norm={weight_norm!r}; use 'remove', 'keep' or 'auto'")
    sd = _strip_prefix(dict(sd))
    config = infer_mmaudio_vae_config(sd, source)
    non_float = [k for k, v in sd.items() if not v.is_floating_point()]
    if non_float:
        raise MelVAECheckpointError(f"{source}: non-float tensors {non_float[:3]} in an MMAudio mel-VAE checkpoint")
    if weight_norm == "auto":
        weight_norm = "keep" if is_inference_form(sd) else "remove"
        log.info("%s: weight norm %s", source, "already removed" if weight_norm == "keep" else "will be removed")

    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        # The reference loads into a float32 module and normalises there, so half-precision exports are
        # upcast first; the loader casts to the requested dtype afterwards.
        value = value.to(torch.float32)
        if weight_norm == "remove" and key.endswith(".weight") and value.ndim == 3 and key not in _NON_CONV:
            value = normalized_mp_weight(value)
        out[key] = value

    data_dim = config["data_dim"]
    for key, idx in (("data_mean", 0), ("data_std", 1)):
        if key in out:
            out[key] = out[key].reshape(1, data_dim, 1)
        elif data_dim in MEL_STATS:
            log.info("%s: no %s in the checkpoint; using the built-in %d-bin table", source, key, data_dim)
            out[key] = torch.tensor(MEL_STATS[data_dim][idx], dtype=torch.float32).view(1, -1, 1)
        else:
            raise MelVAECheckpointError(f"{source}: no {key} in the checkpoint and no built-in table for "
                                        f"{data_dim} bins")

    mode = {(80, 20): "16k", (128, 40): "44k"}.get((config["data_dim"], config["embed_dim"]))
    return ConvertedMelVAE(state_dict=out, config=config, mode=mode)
