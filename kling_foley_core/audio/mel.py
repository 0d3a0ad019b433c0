"""Log-mel front-ends of the Mel-VAE (Kling-Foley §4.5 input, MMAudio ``ext/mel_converter``).

Two presets carry the numbers every part of the library agrees on (DESIGN.md):

* ``"16k"``: 16 kHz, n_fft 1024, hop 256, win 1024, 80 mels, 0–8000 Hz, log10  → 62.5 frames/s
* ``"44k"``: 44.1 kHz, n_fft 2048, hop 512, win 2048, 128 mels, 0–22050 Hz, ln → 86.13 frames/s

The transform is the reference's ``center=False`` path, step by step:
clamp the waveform to [-1, 1]; reflect-pad (n_fft − hop)/2 samples on each side (so a signal of L samples gives
exactly L // hop frames); STFT with a periodic Hann window; magnitude sqrt(re² + im² + 1e-9) (the epsilon keeps
the gradient finite at silent bins); project on Slaney-normalised mel filters (librosa's default, built here in
numpy so neither librosa nor torchaudio is needed); log(max(., 1e-5)) in the preset's base.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = ["MelConfig", "MEL_PRESETS", "MelSpectrogram", "MelInputError", "mel_preset", "slaney_mel_filters"]


class MelInputError(ValueError):
    """Bad argument to a mel front-end (unknown preset, wrong shape, too short a signal)."""


@dataclass(frozen=True)
class MelConfig:
    """The numbers of one log-mel front-end."""

    sampling_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    f_min: float
    f_max: float
    log_base: Literal["10", "e"]  # "10" → log10 (16k mode), "e" → natural log (44k mode)
    clip_val: float = 1e-5  # magnitudes are clamped here before the log (log floor −5 / −11.51)
    magnitude_eps: float = 1e-9  # added to re² + im² before the square root

    def __post_init__(self) -> None:
        if self.log_base not in ("10", "e"):
            raise MelInputError(f"MelConfig.log_base={self.log_base!r}: use '10' (log10) or 'e' (natural log)")
        if self.win_length > self.n_fft:
            raise MelInputError(f"MelConfig.win_length={self.win_length} exceeds n_fft={self.n_fft}")
        if (self.n_fft - self.hop_length) % 2:
            # The reference pads (n_fft - hop)/2 on each side; an odd difference would silently truncate.
            raise MelInputError(f"MelConfig: n_fft - hop_length must be even (got {self.n_fft} - {self.hop_length})")
        if not 0 <= self.f_min < self.f_max <= self.sampling_rate / 2:
            raise MelInputError(
                f"MelConfig: need 0 <= f_min < f_max <= sampling_rate/2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sampling_rate={self.sampling_rate}")

    @property
    def frame_rate(self) -> float:
        """Mel frames per second."""
        return self.sampling_rate / self.hop_length

    @property
    def padding(self) -> int:
        """Reflect padding applied on each side before the (uncentred) STFT."""
        return (self.n_fft - self.hop_length) // 2

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a signal of ``num_samples`` samples (= num_samples // hop)."""
        return (num_samples + 2 * self.padding - self.n_fft) // self.hop_length + 1

    def to_dict(self) -> dict:
        return asdict(self)


MEL_PRESETS: dict[str, MelConfig] = {
    "16k": MelConfig(sampling_rate=16_000, n_fft=1024, hop_length=256, win_length=1024, n_mels=80,
                     f_min=0.0, f_max=8_000.0, log_base="10"),
    "44k": MelConfig(sampling_rate=44_100, n_fft=2048, hop_length=512, win_length=2048, n_mels=128,
                     f_min=0.0, f_max=22_050.0, log_base="e"),
}


def mel_preset(name: str, **overrides) -> MelConfig:
    """A preset by name (``"16k"`` or ``"44k"``), optionally with some fields replaced."""
    key = str(name).lower().replace("_", "").replace("khz", "k")
    aliases = {"16k": "16k", "16000": "16k", "44k": "44k", "44.1k": "44k", "44100": "44k"}
    if key not in aliases:
        raise MelInputError(f"mel preset {name!r} is unknown: use one of {sorted(MEL_PRESETS)}")
    cfg = MEL_PRESETS[aliases[key]]
    return replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------------------------
# Slaney mel scale and filters (the librosa defaults: htk=False, norm="slaney")


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    # Linear below 1 kHz (3 mel per 200 Hz), logarithmic above (27 steps per factor 6.4).
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = hz / f_sp
    above = hz >= min_log_hz
    mel = np.where(above, min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filters(sampling_rate: float, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular mel filters with Slaney area normalisation, shape ``(n_mels, n_fft // 2 + 1)``, float32.

    Computed in float64 and rounded once, like librosa.filters.mel.
    """
    fft_freqs = np.linspace(0.0, sampling_rate / 2.0, n_fft // 2 + 1)  # (F,)
    mel_pts = np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2)
    hz_pts = _mel_to_hz_slaney(mel_pts)  # (M+2,) filter edges and centres in Hz
    widths = np.diff(hz_pts)  # (M+1,)
    ramps = hz_pts[:, None] - fft_freqs[None, :]  # (M+2, F)
    rising = -ramps[:-2] / widths[:-1, None]  # (M, F)
    falling = ramps[2:] / widths[1:, None]  # (M, F)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney norm: each triangle has unit area in Hz, so wide high-frequency bands do not dominate.
    weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    if np.any(weights.max(axis=1) <= 0):
        log.warning("mel filters: some of the %d bands are empty (n_fft=%d too small for n_mels?)", n_mels, n_fft)
    return weights.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------


class MelSpectrogram(nn.Module):
    """Waveform ``(..., T)`` in [-1, 1] → log-mel ``(..., n_mels, T // hop)``, float32.

    ``MelSpectrogram("44k")`` or ``MelSpectrogram(MelConfig(...))``. Leading dimensions are kept, so a ComfyUI
    AUDIO waveform ``(B, C, T)`` gives ``(B, C, n_mels, frames)``. The filters and the window are non-persistent
    buffers (rebuilt from the config, never stored in a checkpoint); ``.to(device)`` moves them.
    """

    def __init__(self, config: MelConfig | str = "44k"):
        super().__init__()
        self.config = mel_preset(config) if isinstance(config, str) else config
        c = self.config
        filters = slaney_mel_filters(c.sampling_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
        self.register_buffer("mel_filters", torch.from_numpy(filters), persistent=False)  # (M, F)
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)  # (win,)

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    def num_frames(self, num_samples: int) -> int:
        return self.config.num_frames(num_samples)

    def magnitude(self, waveform: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude ``(N, n_fft//2+1, frames)`` of a flat batch ``(N, T)``."""
        c = self.config
        x = waveform.clamp(-1.0, 1.0)
        # Reflect padding of a 2-D signal needs the (N, 1, T) form in F.pad.
        x = F.pad(x.unsqueeze(1), (c.padding, c.padding), mode="reflect").squeeze(1)  # (N, T + n_fft - hop)
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)  # (N, F, frames)
        spec = torch.view_as_real(spec)  # (N, F, frames, 2)
        return torch.sqrt(spec.pow(2).sum(-1) + c.magnitude_eps)  # (N, F, frames)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not torch.is_tensor(waveform) or waveform.ndim < 1:
            raise MelInputError(f"MelSpectrogram: waveform must be a tensor (..., T), got {type(waveform).__name__}")
        if not waveform.is_floating_point():
            raise MelInputError(f"MelSpectrogram: waveform must be float in [-1, 1], got dtype {waveform.dtype}")
        # Reflect padding needs more samples than the pad; the STFT then needs at least one full window.
        min_samples = max(c.padding + 1, c.hop_length)
        if waveform.shape[-1] < min_samples:
            raise MelInputError(
                f"MelSpectrogram: waveform has {waveform.shape[-1]} samples; at least {min_samples} are needed "
                f"for n_fft={c.n_fft}, hop={c.hop_length} (pad the audio or use a longer clip)")
        lead = waveform.shape[:-1]
        flat = waveform.reshape(-1, waveform.shape[-1]).to(device=self.window.device, dtype=torch.float32)  # (N, T)
        mag = self.magnitude(flat)  # (N, F, frames)
        mel = torch.matmul(self.mel_filters, mag)  # (N, M, frames)
        mel = mel.clamp(min=c.clip_val)
        mel = torch.log10(mel) if c.log_base == "10" else torch.log(mel)
        return mel.reshape(*lead, c.n_mels, mel.shape[-1])  # (..., M, frames)

    def extra_repr(self) -> str:
        c = self.config
        return (f"sr={c.sampling_rate}, n_fft={c.n_fft}, hop={c.hop_length}, win={c.win_length}, "
                f"n_mels={c.n_mels}, f=[{c.f_min:g}, {c.f_max:g}], log{c.log_base}")
