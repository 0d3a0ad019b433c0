"""Variable duration control (Kling-Foley §4.2): duration → sequence lengths, and learnable duration embeddings.

Kling-Foley trains on clips of natural length and tells the network where the clip sits and how long it is:
two scalars per clip, ``seconds_start`` and ``seconds_total``, are embedded and fused with the global
condition (timestep + pooled video/text), which modulates every block through adaLN. The embedding follows
Stable Audio's NumberConditioner (the paper's reference [70]): normalise the number to [0, 1], take learned
Fourier features ``[x, sin(2π·w·x), cos(2π·w·x)]`` and project them linearly to the model width.

The second half of this file is the one place that turns a duration into token counts. The numbers are
MMAudio's (and DESIGN.md's): latents at ``sr / mel_hop / 2`` Hz, CLIP frames at 8 fps, Synchformer windows of
16 frames at 25 fps with stride 8 and 8 tokens per window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .sync_layout import TOKENS_PER_WINDOW

__all__ = ["DurationError", "SequenceLengths", "sequence_lengths", "min_duration", "NumberEmbedding",
           "DurationEmbedding", "as_seconds"]

CLIP_FPS = 8
SYNC_FPS = 25
SYNC_WINDOW = 16  # frames per Synchformer window
SYNC_STRIDE = 8  # frames between window starts


class DurationError(ValueError):
    """A duration that the model cannot generate (non-positive, too short for one sync window, too long)."""


@dataclass(frozen=True)
class SequenceLengths:
    """Token counts of one clip: audio latents, semantic (CLIP) frames and sync tokens."""

    duration: float
    latent: int
    clip: int
    sync: int


def min_duration() -> float:
    """Shortest clip that still yields one Synchformer window (16 frames at 25 fps = 0.64 s)."""
    return SYNC_WINDOW / SYNC_FPS


def sequence_lengths(duration: float, *, sample_rate: int = 44100, mel_hop: int = 512, latent_downsample: int = 2,
                     max_duration: float | None = None) -> SequenceLengths:
    """``latent = ceil(d·sr/hop/2)``, ``clip = int(d·8)``, ``sync = ((d·25 − 16)//8 + 1)·8``.

    Raises :class:`DurationError` for a duration ≤ 0, shorter than one sync window or above ``max_duration``.
    The arithmetic order is MMAudio's ``SequenceConfig`` so boundary cases round the same way.
    """
    try:
        d = float(duration)
    except (TypeError, ValueError):
        raise DurationError(f"duration={duration!r} is not a number of seconds") from None
    if not math.isfinite(d) or d <= 0:
        raise DurationError(f"duration={duration!r} must be a positive number of seconds")
    if d < min_duration():
        raise DurationError(f"duration={d:g} s is shorter than one sync window ({min_duration():g} s = "
                            f"{SYNC_WINDOW} frames at {SYNC_FPS} fps); use at least {min_duration():g} s")
    if max_duration is not None and d > max_duration:
        raise DurationError(f"duration={d:g} s exceeds this model's limit of {max_duration:g} s; generate in "
                            f"shorter segments or use a model trained for longer clips")
    latent = int(math.ceil(d * sample_rate / mel_hop / latent_downsample))
    clip = int(d * CLIP_FPS)
    windows = (d * SYNC_FPS - SYNC_WINDOW) // SYNC_STRIDE + 1
    sync = int(windows * TOKENS_PER_WINDOW)
    return SequenceLengths(duration=d, latent=latent, clip=clip, sync=sync)


def as_seconds(value: float | Sequence[float] | torch.Tensor, batch: int, *, name: str,
               device: torch.device | None = None) -> torch.Tensor:
    """A float, a list or a tensor of seconds → a ``(batch,)`` float32 tensor (a scalar is broadcast)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise DurationError(f"{name} has {t.numel()} values for a batch of {batch}; give one value or one per item")
    if not torch.isfinite(t).all() or bool((t < 0).any()):
        raise DurationError(f"{name}={t.tolist()} must be finite and ≥ 0 seconds")
    return t


class NumberEmbedding(nn.Module):
    """Learned Fourier-feature embedding of a scalar in ``[min_value, max_value]`` (Stable Audio style).

    The input is clamped and normalised to [0, 1]; ``fourier_dim/2`` learned frequencies give
    ``[x, sin(2π·w·x), cos(2π·w·x)]`` which a linear layer maps to ``dim``. Unlike a lookup table of
    per-second embeddings this interpolates between seconds seen in training.
    """

    def __init__(self, dim: int, fourier_dim: int = 256, min_value: float = 0.0, max_value: float = 30.0):
        super().__init__()
        if fourier_dim % 2:
            raise ValueError(f"fourier_dim={fourier_dim} must be even")
        if max_value <= min_value:
            raise ValueError(f"max_value={max_value} must exceed min_value={min_value}")
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.weights = nn.Parameter(torch.randn(fourier_dim // 2))
        self.proj = nn.Linear(fourier_dim + 1, dim)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        x = value.float().clamp(self.min_value, self.max_value)
        x = ((x - self.min_value) / (self.max_value - self.min_value)).reshape(-1, 1)  # (B, 1)
        angle = x * self.weights.float()[None, :] * (2 * math.pi)  # (B, F/2)
        feats = torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=-1)  # (B, F + 1)
        return self.proj(feats.to(self.proj.weight.dtype))  # (B, dim)


class DurationEmbedding(nn.Module):
    """``seconds_start`` and ``seconds_total`` → one ``(B, dim)`` timing vector for the global condition.

    The paper concatenates the two embeddings with the pooled text/video features before a projection; a
    linear layer over a concatenation equals the sum of per-part linear layers, so the model adds this vector
    to its (already projected) pooled features instead — same function, no extra wide layer.
    """

    def __init__(self, dim: int, fourier_dim: int = 256, max_seconds: float = 30.0):
        super().__init__()
        self.start = NumberEmbedding(dim, fourier_dim, 0.0, max_seconds)
        self.total = NumberEmbedding(dim, fourier_dim, 0.0, max_seconds)

    def forward(self, seconds_start: torch.Tensor, seconds_total: torch.Tensor) -> torch.Tensor:
        return self.start(seconds_start) + self.total(seconds_total)  # (B, dim)
