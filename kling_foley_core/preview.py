"""Sync view: a mel spectrogram under a strip of video frames on the same time axis, as an image.

A creator sees at a glance whether the sound events line up with what happens on screen.
"""
from __future__ import annotations

import numpy as np
import torch

# A perceptually ordered dark-to-bright ramp (black → purple → orange → yellow), interpolated per pixel.
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                  [250, 193, 39], [252, 255, 164]], dtype=np.float32) / 255.0


def colorize(values: np.ndarray) -> np.ndarray:
    """[H, W] values in 0..1 → [H, W, 3] RGB."""
    x = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    frac = (x - lo)[..., None]
    return _RAMP[lo] * (1 - frac) + _RAMP[hi] * frac


def _log_spectrogram(wave: torch.Tensor, sample_rate: int, height: int) -> np.ndarray:
    """Mono log-magnitude spectrogram resampled to ``height`` rows (low frequencies at the bottom), 0..1."""
    mono = wave.float().mean(0)  # (T,)
    n_fft = 1024 if sample_rate > 20000 else 512
    hop = n_fft // 4
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    spec = torch.stft(mono, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()  # (F, N)
    db = 20 * torch.log10(spec.clamp_min(1e-5))
    db = (db - (db.max() - 80)).clamp_min(0) / 80  # 80 dB range
    # log-spaced frequency rows so low and mid frequencies get room
    freqs = torch.logspace(np.log10(30.0), np.log10(sample_rate / 2), height)
    rows = (freqs / (sample_rate / 2) * (spec.shape[0] - 1)).long().clamp(0, spec.shape[0] - 1)
    return db[rows].flip(0).numpy()


def sync_view(waveform: torch.Tensor, sample_rate: int, frames: torch.Tensor | None = None,
              frame_times: torch.Tensor | None = None, *, width: int = 1024, spec_height: int = 256,
              strip_height: int = 96) -> torch.Tensor:
    """Render ``waveform`` ``(C, T)`` (and optional ``frames`` ``(N, C, H, W)`` 0..1 at ``frame_times`` seconds) as
    a ComfyUI IMAGE ``(1, H, W, 3)``: the frame strip on top, the spectrogram below, one shared time axis, with a
    white guide line under every frame's time."""
    if waveform.ndim != 2 or waveform.shape[-1] == 0:
        raise ValueError(f"sync view: waveform must be (channels, samples) with samples > 0, got {tuple(waveform.shape)}")
    duration = waveform.shape[-1] / float(sample_rate)
    spec = _log_spectrogram(waveform, sample_rate, spec_height)  # (Hs, N)
    cols = np.linspace(0, spec.shape[1] - 1, width).round().astype(int)
    image = colorize(spec[:, cols])  # (Hs, W, 3)
    if frames is None or len(frames) == 0:
        return torch.from_numpy(image[None].astype(np.float32))
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if frames.min() < 0:  # symmetric [-1, 1] frames (sync stream)
        frames = (frames + 1) / 2
    if frame_times is None:
        frame_times = torch.linspace(0, duration, len(frames) + 1)[:-1]
    thumb_w = min(width, max(1, int(round(strip_height * frames.shape[-1] / frames.shape[-2]))))
    strip = np.zeros((strip_height, width, 3), dtype=np.float32)
    # side-by-side slots; each shows the frame on screen at the slot's centre time, so thumbnails never overlap
    n_slots = max(1, width // thumb_w)
    times = frame_times.double().numpy()
    centres = (np.arange(n_slots) + 0.5) * thumb_w / width * duration
    pick = np.clip(np.searchsorted(times, centres, side="right") - 1, 0, len(frames) - 1)
    thumbs = torch.nn.functional.interpolate(frames[torch.from_numpy(pick)], size=(strip_height, thumb_w),
                                             mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    for k in range(n_slots):
        strip[:, k * thumb_w:(k + 1) * thumb_w] = thumbs[k].permute(1, 2, 0).numpy()
    for t in times[np.unique(pick)]:  # a guide line at the exact time of every frame shown
        x = int(t / duration * width) if duration > 0 else 0
        if 0 <= x < width:
            image[:, x] = 1.0
    return torch.from_numpy(np.concatenate([strip, image], axis=0)[None].astype(np.float32))
