"""Known audio → VAE latents (the VAE Encode box): any rate, mono or stereo, for every VAE the library loads.

Mel-VAEs (Kling and MMAudio, 16 kHz and 44.1 kHz) read the log-mel of their front-end; the DAC-VAE of
HunyuanVideo-Foley reads the waveform at 48 kHz. The audio is downmixed to mono (the mean of the channels: the
models generate mono latents and Mono2Stereo pans them afterwards) and resampled band-limited to the VAE's rate.
The posterior mean is returned, so encoding is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .mel import MelSpectrogram, mel_preset
from .resample import fft_resample

__all__ = ["AudioInputError", "EncodedAudio", "encode_audio", "vae_audio_rate", "MIN_SECONDS"]

MIN_SECONDS = 16 / 25  # one Synchformer window: the shortest span the models condition on


class AudioInputError(ValueError):
    """Audio that cannot be encoded (named, with the value and the fix)."""


@dataclass
class EncodedAudio:
    latents: torch.Tensor  # (B, C, N) VAE-space latents (posterior mean)
    latent_rate: float  # latent frames per second
    seconds: float  # duration of the audio that was encoded


def _mel_mode(vae) -> str | None:
    n_mels = getattr(vae.config, "n_mels", None) or getattr(vae.config, "data_dim", None)
    return {80: "16k", 128: "44k"}.get(n_mels)


def vae_audio_rate(vae) -> tuple[int, float]:
    """(sample rate the VAE reads, its latent frames per second)."""
    if hasattr(vae, "hop_length") and hasattr(vae, "sample_rate"):  # DAC-VAE
        return int(vae.sample_rate), vae.sample_rate / vae.hop_length
    mode = _mel_mode(vae)
    if mode is None:
        raise AudioInputError("VAE Encode: this VAE reads no standard mel front-end (80 or 128 bands); use a 16 kHz "
                              "or 44.1 kHz Mel-VAE or the DAC-VAE")
    cfg = mel_preset(mode)
    return cfg.sampling_rate, cfg.sampling_rate / cfg.hop_length / 2


def encode_audio(vae, waveform: torch.Tensor, sample_rate: int, *, what: str = "audio") -> EncodedAudio:
    """``waveform`` (C, T) or (B, C, T) at ``sample_rate`` → :class:`EncodedAudio`. ``what`` names the input in
    errors (e.g. "VAE Encode: audio")."""
    wave = torch.as_tensor(waveform, dtype=torch.float32)
    if wave.ndim == 2:
        wave = wave[None]
    if wave.ndim != 3 or wave.shape[1] not in (1, 2) or wave.shape[-1] == 0:
        raise AudioInputError(f"{what} must be (batch, channels 1 or 2, samples), got shape {tuple(wave.shape)}")
    if not isinstance(sample_rate, int) or sample_rate < 1000:
        raise AudioInputError(f"{what}: sample_rate={sample_rate!r} must be an integer rate in Hz (e.g. 44100)")
    seconds = wave.shape[-1] / sample_rate
    if seconds < MIN_SECONDS:
        raise AudioInputError(f"{what} is {seconds:.2f} s long; give at least {MIN_SECONDS:.2f} s (one sync window)")
    if not bool(torch.isfinite(wave).all()):
        raise AudioInputError(f"{what} holds NaN or infinite samples; clean the audio first")
    if float(wave.abs().max()) < 1e-5:
        raise AudioInputError(f"{what} is silent (peak below -100 dBFS); give audio with sound in it")
    rate, latent_rate = vae_audio_rate(vae)
    mono = wave.mean(dim=1)  # (B, T)
    if sample_rate != rate:
        mono = fft_resample(mono, sample_rate, rate)
    device = next(vae.parameters()).device
    with torch.inference_mode():
        if hasattr(vae, "hop_length"):  # DAC-VAE: waveform in
            post = vae.encode(mono[:, None].to(device, vae.dtype))
        else:
            mel = MelSpectrogram(mel_preset(_mel_mode(vae)))(mono)  # (B, M, F)
            post = vae.encode(mel.to(device))
    return EncodedAudio(post.mean.float().cpu(), latent_rate, seconds)
