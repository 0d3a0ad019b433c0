"""MMAudio's mel VAE (the latent space MMAudio's and Kling-Foley's MM-DiTs generate in).

A 1-D convolutional VAE over a log-mel spectrogram ``(B, n_mels, T)`` built from EDM2 magnitude-preserving parts
(Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models"):

* every convolution is a bias-free ``MPConv1d`` whose weight rows have unit norm at inference time (the training
  code keeps them at norm sqrt(fan_in) by *forced weight normalisation*; checkpoints store those raw weights, and
  the reference inference path normalises them once: see ``remove_weight_norm`` and
  ``kling_foley_core.compat.convert_mmaudio_vae``),
* residual blocks: pixel norm → mp-SiLU → conv → mp-SiLU → conv, merged by a magnitude-preserving lerp (t=0.3),
* single-head attention whose q, k, v are pixel-normalised per head,
* activations clamped to ±256 after every block.

The encoder halves the time axis once (``down_layers=[0]``): 44.1 kHz mel at 86.13 frames/s → 40-d latents at
43.07 Hz; 16 kHz mel at 62.5 frames/s → 20-d latents at 31.25 Hz. Mel bins are standardised with the training
set's per-bin mean/std (built-in tables for 80 and 128 bins) before encoding and restored after decoding.

The model holds weights in inference form (weight norm removed); ``save_pretrained``/``from_pretrained`` store that
form. Real checkpoints (``v1-16.pth``, ``v1-44.pth`` or safetensors re-exports of them) go through
``MMAudioMelVAE.from_reference_checkpoint`` / ``load_mmaudio_mel_vae``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

log = logging.getLogger(__name__)

__all__ = ["DiagonalGaussian", "MMAudioMelVAE", "MPConv1d", "load_mmaudio_mel_vae", "mmaudio_vae_config",
           "MEL_STATS"]

# Per-bin statistics of the training mels (from the reference implementation's tables, rounded to 4 digits there).
# fmt: off
_MEAN_80 = [
    -1.6058, -1.3676, -1.2520, -1.2453, -1.2078, -1.2224, -1.2419, -1.2439, -1.2922, -1.2927, -1.3170, -1.3543,
    -1.3401, -1.3836, -1.3907, -1.3912, -1.4313, -1.4152, -1.4527, -1.4728, -1.4568, -1.5101, -1.5051, -1.5172,
    -1.5623, -1.5373, -1.5746, -1.5687, -1.6032, -1.6131, -1.6081, -1.6331, -1.6489, -1.6489, -1.6700, -1.6738,
    -1.6953, -1.6969, -1.7048, -1.7280, -1.7361, -1.7495, -1.7658, -1.7814, -1.7889, -1.8064, -1.8221, -1.8377,
    -1.8417, -1.8643, -1.8857, -1.8929, -1.9173, -1.9379, -1.9531, -1.9673, -1.9824, -2.0042, -2.0215, -2.0436,
    -2.0766, -2.1064, -2.1418, -2.1855, -2.2319, -2.2767, -2.3161, -2.3572, -2.3954, -2.4282, -2.4659, -2.5072,
    -2.5552, -2.6074, -2.6584, -2.7107, -2.7634, -2.8266, -2.8981, -2.9673]
_STD_80 = [
    1.0291, 1.0411, 1.0043, 0.9820, 0.9677, 0.9543, 0.9450, 0.9392, 0.9343, 0.9297, 0.9276, 0.9263, 0.9242, 0.9254,
    0.9232, 0.9281, 0.9263, 0.9315, 0.9274, 0.9247, 0.9277, 0.9199, 0.9188, 0.9194, 0.9160, 0.9161, 0.9146, 0.9161,
    0.9100, 0.9095, 0.9145, 0.9076, 0.9066, 0.9095, 0.9032, 0.9043, 0.9038, 0.9011, 0.9019, 0.9010, 0.8984, 0.8983,
    0.8986, 0.8961, 0.8962, 0.8978, 0.8962, 0.8973, 0.8993, 0.8976, 0.8995, 0.9016, 0.8982, 0.8972, 0.8974, 0.8949,
    0.8940, 0.8947, 0.8936, 0.8939, 0.8951, 0.8956, 0.9017, 0.9167, 0.9436, 0.9690, 1.0003, 1.0225, 1.0381, 1.0491,
    1.0545, 1.0604, 1.0761, 1.0929, 1.1089, 1.1196, 1.1176, 1.1156, 1.1117, 1.1070]
_MEAN_128 = [
    -3.3462, -2.6723, -2.4893, -2.3143, -2.2664, -2.3317, -2.1802, -2.4006, -2.2357, -2.4597, -2.3717, -2.4690,
    -2.5142, -2.4919, -2.6610, -2.5047, -2.7483, -2.5926, -2.7462, -2.7033, -2.7386, -2.8112, -2.7502, -2.9594,
    -2.7473, -3.0035, -2.8891, -2.9922, -2.9856, -3.0157, -3.1191, -2.9893, -3.1718, -3.0745, -3.1879, -3.2310,
    -3.1424, -3.2296, -3.2791, -3.2782, -3.2756, -3.3134, -3.3509, -3.3750, -3.3951, -3.3698, -3.4505, -3.4509,
    -3.5089, -3.4647, -3.5536, -3.5788, -3.5867, -3.6036, -3.6400, -3.6747, -3.7072, -3.7279, -3.7283, -3.7795,
    -3.8259, -3.8447, -3.8663, -3.9182, -3.9605, -3.9861, -4.0105, -4.0373, -4.0762, -4.1121, -4.1488, -4.1874,
    -4.2461, -4.3170, -4.3639, -4.4452, -4.5282, -4.6297, -4.7019, -4.7960, -4.8700, -4.9507, -5.0303, -5.0866,
    -5.1634, -5.2342, -5.3242, -5.4053, -5.4927, -5.5712, -5.6464, -5.7052, -5.7619, -5.8410, -5.9188, -6.0103,
    -6.0955, -6.1673, -6.2362, -6.3120, -6.3926, -6.4797, -6.5565, -6.6511, -6.8130, -6.9961, -7.1275, -7.2457,
    -7.3576, -7.4663, -7.6136, -7.7469, -7.8815, -8.0132, -8.1515, -8.3071, -8.4722, -8.7418, -9.3975, -9.6628,
    -9.7671, -9.8863, -9.9992, -10.0860, -10.1709, -10.5418, -11.2795, -11.3861]
_STD_128 = [
    2.3804, 2.4368, 2.3772, 2.3145, 2.2803, 2.2510, 2.2316, 2.2083, 2.1996, 2.1835, 2.1769, 2.1659, 2.1631, 2.1618,
    2.1540, 2.1606, 2.1571, 2.1567, 2.1612, 2.1579, 2.1679, 2.1683, 2.1634, 2.1557, 2.1668, 2.1518, 2.1415, 2.1449,
    2.1406, 2.1350, 2.1313, 2.1415, 2.1281, 2.1352, 2.1219, 2.1182, 2.1327, 2.1195, 2.1137, 2.1080, 2.1179, 2.1036,
    2.1087, 2.1036, 2.1015, 2.1068, 2.0975, 2.0991, 2.0902, 2.1015, 2.0857, 2.0920, 2.0893, 2.0897, 2.0910, 2.0881,
    2.0925, 2.0873, 2.0960, 2.0900, 2.0957, 2.0958, 2.0978, 2.0936, 2.0886, 2.0905, 2.0845, 2.0855, 2.0796, 2.0840,
    2.0813, 2.0817, 2.0838, 2.0840, 2.0917, 2.1061, 2.1431, 2.1976, 2.2482, 2.3055, 2.3700, 2.4088, 2.4372, 2.4609,
    2.4731, 2.4847, 2.5072, 2.5451, 2.5772, 2.6147, 2.6529, 2.6596, 2.6645, 2.6726, 2.6803, 2.6812, 2.6899, 2.6916,
    2.6931, 2.6998, 2.7062, 2.7262, 2.7222, 2.7158, 2.7041, 2.7485, 2.7491, 2.7451, 2.7485, 2.7233, 2.7297, 2.7233,
    2.7145, 2.6958, 2.6788, 2.6439, 2.6007, 2.4786, 2.2469, 2.1877, 2.1392, 2.0717, 2.0107, 1.9676, 1.9140, 1.7102,
    0.9101, 0.7164]
# fmt: on
MEL_STATS: dict[int, tuple[list[float], list[float]]] = {80: (_MEAN_80, _STD_80), 128: (_MEAN_128, _STD_128)}

# Real-size configurations of the released checkpoints.
_REAL_CONFIGS = {
    "16k": dict(data_dim=80, embed_dim=20, hidden_dim=384),
    "44k": dict(data_dim=128, embed_dim=40, hidden_dim=512),
}


def mmaudio_vae_config(mode: str) -> dict:
    """Constructor arguments of the released VAE for ``mode`` ("16k" → v1-16.pth, "44k" → v1-44.pth)."""
    if mode not in _REAL_CONFIGS:
        raise ValueError(f"mmaudio_vae_config: mode={mode!r} is unknown; use '16k' or '44k'")
    return dict(_REAL_CONFIGS[mode], ch_mult=(1, 2, 4), num_res_blocks=2, attn_layers=(3,), down_layers=(0,))


# ---------------------------------------------------------------------------------------------------------------
# Magnitude-preserving primitives


def mp_normalize(x: torch.Tensor, dim: int | Sequence[int] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Scale ``x`` so its RMS over ``dim`` is 1 (EDM2 eq. 66); ``dim=None`` means all but the first axis.

    The norm is accumulated in float32 even for half inputs, as in the reference.
    """
    if dim is None:
        dim = list(range(1, x.ndim))
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    # ||x|| / sqrt(n) is the RMS over the reduced elements; eps keeps all-zero rows finite.
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    # 0.596 = std of silu(N(0,1)): keeps unit-variance activations at unit variance.
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    # Weighted sum (1-t)·a + t·b rescaled so two independent unit-variance inputs give a unit-variance output.
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1d(nn.Module):
    """Bias-free 1-D convolution (``kernel_size=1`` is a per-frame linear map) with 'same' padding.

    ``weight`` is used as stored. ``remove_weight_norm()`` turns raw trained weights into the inference form
    (each output row scaled to unit norm) and is what the loader calls; calling it twice is an error because the
    operation is not exactly idempotent (the eps term shrinks the weights by ~eps·sqrt(fan_in) each time).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        fan_in = in_channels * kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, gain: torch.Tensor | float = 1.0) -> torch.Tensor:
        w = self.weight * gain  # (O, I, K)
        return F.conv1d(x, w, padding=self.kernel_size // 2)  # (B, O, T)

    @torch.no_grad()
    def remove_weight_norm(self) -> None:
        self.weight.copy_(normalized_mp_weight(self.weight))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"


def normalized_mp_weight(weight: torch.Tensor) -> torch.Tensor:
    """Raw MPConv weight ``(O, I, K)`` → inference weight: unit-RMS rows divided by sqrt(fan_in).

    Computed in float32 and cast back to the input dtype (the reference order of operations).
    """
    w = weight.to(torch.float32)
    w = mp_normalize(w)  # each output row now has RMS 1 (norm sqrt(I·K))
    w = w / math.sqrt(w[0].numel())  # … and norm 1, so the conv is magnitude-preserving
    return w.to(weight.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Blocks


class MPResBlock1d(nn.Module):
    """Pixel norm → mp-SiLU → conv → mp-SiLU → conv, plus a skip (1×1-projected when widths differ); mp_sum t=0.3."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv1 = MPConv1d(in_dim, out_dim, kernel_size)
        self.conv2 = MPConv1d(out_dim, out_dim, kernel_size)
        if in_dim != out_dim:
            self.nin_shortcut = MPConv1d(in_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = mp_normalize(x, dim=1)  # (B, C, T) unit RMS over channels per frame
        h = self.conv1(mp_silu(x))  # (B, O, T)
        h = self.conv2(mp_silu(h))  # (B, O, T)
        if self.in_dim != self.out_dim:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, t=0.3)


class MPAttention1d(nn.Module):
    """Self-attention over time with cosine-normalised q, k, v (EDM2 style); residual mp_sum t=0.3.

    The qkv projection's channels are laid out as (head, channel, {q,k,v}) with q/k/v innermost: this layout is
    what real checkpoints hold.
    """

    def __init__(self, dim: int, num_heads: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MPAttention1d: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = MPConv1d(dim, dim * 3, 1)
        self.proj_out = MPConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        y = self.qkv(x).reshape(b, self.num_heads, -1, 3, t)  # (B, H, Ch, 3, T)
        q, k, v = mp_normalize(y, dim=2).unbind(3)  # each (B, H, Ch, T)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))  # (B,H,T,Ch)
        h = h.transpose(-1, -2).reshape(b, -1, t)  # (B, C, T)
        return mp_sum(x, self.proj_out(h), t=0.3)


class Downsample1d(nn.Module):
    """1×1 conv → average-pool by 2 → 1×1 conv."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = MPConv1d(dim, dim, 1)
        self.conv2 = MPConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))  # (B, C, T//2)


class Upsample1d(nn.Module):
    """Nearest-exact ×2 in time → k3 conv."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = MPConv1d(dim, dim, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))  # (B, C, 2T)


class _Level(nn.Module):
    """One resolution level: residual blocks, optional attention after each block, optional resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)


class _Middle(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.block_1 = MPResBlock1d(dim, dim, kernel_size)
        self.attn_1 = MPAttention1d(dim)
        self.block_2 = MPResBlock1d(dim, dim, kernel_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class MelEncoder1d(nn.Module):
    def __init__(self, *, in_dim: int, embed_dim: int, dim: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_layers: Sequence[int], down_layers: Sequence[int], kernel_size: int, clip_act: float):
        super().__init__()
        self.clip_act = clip_act
        self.down_layers = set(down_layers)
        self.conv_in = MPConv1d(in_dim, dim, kernel_size)
        self.down = nn.ModuleList()
        width = dim
        for level, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(MPResBlock1d(width, dim * mult, kernel_size))
                width = dim * mult
                if level in attn_layers:
                    attns.append(MPAttention1d(width))
            stage = _Level(blocks, attns)
            if level in self.down_layers:
                stage.downsample = Downsample1d(width)
            self.down.append(stage)
        self.mid = _Middle(width, kernel_size)
        self.conv_out = MPConv1d(width, 2 * embed_dim, kernel_size)
        # Scalar output gain (initialised at 0 → gain 1) lets training set the latent scale freely.
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, dim, T)
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
                h = h.clamp(-self.clip_act, self.clip_act)
            if level in self.down_layers:
                h = stage.downsample(h)  # (B, C, T//2)
        h = self.mid(h).clamp(-self.clip_act, self.clip_act)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)  # (B, 2·E, T')


class MelDecoder1d(nn.Module):
    def __init__(self, *, out_dim: int, embed_dim: int, dim: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_layers: Sequence[int], down_layers: Sequence[int], kernel_size: int, clip_act: float):
        super().__init__()
        self.clip_act = clip_act
        # The encoder downsamples at the *end* of level i; the mirror upsamples at the end of level i+1
        # (levels run from coarse to fine here), i.e. just before level i.
        self.up_layers = {i + 1 for i in down_layers}
        width = dim * ch_mult[-1]
        self.conv_in = MPConv1d(embed_dim, width, kernel_size)
        # The reference builds the decoder's middle blocks with a fixed k3 kernel regardless of kernel_size.
        self.mid = _Middle(width, 3)
        levels: list[_Level] = []
        for level in reversed(range(len(ch_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(MPResBlock1d(width, dim * ch_mult[level], 3))
                width = dim * ch_mult[level]
                if level in attn_layers:
                    attns.append(MPAttention1d(width))
            stage = _Level(blocks, attns)
            if level in self.up_layers:
                stage.upsample = Upsample1d(width)
            levels.insert(0, stage)  # stored fine → coarse so indices match the encoder's levels
        self.up = nn.ModuleList(levels)
        self.conv_out = MPConv1d(width, out_dim, kernel_size)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z)).clamp(-self.clip_act, self.clip_act)  # (B, C, T')
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
                h = h.clamp(-self.clip_act, self.clip_act)
            if level in self.up_layers:
                h = stage.upsample(h)  # (B, C, 2T')
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)  # (B, n_mels, T)


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DiagonalGaussian:
    """Posterior N(mean, std²) per latent element; ``logvar`` is clamped to [-30, 20] as in the reference."""

    mean: torch.Tensor  # (B, E, T')
    logvar: torch.Tensor  # (B, E, T')

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean=mean, logvar=logvar.clamp(-30.0, 20.0))

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw mean + std·ε; pass a ``torch.Generator`` for reproducibility (no global RNG use
        when one is given)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """Element-wise KL(N(mean, var) || N(0, 1)) = ½(mean² + var − 1 − logvar)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar)


class MMAudioMelVAE(ModelMixin, ConfigMixin):
    """MMAudio's mel VAE in inference form. ``encode(mel) -> DiagonalGaussian``, ``decode(z) -> mel``.

    ``mel`` is the log-mel of the matching front-end (``kling_foley_core.audio.MelSpectrogram("16k"|"44k")``),
    shape ``(B, data_dim, T)``; ``T`` is cut to a multiple of 2**len(down_layers) by the average pool, so pass an
    even number of frames to get exactly T/2 latents back.
    """

    @register_to_config
    def __init__(self, data_dim: int = 128, embed_dim: int = 40, hidden_dim: int = 512,
                 ch_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2, attn_layers: Sequence[int] = (3,),
                 down_layers: Sequence[int] = (0,), kernel_size: int = 3, clip_act: float = 256.0):
        super().__init__()
        common = dict(embed_dim=embed_dim, dim=hidden_dim, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
                      attn_layers=tuple(attn_layers), down_layers=tuple(down_layers), kernel_size=kernel_size,
                      clip_act=clip_act)
        self.encoder = MelEncoder1d(in_dim=data_dim, **common)
        self.decoder = MelDecoder1d(out_dim=data_dim, **common)
        if data_dim in MEL_STATS:
            mean, std = MEL_STATS[data_dim]
        else:
            log.warning("MMAudioMelVAE: no built-in mel statistics for data_dim=%d; using mean 0 / std 1", data_dim)
            mean, std = [0.0] * data_dim, [1.0] * data_dim
        self.register_buffer("data_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1))  # (1, M, 1)
        self.register_buffer("data_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1))  # (1, M, 1)

    @property
    def time_downsample(self) -> int:
        return 2 ** len(self.config.down_layers)

    @property
    def mel_mode(self) -> str | None:
        """The mel front-end preset this VAE reads ("16k"/"44k"), or None for a non-standard size."""
        return {(80, 20): "16k", (128, 40): "44k"}.get((self.config.data_dim, self.config.embed_dim))

    @property
    def latent_channels(self) -> int:
        return self.config.embed_dim

    def latent_length(self, mel_frames: int) -> int:
        return mel_frames // self.time_downsample

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.data_mean) / self.data_std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.data_std + self.data_mean

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        if x.ndim != 3 or x.shape[1] != channels:
            raise ValueError(f"MMAudioMelVAE.{what}: expected shape (B, {channels}, T), got {tuple(x.shape)}")
        if what == "encode" and x.shape[-1] < self.time_downsample:
            raise ValueError(f"MMAudioMelVAE.encode: need at least {self.time_downsample} mel frames, "
                             f"got {x.shape[-1]}")

    def encode(self, mel: torch.Tensor, normalize: bool = True) -> DiagonalGaussian:
        """Log-mel ``(B, M, T)`` → posterior over latents ``(B, E, T // 2)``."""
        self._check(mel, self.config.data_dim, "encode")
        x = self.normalize(mel) if normalize else mel
        return DiagonalGaussian.from_moments(self.encoder(x.to(self.dtype)))  # (B, 2E, T') split in two

    def decode(self, z: torch.Tensor, unnormalize: bool = True) -> torch.Tensor:
        """Latents ``(B, E, T')`` → log-mel ``(B, M, T' · 2)``."""
        self._check(z, self.config.embed_dim, "decode")
        out = self.decoder(z.to(self.dtype))  # (B, M, T)
        return self.unnormalize(out) if unnormalize else out

    def forward(self, mel: torch.Tensor, sample_posterior: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Round trip: encode, take the mean (or a sample), decode."""
        post = self.encode(mel)
        return self.decode(post.sample(generator) if sample_posterior else post.mode())

    @torch.no_grad()
    def remove_weight_norm(self) -> "MMAudioMelVAE":
        """Convert raw (training-form) weights held by this module into inference form, once."""
        for m in self.modules():
            if isinstance(m, MPConv1d):
                m.remove_weight_norm()
        return self

    @classmethod
    def from_reference_checkpoint(cls, path: str | Path, *, dtype: torch.dtype = torch.float32,
                                  device: str | torch.device = "cpu", mode: str | None = None) -> "MMAudioMelVAE":
        """Load ``v1-16.pth`` / ``v1-44.pth`` (or a safetensors re-export with the same keys, any float dtype)."""
        return load_mmaudio_mel_vae(path, dtype=dtype, device=device, mode=mode)


def load_mmaudio_mel_vae(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                         mode: str | None = None, weight_norm: str = "remove") -> MMAudioMelVAE:
    """Read a reference-format VAE checkpoint, infer its configuration (16k vs 44k and the widths), remove the
    weight norm like the reference inference path, and return an eval-mode ``MMAudioMelVAE``.

    ``mode`` ("16k"/"44k"), when given, must agree with what the checkpoint holds. ``weight_norm="auto"``
    skips the removal when the weights are already in inference form (unit-norm rows).
    """
    from kling_foley_core.compat.checkpoints import load_state_dict_strict, read_state_dict
    from kling_foley_core.compat.convert_mmaudio_vae import convert_mmaudio_vae_state_dict, describe_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_mmaudio_mel_vae: no checkpoint at '{path}' (expected v1-16.pth, v1-44.pth "
                                f"or a .safetensors export of one)")
    raw = read_state_dict(path)
    converted = convert_mmaudio_vae_state_dict(raw, source=path.name, weight_norm=weight_norm)
    if mode is not None and converted.mode != mode:
        raise ValueError(f"load_mmaudio_mel_vae: '{path.name}' is a {converted.mode or 'non-standard'} VAE "
                         f"(data_dim={converted.config['data_dim']}), but mode={mode!r} was asked for")
    # Built straight on the meta device (no 300 M random draws for the 44k model); every parameter and buffer,
    # data statistics included, is then assigned from the converted checkpoint.
    with torch.device("meta"):
        model = MMAudioMelVAE(**converted.config)
    load_state_dict_strict(model, converted.state_dict, what=f"MMAudio mel VAE from '{path.name}'",
                           looks_like=describe_state_dict(raw))
    return model.to(device=device, dtype=dtype).eval()
