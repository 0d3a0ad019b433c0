"""Named MM-DiT configurations: the five released MMAudio networks, the Kling-Foley sizes and a tiny test model.

MMAudio presets are the reference constructors (hkchengrex/MMAudio ``networks.py``) written as configs.

Kling-Foley sizes (paper §6, "Scaling Strategy"): ``d_hidden = 64·h``; the base model has 17 heads and depth 23
(1.5 B), the 3 B and 6 B models 23 and 32 heads at depth 27. The paper does not give the joint/audio-only split
(N1/N2 of Algorithm 1); we keep MMAudio's proportion of about one third joint blocks (large: 7 of 21), i.e.
8 + 15, 9 + 18 and 9 + 18. The conditioning widths are those of the paper's encoders: MetaCLIP ViT-bigG-14
(1280-d image embeddings), T5-base (768-d), Synchformer (768-d); latents are the 44.1 kHz Mel-VAE's 40 channels.
With these choices the parameter counts are 1.66 B, 3.45 B and 6.61 B (``count_parameters``) — the paper's
names are rounded, and its embedding/projection widths are not published, so exact counts cannot match.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["MMDIT_PRESETS", "mmdit_config", "build_mmdit", "count_parameters"]

_MMAUDIO_COMMON = dict(clip_dim=1024, sync_dim=768, text_dim=1024, text_seq_len=77, mlp_ratio=4.0,
                       proj_style="v1", t_frequency_dim=256, t_max_period=10000.0, use_duration=False,
                       learned_empty_text=False, final_cond="global", default_duration=8.0, max_duration=30.0)
_MMAUDIO_16K = dict(latent_dim=20, sample_rate=16000, mel_hop=256)
_MMAUDIO_44K = dict(latent_dim=40, sample_rate=44100, mel_hop=512)

_KLING_COMMON = dict(latent_dim=40, clip_dim=1280, sync_dim=768, text_dim=768, text_seq_len=77, mlp_ratio=4.0,
                     proj_style="v2", t_frequency_dim=None, t_max_period=1.0, use_duration=True,
                     learned_empty_text=True, final_cond="extended", sample_rate=44100, mel_hop=512,
                     default_duration=10.0, max_duration=30.0)

MMDIT_PRESETS: dict[str, dict[str, Any]] = {
    "mmaudio_small_16k": {**_MMAUDIO_COMMON, **_MMAUDIO_16K, "hidden_dim": 448, "num_heads": 7, "depth": 12,
                          "fused_depth": 8},
    "mmaudio_small_44k": {**_MMAUDIO_COMMON, **_MMAUDIO_44K, "hidden_dim": 448, "num_heads": 7, "depth": 12,
                          "fused_depth": 8},
    "mmaudio_medium_44k": {**_MMAUDIO_COMMON, **_MMAUDIO_44K, "hidden_dim": 896, "num_heads": 14, "depth": 12,
                           "fused_depth": 8},
    "mmaudio_large_44k": {**_MMAUDIO_COMMON, **_MMAUDIO_44K, "hidden_dim": 896, "num_heads": 14, "depth": 21,
                          "fused_depth": 14},
    "mmaudio_large_44k_v2": {**_MMAUDIO_COMMON, **_MMAUDIO_44K, "hidden_dim": 896, "num_heads": 14, "depth": 21,
                             "fused_depth": 14, "proj_style": "v2", "t_frequency_dim": None, "t_max_period": 1.0},
    "kling_foley_1.5b": {**_KLING_COMMON, "hidden_dim": 64 * 17, "num_heads": 17, "depth": 23, "fused_depth": 15},
    "kling_foley_3b": {**_KLING_COMMON, "hidden_dim": 64 * 23, "num_heads": 23, "depth": 27, "fused_depth": 18},
    "kling_foley_6b": {**_KLING_COMMON, "hidden_dim": 64 * 32, "num_heads": 32, "depth": 27, "fused_depth": 18},
    # Kling-Foley design at toy size (head dim 16, 3 blocks): for tests and examples, milliseconds per call.
    "tiny": {**_KLING_COMMON, "latent_dim": 8, "clip_dim": 24, "sync_dim": 16, "text_dim": 20, "text_seq_len": 5,
             "hidden_dim": 32, "num_heads": 2, "depth": 3, "fused_depth": 1, "duration_fourier_dim": 16,
             "sample_rate": 16000, "mel_hop": 256},
}


def mmdit_config(name: str, **overrides) -> dict[str, Any]:
    """The constructor arguments of preset ``name`` with ``overrides`` applied."""
    if name not in MMDIT_PRESETS:
        raise ValueError(f"MM-DiT preset '{name}' is unknown; choose one of {', '.join(MMDIT_PRESETS)}")
    return {**MMDIT_PRESETS[name], **overrides}


def build_mmdit(name: str, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                **overrides):
    """Build preset ``name`` (randomly initialised) on ``device`` in ``dtype``; ``device="meta"`` allocates nothing."""
    from .mmdit import KlingFoleyMMDiT

    config = mmdit_config(name, **overrides)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return KlingFoleyMMDiT(**config)
    model = KlingFoleyMMDiT(**config)
    return model.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else model


def count_parameters(name: str, **overrides) -> int:
    """Parameter count of a preset, computed on the meta device (no memory)."""
    model = build_mmdit(name, device="meta", **overrides)
    return sum(p.numel() for p in model.parameters())
