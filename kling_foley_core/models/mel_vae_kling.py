"""Kling-Foley's own Mel-VAE (paper §4.5, Fig. 3): mel encoder, VAE bottleneck, mel decoder, and a discriminator.

The paper describes a Make-An-Audio-2-style encoder of 32 stacked 1-D convolutions over the mel spectrogram that
halves the frame rate (44.1 kHz audio → 86.13 mel frames/s → 43.07 latents/s, i.e. 1024× the sample rate), a
Gaussian posterior with the reparameterisation trick, a decoder that mirrors the encoder with transposed
convolutions, and a discriminator over spectrograms used with a hinge loss and an R1 penalty. The paper gives no
widths; the defaults here (512 channels, kernel 5, 15 residual blocks → 1 + 2·15 + 1 = 32 convolutions per side)
are this library's choice, and every number is a config field.

Latent contract: the same as MMAudio's VAE so both can sit under the same MM-DiT: ``(B, latent_dim, ceil(T/2))``
for a log-mel ``(B, n_mels, T)``; 40-d for the 44k front-end, 20-d for 16k. An odd T is padded by one replicated
frame before encoding (``latent_seq_len = ceil(duration·sr/hop/2)`` in DESIGN.md); decoding returns 2·T' frames.

Training (the losses, the margin KL and the 4-stage stepping schedule of Algorithm 2) lives in
``kling_foley_core.training.mel_vae_losses`` and ``kling_foley_core.training.mel_vae_schedule``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from kling_foley_core.models.mel_vae_mmaudio import DiagonalGaussian

log = logging.getLogger(__name__)

__all__ = ["KlingMelVAE", "KlingMelVAEOutput", "MelDiscriminator", "DiscriminatorOutput", "kling_mel_vae_config"]

_MODES = {"44k": dict(n_mels=128, latent_dim=40), "16k": dict(n_mels=80, latent_dim=20)}


def kling_mel_vae_config(mode: str = "44k", size: str = "base") -> dict:
    """Constructor arguments for a mel mode ("44k"/"16k") at a size ("base" = paper-scale, "tiny" = for tests)."""
    if mode not in _MODES:
        raise ValueError(f"kling_mel_vae_config: mode={mode!r} is unknown; use '44k' or '16k'")
    sizes = {"base": dict(hidden_dim=512, num_blocks=15, kernel_size=5, norm_groups=32),
             "tiny": dict(hidden_dim=32, num_blocks=2, kernel_size=3, norm_groups=8)}
    if size not in sizes:
        raise ValueError(f"kling_mel_vae_config: size={size!r} is unknown; use 'base' or 'tiny'")
    return {**_MODES[mode], **sizes[size]}


def _groups(channels: int, groups: int, where: str) -> int:
    if channels % groups:
        raise ValueError(f"{where}: hidden_dim={channels} is not divisible by norm_groups={groups}; pick a divisor")
    return groups


class ResBlock1d(nn.Module):
    """GroupNorm → SiLU → conv → GroupNorm → SiLU → dropout → conv, plus the identity path.

    ``resample="down"``: the first conv has stride 2 and the skip is a 2-frame average;
    ``resample="up"``: the first conv is a stride-2 transposed conv (k4) and the skip repeats each frame.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int, resample: str = "none", dropout: float = 0.0):
        super().__init__()
        if resample not in ("none", "down", "up"):
            raise ValueError(f"ResBlock1d: resample={resample!r}; use 'none', 'down' or 'up'")
        self.resample = resample
        pad = kernel_size // 2
        self.norm1 = nn.GroupNorm(groups, channels)
        if resample == "down":
            self.conv1 = nn.Conv1d(channels, channels, kernel_size, stride=2, padding=pad)
        elif resample == "up":
            # k4 / s2 / p1 gives exactly 2T outputs and, unlike k3, covers every output with two taps.
            self.conv1 = nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=pad)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C, T·r)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, C, T·r)
        if self.resample == "down":
            x = F.avg_pool1d(x, 2)  # (B, C, T/2)
        elif self.resample == "up":
            x = x.repeat_interleave(2, dim=-1)  # (B, C, 2T)
        return x + h


def _resample_positions(num_blocks: int, factor_log2: int) -> set[int]:
    # Spread the resampling blocks evenly (for ×2: the middle block), so both halves see both rates.
    if factor_log2 > num_blocks:
        raise ValueError(f"KlingMelVAE: time_downsample 2**{factor_log2} needs at least {factor_log2} blocks, "
                         f"got num_blocks={num_blocks}")
    return {(j + 1) * num_blocks // (factor_log2 + 1) for j in range(factor_log2)}


class _ConvStack(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int, num_blocks: int, kernel_size: int, groups: int,
                 resample: str, positions: set[int], dropout: float):
        super().__init__()
        self.conv_in = nn.Conv1d(in_dim, hidden, kernel_size, padding=kernel_size // 2)
        self.blocks = nn.ModuleList(
            ResBlock1d(hidden, kernel_size, groups, resample if i in positions else "none", dropout)
            for i in range(num_blocks))
        self.norm_out = nn.GroupNorm(groups, hidden)
        self.conv_out = nn.Conv1d(hidden, out_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, hidden, T)
        for block in self.blocks:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out, T')


@dataclass
class KlingMelVAEOutput:
    reconstruction: torch.Tensor  # (B, n_mels, T) log-mel (un-normalised)
    posterior: DiagonalGaussian  # over (B, latent_dim, T')
    latents: torch.Tensor  # (B, latent_dim, T') the z that was decoded


class KlingMelVAE(ModelMixin, ConfigMixin):
    """Mel encoder + Gaussian bottleneck + mel decoder. ``encode(mel) -> DiagonalGaussian``, ``decode(z) -> mel``.

    Mel bins are standardised with ``data_mean``/``data_std`` buffers (identity until a trainer calls
    :meth:`set_data_statistics` with dataset statistics; they are saved with the weights).
    """

    @register_to_config
    def __init__(self, n_mels: int = 128, latent_dim: int = 40, hidden_dim: int = 512, num_blocks: int = 15,
                 kernel_size: int = 5, norm_groups: int = 32, time_downsample: int = 2, dropout: float = 0.0,
                 decoder_hidden_dim: int | None = None, decoder_num_blocks: int | None = None):
        super().__init__()
        if time_downsample < 1 or time_downsample & (time_downsample - 1):
            raise ValueError(f"KlingMelVAE: time_downsample={time_downsample} must be a power of two (2 in the paper)")
        if kernel_size % 2 == 0:
            raise ValueError(f"KlingMelVAE: kernel_size={kernel_size} must be odd ('same' padding)")
        groups = _groups(hidden_dim, norm_groups, "KlingMelVAE")
        positions = _resample_positions(num_blocks, time_downsample.bit_length() - 1)
        self.encoder = _ConvStack(n_mels, 2 * latent_dim, hidden_dim, num_blocks, kernel_size, groups, "down",
                                  positions, dropout)
        # The decoder mirrors the encoder (its up blocks sit where the encoder's down blocks are, counted from the
        # end); decoder_hidden_dim / decoder_num_blocks (None = the encoder's) let a decoder be refitted at another
        # size on the same latent space.
        dec_dim = hidden_dim if decoder_hidden_dim is None else decoder_hidden_dim
        dec_blocks = num_blocks if decoder_num_blocks is None else decoder_num_blocks
        if dec_dim < 1 or dec_blocks < 1:
            raise ValueError(f"KlingMelVAE: decoder_hidden_dim={decoder_hidden_dim}, decoder_num_blocks="
                             f"{decoder_num_blocks}; give positive sizes or None (the encoder's)")
        dec_groups = _groups(dec_dim, norm_groups, "KlingMelVAE decoder")
        dec_positions = _resample_positions(dec_blocks, time_downsample.bit_length() - 1)
        self.decoder = _ConvStack(latent_dim, n_mels, dec_dim, dec_blocks, kernel_size, dec_groups, "up",
                                  {dec_blocks - 1 - p for p in dec_positions}, dropout)
        self.register_buffer("data_mean", torch.zeros(1, n_mels, 1))  # (1, M, 1)
        self.register_buffer("data_std", torch.ones(1, n_mels, 1))  # (1, M, 1)

    # -- data statistics ------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_data_statistics(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Per-bin mean/std of the training mels (e.g. from ``mel.mean((0, 2))``)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1)
        if mean.shape[1] != self.config.n_mels or std.shape[1] != self.config.n_mels:
            raise ValueError(f"set_data_statistics: need {self.config.n_mels} values each, got "
                             f"{mean.shape[1]} and {std.shape[1]}")
        if (std <= 0).any():
            raise ValueError("set_data_statistics: std must be positive in every bin")
        self.data_mean.copy_(mean)
        self.data_std.copy_(std)

    # -- encode / decode ------------------------------------------------------------------------------------
    @property
    def time_downsample(self) -> int:
        return self.config.time_downsample

    @property
    def mel_mode(self) -> str | None:
        """The mel front-end preset this VAE reads ("16k"/"44k"), or None for a non-standard size."""
        return {(80, 20): "16k", (128, 40): "44k"}.get((self.config.n_mels, self.config.latent_dim))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_dim

    def latent_length(self, mel_frames: int) -> int:
        return -(-mel_frames // self.time_downsample)  # ceil

    def encode(self, mel: torch.Tensor) -> DiagonalGaussian:
        """Log-mel ``(B, n_mels, T)`` → posterior over ``(B, latent_dim, ceil(T / time_downsample))``."""
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"KlingMelVAE.encode: expected mel of shape (B, {self.config.n_mels}, T), "
                             f"got {tuple(mel.shape)}")
        r = self.time_downsample
        pad = (-mel.shape[-1]) % r
        x = (mel - self.data_mean) / self.data_std  # (B, M, T)
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")  # (B, M, T + pad)
        return DiagonalGaussian.from_moments(self.encoder(x.to(self.dtype)))  # (B, 2E, T') → mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, latent_dim, T')`` → log-mel ``(B, n_mels, T' · time_downsample)``."""
        if z.ndim != 3 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"KlingMelVAE.decode: expected latents of shape (B, {self.config.latent_dim}, T'), "
                             f"got {tuple(z.shape)}")
        return self.decoder(z.to(self.dtype)) * self.data_std + self.data_mean  # (B, M, T)

    def forward(self, mel: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> KlingMelVAEOutput:
        """Training pass: encode, reparameterised sample (or the mean), decode; cropped back to T frames."""
        posterior = self.encode(mel)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        rec = self.decode(z)[..., : mel.shape[-1]]  # (B, M, T)
        return KlingMelVAEOutput(reconstruction=rec, posterior=posterior, latents=z)

    # -- parameter groups (Algorithm 2, stage 4 freezes the encoder side) -------------------------------------
    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.decoder.parameters()

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the mel encoder and the VAE bottleneck (the moments projection is its last conv)."""
        for p in self.encoder.parameters():
            p.requires_grad_(trainable)

    def num_conv_layers(self) -> tuple[int, int]:
        """(encoder, decoder) convolution counts; the paper's encoder has 32."""
        def count(m):
            return sum(isinstance(x, (nn.Conv1d, nn.ConvTranspose1d)) for x in m.modules())
        return count(self.encoder), count(self.decoder)


# -----------------------------------------------------------------------------------------------------------------


@dataclass
class DiscriminatorOutput:
    logits: list[torch.Tensor]  # one (B, 1, M', T') patch-logit map per scale
    features: list[list[torch.Tensor]]  # hidden activations per scale (for feature-matching losses)


class _PatchDiscriminator2d(nn.Module):
    """2-D conv stack over the (mel, time) plane; strided layers halve both axes; patch logits out."""

    def __init__(self, channels: int, num_layers: int, max_channels: int):
        super().__init__()
        layers = [nn.Conv2d(1, channels, 3, padding=1)]
        ch = channels
        for _ in range(num_layers):
            nxt = min(ch * 2, max_channels)
            layers.append(nn.Conv2d(ch, nxt, 4, stride=2, padding=1))
            ch = nxt
        self.layers = nn.ModuleList(layers)
        self.conv_out = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        h = x  # (B, 1, M, T)
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
            feats.append(h)
        return self.conv_out(h), feats  # (B, 1, M / 2^L, T / 2^L)


class MelDiscriminator(ModelMixin, ConfigMixin):
    """Multi-scale patch discriminator on log-mel spectrograms: the same network design at time resolutions
    1, 1/2, 1/4 (average pooling), so artefacts are judged both frame-by-frame and over longer spans."""

    @register_to_config
    def __init__(self, n_mels: int = 128, channels: int = 32, num_layers: int = 3, max_channels: int = 256,
                 scales: Sequence[int] = (1, 2, 4)):
        super().__init__()
        if any(s < 1 for s in scales):
            raise ValueError(f"MelDiscriminator: scales={list(scales)} must be positive integers")
        if n_mels < 2**num_layers:
            raise ValueError(f"MelDiscriminator: n_mels={n_mels} is too small for num_layers={num_layers} "
                             f"(each layer halves the mel axis; need n_mels >= {2**num_layers})")
        self.scales = tuple(int(s) for s in scales)
        self.nets = nn.ModuleList(_PatchDiscriminator2d(channels, num_layers, max_channels) for _ in self.scales)

    def forward(self, mel: torch.Tensor) -> DiscriminatorOutput:
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"MelDiscriminator: expected mel (B, {self.config.n_mels}, T), got {tuple(mel.shape)}")
        min_frames = max(self.scales) * 2**self.config.num_layers
        if mel.shape[-1] < min_frames:
            raise ValueError(f"MelDiscriminator: need at least {min_frames} frames, got {mel.shape[-1]} "
                             f"(use longer crops or fewer layers/scales)")
        x = mel.unsqueeze(1).to(self.dtype)  # (B, 1, M, T)
        logits, feats = [], []
        for s, net in zip(self.scales, self.nets):
            xs = F.avg_pool2d(x, (1, s)) if s > 1 else x  # (B, 1, M, T/s)
            out, f = net(xs)
            logits.append(out)
            feats.append(f)
        return DiscriminatorOutput(logits=logits, features=feats)
