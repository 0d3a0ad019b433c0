"""Small building blocks shared by the HunyuanVideo-Foley DiT (norms, gated MLPs, RoPE, timestep embedding).

Parameter names follow the public checkpoints (``w1/w2/w3``, ``fc1/fc2``, ``mlp.0/mlp.2``) so a released state
dict loads without renaming. Everything here is plain torch and runs on any device/dtype; the only numerics
that deviate from "compute in the input dtype" are the ones the reference does in fp32 (RMSNorm, RoPE,
timestep frequencies), kept so bf16 runs match the released model.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x·(1 + scale) + shift``. A per-sample (B, D) modulation is broadcast over the tokens."""
    if x.ndim == 3 and shift.ndim == 2:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)  # (B, 1, D)
    return x * (1 + scale) + shift


def modulate_2d_only(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN as the released model computes it in its triple blocks and final layer: a per-sample (B, D)
    modulation is applied, but a per-token (B, N, D) one is silently dropped (the reference helper only
    broadcasts 2-D shift/scale). The released weights were trained that way — with per-token timestep+sync
    conditioning the final layer is a plain LayerNorm + Linear — so it is reproduced, not "fixed"."""
    if shift.ndim == 3:
        return x
    return modulate(x, shift, scale)


def gate(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """adaLN gate on a residual branch; (B, D) gates are broadcast over the tokens."""
    if x.ndim == 3 and g.ndim == 2:
        g = g.unsqueeze(1)  # (B, 1, D)
    return x * g


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, normalised in fp32 then cast back before the (learned) gain, as in the reference."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) · w3 x)`` without biases (the visual-feature projection)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, out_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ChannelLastConv1d(nn.Conv1d):
    """A Conv1d over time applied to channels-last tokens (B, N, C): a "linear" layer that also sees neighbours."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, N, C_out)


def conv_mlp_hidden(hidden_dim: int, multiple_of: int = 256) -> int:
    """SwiGLU width rule: 2/3 of the nominal width, rounded up to a multiple of ``multiple_of``."""
    hidden_dim = int(2 * hidden_dim / 3)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


class ConvMLP(nn.Module):
    """SwiGLU whose three projections are temporal convolutions (kernel 1 or 3) over channels-last tokens."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3, padding: int = 1, multiple_of: int = 256):
        super().__init__()
        hidden = conv_mlp_hidden(hidden_dim, multiple_of)
        self.w1 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)
        self.w2 = ChannelLastConv1d(hidden, dim, kernel_size, padding=padding, bias=False)
        self.w3 = ChannelLastConv1d(dim, hidden, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def activation(name: str) -> nn.Module:
    table = {"gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU,
             "silu": nn.SiLU}
    if name not in table:
        raise ValueError(f"mlp_act_type='{name}' is unknown; choose one of {', '.join(table)}")
    return table[name]()


class MLP(nn.Module):
    """Transformer feed-forward ``fc2(act(fc1 x))``."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu_tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t·f), sin(t·f)]`` of (fractional) timesteps in the model's native [0, 1000]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1, 1).float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (B, dim)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features → Linear → SiLU → Linear."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_dim, self.max_period)
        # the bias carries the compute dtype even when the weight is stored in fp8
        return self.mlp(emb.to(self.mlp[0].bias.dtype))  # (B, D)


# ---------------------------------------------------------------------------------------------------------------
# Rotary position embedding. Pairs are adjacent channels (2i, 2i+1), i.e. the "complex" layout of LLaMA, which is
# what the released weights were trained with. Positions are float so that scaled/interleaved grids are exact.
# ---------------------------------------------------------------------------------------------------------------

def rope_tables(positions: torch.Tensor, head_dim: int, theta: float = 10000.0, freq_scaling: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (S, head_dim) for the given positions, each frequency repeated for its channel pair."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device)[: head_dim // 2].float() / head_dim))
    freqs = freqs * freq_scaling
    angles = torch.outer(positions.float(), freqs)  # (S, head_dim/2)
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)  # (S, head_dim) ×2


def rope_for_length(n: int, head_dim: int, theta: float = 10000.0, device=None, freq_scaling: float = 1.0):
    return rope_tables(torch.arange(n, dtype=torch.float32, device=device), head_dim, theta, freq_scaling)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads_first: bool = False) -> torch.Tensor:
    """Rotate channel pairs of ``x`` — (B, S, H, D), or (B, H, S, D) with ``heads_first`` — in fp32."""
    if heads_first:
        cos, sin = cos[None, None], sin[None, None]  # (1, 1, S, D)
    else:
        cos, sin = cos[None, :, None], sin[None, :, None]  # (1, S, 1, D)
    xf = x.float()
    pairs = xf.reshape(*xf.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (−x_odd, x_even)
    return (xf * cos + rotated * sin).type_as(x)


def nearest_exact_index(n_in: int, n_out: int, device=None) -> torch.Tensor:
    """Source index of each output position of ``F.interpolate(mode="nearest-exact")`` from n_in to n_out."""
    src = torch.arange(n_in, dtype=torch.float32, device=device).view(1, 1, n_in)
    return F.interpolate(src, size=n_out, mode="nearest-exact").view(n_out).long()


def resample_tokens(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """Nearest-exact resampling of channels-last tokens (B, N, C) → (B, n_out, C)."""
    if x.shape[1] == n_out:
        return x
    return F.interpolate(x.transpose(1, 2), size=n_out, mode="nearest-exact").transpose(1, 2)
