"""Small shared layers: channel-last convolutions, SwiGLU MLPs, adaLN modulation, RoPE, timestep embedding.

The numerics follow MMAudio (hkchengrex/MMAudio, which Kling-Foley builds on) so that its checkpoints load and
reproduce its outputs: SwiGLU hidden sizes rounded up to a multiple of 256, rotary pairs formed from adjacent
channels, rotations computed and applied in float32, sinusoidal timestep features ``[cos, sin]``.
Every module takes tensors laid out as ``(B, N, C)`` (tokens last-but-one), which is what transformers want;
the convolutions transpose internally.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelLastConv1d", "SwiGLU", "ConvSwiGLU", "swiglu_hidden_dim", "modulate", "rope_rotations", "apply_rope",
    "RopeCache", "TimestepEmbedding", "joint_attention",
]


class ChannelLastConv1d(nn.Conv1d):
    """A 1-D convolution over the token axis of a ``(B, N, C)`` tensor (same weights as ``nn.Conv1d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, N, C_out)


def swiglu_hidden_dim(hidden_dim: int, multiple_of: int = 256) -> int:
    """SwiGLU keeps the parameter count of a 4x MLP: 2/3 of the nominal width, rounded up to ``multiple_of``."""
    hidden = int(2 * hidden_dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)`` without biases (the SD3 / LLaMA feed-forward)."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int = 256):
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, N, dim)


class ConvSwiGLU(nn.Module):
    """SwiGLU whose three projections are 1-D convolutions over time: it mixes neighbouring tokens, which is
    how the MM-DiT captures local temporal structure (Kling-Foley §4.1, "1D convolutions and MLPs")."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int = 256, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim, multiple_of)
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, N, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift``; shift/scale are ``(B, 1, D)`` (global) or ``(B, N, D)`` (per token)."""
    return x * (1 + scale) + shift


# --------------------------------------------------------------------------------------------------------------
# Rotary position embedding
# --------------------------------------------------------------------------------------------------------------
def rope_rotations(length: int, head_dim: int, theta: float = 10000.0, *, freq_scaling: float = 1.0,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Rotation matrices for positions ``0..length-1``, shape ``(1, length, head_dim/2, 2, 2)``, float32.

    ``freq_scaling`` multiplies every frequency: a stream sampled ``r`` times more sparsely than the audio gets
    ``r`` so that its token ``i`` sits at audio position ``r·i`` (aligned RoPE, Kling-Foley §3.4).
    """
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even for rotary embeddings")
    pos = torch.arange(length, dtype=torch.float32, device=device)
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = freqs * freq_scaling
    angle = pos[:, None] * freqs[None, :]  # (N, head_dim/2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([cos, -sin, sin, cos], dim=-1)  # (N, head_dim/2, 4)
    return rot.view(1, length, head_dim // 2, 2, 2)


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` ``(B, H, N, Dh)`` by ``rot`` ``(1, N, Dh/2, 2, 2)``; float32 math."""
    xf = x.float().view(*x.shape[:-1], -1, 1, 2)  # (B, H, N, Dh/2, 1, 2)
    out = rot[..., 0] * xf[..., 0] + rot[..., 1] * xf[..., 1]  # (B, H, N, Dh/2, 2)
    return out.reshape(x.shape).to(x.dtype)


class RopeCache:
    """Rotations keyed by (length, scaling, device): computed once per sequence length, not per step.

    Lengths change per call (variable duration), so rotations cannot be frozen at construction; this cache
    keeps the most recent few and is cheap to rebuild.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, max_entries: int = 16):
        self.head_dim, self.theta, self.max_entries = head_dim, theta, max_entries
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, length: int, freq_scaling: float, device: torch.device) -> torch.Tensor:
        key = (int(length), float(freq_scaling), str(device))
        rot = self._cache.get(key)
        if rot is None:
            if len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))
            rot = rope_rotations(length, self.head_dim, self.theta, freq_scaling=freq_scaling, device=device)
            self._cache[key] = rot
        return rot

    def clear(self) -> None:
        self._cache.clear()


# --------------------------------------------------------------------------------------------------------------
# Timestep embedding
# --------------------------------------------------------------------------------------------------------------
class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the flow time ``t ∈ [0, 1]`` followed by a 2-layer SiLU MLP (DiT).

    Frequencies are ``(10000 / max_period) · 10000^(-2i/F)``: MMAudio v1 uses F = 256, max_period = 10000 (so
    t ∈ [0, 1] only sees the lowest frequencies); v2 uses F = hidden, max_period = 1, which spreads t over the
    full frequency range. Features are ``[cos, sin]`` and computed in float32.
    """

    def __init__(self, dim: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        if frequency_dim % 2:
            raise ValueError(f"frequency_dim={frequency_dim} must be even")
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frequency_dim, self.max_period = frequency_dim, float(max_period)
        # No buffer for the frequency table: it is rebuilt per call (F/2 values, negligible) so that a model
        # built on the meta device and filled with load_state_dict(assign=True) has no tensor left unset.

    def features(self, t: torch.Tensor) -> torch.Tensor:
        f = self.frequency_dim
        freqs = 1.0 / (10000 ** (torch.arange(0, f, 2, dtype=torch.float32, device=t.device) / f))
        freqs = (10000 / self.max_period) * freqs  # (F/2,)
        args = t.reshape(-1, 1).float() * freqs[None]  # (B, F/2)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, F)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        weight_dtype = self.mlp[0].weight.dtype
        return self.mlp(self.features(t).to(weight_dtype))  # (B, dim)


# --------------------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------------------
def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention over ``(B, H, N, Dh)`` tensors → ``(B, N, H·Dh)``.

    ``key_mask`` (B, N) bool, True = attend, hides padded keys (e.g. padding of a shorter text prompt).
    """
    mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N)
    out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(), attn_mask=mask)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)  # (B, N, H·Dh)

