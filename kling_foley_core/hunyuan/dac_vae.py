"""Continuous DAC-VAE of HunyuanVideo-Foley: 48 kHz mono waveform ↔ 128-d Gaussian latents at 50 Hz.

The architecture is the Descript Audio Codec's convolutional encoder/decoder (Snake activations, residual units
with dilations 1/3/9, strided (transposed) convolutions whose kernel is twice the stride) with the vector
quantiser replaced by a VAE bottleneck: ``quant_conv`` (1×1) gives the posterior's mean and log-variance, and
``post_quant_conv`` (1×1) maps a latent back before the decoder.

Released checkpoints (``vae_128d_48k.pth``) store weight-normalised convolutions as ``weight_g``/``weight_v``;
:func:`kling_foley_core.compat.checkpoints.fold_weight_norm` turns each pair into one plain ``weight`` at load, so inference runs plain convolutions.
The configuration is read off the tensor shapes (:func:`dac_config_from_state_dict`), so no metadata is needed.

Shapes: audio (B, 1, T) at ``sample_rate``; latents (B, latent_dim, T / hop_length), channels first.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..models.mel_vae_mmaudio import DiagonalGaussian  # one posterior type for every codec
from ..offload import onloads


class Snake(nn.Module):
    """Snake activation ``x + sin²(αx)/α`` with a learned per-channel α (periodic inductive bias for audio)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim), nn.Conv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake(dim), nn.Conv1d(dim, dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2  # zero with "same" padding; kept for odd configurations
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class EncoderBlock(nn.Module):
    """Three residual units at dim/2, then a strided conv that doubles the channels and divides time by stride."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            ResidualUnit(half, 1), ResidualUnit(half, 3), ResidualUnit(half, 9), Snake(half),
            nn.Conv1d(half, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, d_model: int, strides: list[int], d_latent: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, d_model, kernel_size=7, padding=3)]
        for stride in strides:
            d_model *= 2
            layers.append(EncoderBlock(d_model, stride))
        layers += [Snake(d_model), nn.Conv1d(d_model, d_latent, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    """Transposed conv (×stride in time, halves the channels), then three residual units."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_dim),
            nn.ConvTranspose1d(in_dim, out_dim, kernel_size=2 * stride, stride=stride,
                               padding=math.ceil(stride / 2), output_padding=stride % 2),
            ResidualUnit(out_dim, 1), ResidualUnit(out_dim, 3), ResidualUnit(out_dim, 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, d_latent: int, channels: int, rates: list[int], d_out: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(d_latent, channels, kernel_size=7, padding=3)]
        out_dim = channels
        for i, stride in enumerate(rates):
            in_dim, out_dim = channels // 2 ** i, channels // 2 ** (i + 1)
            layers.append(DecoderBlock(in_dim, out_dim, stride))
        layers += [Snake(out_dim), nn.Conv1d(out_dim, d_out, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


class DacVae(ModelMixin, ConfigMixin):
    """Continuous DAC-VAE. Defaults are the 48 kHz / 50 Hz layout; loaders always take sizes from the file."""

    @register_to_config
    def __init__(self, encoder_dim: int = 128, encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8), latent_dim: int = 128,
                 decoder_dim: int = 2048, decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2), sample_rate: int = 48000):
        super().__init__()
        self.encoder = Encoder(encoder_dim, list(encoder_rates), latent_dim)
        self.quant_conv = nn.Conv1d(latent_dim, 2 * latent_dim, 1)
        self.post_quant_conv = nn.Conv1d(latent_dim, latent_dim, 1)
        self.decoder = Decoder(latent_dim, decoder_dim, list(decoder_rates))

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.config.encoder_rates))

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (50 for 48 kHz with hop 960)."""
        return self.config.sample_rate / self.hop_length

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @onloads
    def encode(self, audio: torch.Tensor) -> DiagonalGaussian:
        """audio (B, 1, T) → posterior over (B, latent_dim, ceil(T / hop)); T is right-padded to a hop multiple."""
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"DAC-VAE encode expects mono audio shaped (B, 1, T), got {tuple(audio.shape)}")
        pad = (-audio.shape[-1]) % self.hop_length
        if pad:
            audio = nn.functional.pad(audio, (0, pad))
        dtype = self.quant_conv.weight.dtype
        moments = self.quant_conv(self.encoder(audio.to(dtype)))  # (B, 2C, N)
        return DiagonalGaussian.from_moments(moments)

    @onloads
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, latent_dim, N) → audio (B, 1, N·hop) in [−1, 1]."""
        if z.ndim != 3 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"DAC-VAE decode expects latents (B, {self.config.latent_dim}, N), got {tuple(z.shape)}")
        dtype = self.post_quant_conv.weight.dtype
        return self.decoder(self.post_quant_conv(z.to(dtype)))


# ------------------------------------------------------------------------------------------------ checkpoints
def dac_config_from_state_dict(sd: dict[str, torch.Tensor], sample_rate: int = 48000) -> dict:
    """Read encoder/decoder widths, strides and the latent size off a (folded) DAC-VAE state dict."""
    def w(key):
        if key not in sd:
            raise KeyError(key)
        return sd[key]

    encoder_dim = w("encoder.block.0.weight").shape[0]
    enc_rates, i = [], 1
    while f"encoder.block.{i}.block.4.weight" in sd:
        enc_rates.append(w(f"encoder.block.{i}.block.4.weight").shape[-1] // 2)
        i += 1
    latent_dim = w("quant_conv.weight").shape[1]
    decoder_dim = w("decoder.model.0.weight").shape[0]
    dec_rates, i = [], 1
    while f"decoder.model.{i}.block.1.weight" in sd:
        dec_rates.append(w(f"decoder.model.{i}.block.1.weight").shape[-1] // 2)
        i += 1
    return dict(encoder_dim=int(encoder_dim), encoder_rates=tuple(enc_rates), latent_dim=int(latent_dim),
                decoder_dim=int(decoder_dim), decoder_rates=tuple(dec_rates), sample_rate=int(sample_rate))
