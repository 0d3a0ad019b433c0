"""Mono2Stereo on a waveform: pan a mono track (any sample rate) with the masks Mono2Stereo predicts.

Codecs that decode straight to audio (HunyuanVideo-Foley's DAC-VAE) never produce a mel, so the mask is estimated
on the mel of the mono waveform (resampled to the module's front-end rate for analysis only) and applied to the
waveform's own STFT: each frequency bin gets the gain of the mel band it falls in, each frame the gain of the mel
frame at its time. The sound itself is untouched; only its left/right balance changes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .audio.mel import MelSpectrogram, mel_preset
from .models.mono2stereo import pan_gains


def _band_centres_hz(cfg) -> np.ndarray:
    """Centre frequency of each mel band (slaney scale, as the front-end's filters)."""
    from .audio.mel import _hz_to_mel_slaney, _mel_to_hz_slaney

    lo, hi = _hz_to_mel_slaney(np.array([cfg.f_min]))[0], _hz_to_mel_slaney(np.array([cfg.f_max]))[0]
    return _mel_to_hz_slaney(np.linspace(lo, hi, cfg.n_mels + 2)[1:-1])


def pan_waveform(mono2stereo, wave: torch.Tensor, sample_rate: int,
                 video_f: torch.Tensor | None = None) -> torch.Tensor:
    """``wave`` ``(B, 1, T)`` or ``(B, T)`` mono → ``(B, 2, T)`` stereo (channel 0 left) at the same rate."""
    from .data.recordings import resample

    if wave.ndim == 3:
        if wave.shape[1] != 1:
            raise ValueError(f"pan_waveform: expected mono audio (B, 1, T), got {tuple(wave.shape)}")
        wave = wave[:, 0]
    wave = wave.float().cpu()
    cfg = mel_preset("16k" if mono2stereo.config.n_mels == 80 else "44k")
    # 1. analysis: the module's own mel front-end at its own rate
    x = wave.numpy()
    if sample_rate != cfg.sampling_rate:
        x = resample(x, int(sample_rate), int(cfg.sampling_rate))
    with torch.inference_mode():
        mel = MelSpectrogram(cfg)(torch.from_numpy(np.ascontiguousarray(x)).float())  # (B, M, F)
        pan = mono2stereo.predict_pan(mel.to(mono2stereo.dtype), video_f).float().cpu()  # (B, M, F)
    gain_l, gain_r = pan_gains(pan, mono2stereo.config.pan_law)  # (B, M, F)
    # 2. synthesis: the waveform's own STFT, with a hop of the same duration as the mel's
    hop = max(1, round(cfg.hop_length * sample_rate / cfg.sampling_rate))
    n_fft = 2 ** math.ceil(math.log2(4 * hop))
    window = torch.hann_window(n_fft)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # (B, K, N), centred frames
    freqs = np.linspace(0, sample_rate / 2, spec.shape[1])
    centres = _band_centres_hz(cfg)
    # frequency: each STFT bin takes the gain of the nearest mel bands (linear in Hz between band centres)
    band_pos = torch.from_numpy(np.interp(freqs, centres, np.arange(cfg.n_mels))).float()  # (K,)
    lo = band_pos.floor().long().clamp(0, cfg.n_mels - 1)
    hi = (lo + 1).clamp(max=cfg.n_mels - 1)
    w = (band_pos - lo.float())[None, :, None]
    # time: mel frame j covers [j·hop, (j+1)·hop) of the analysis signal; STFT frame n is centred at n·hop
    n_frames = spec.shape[-1]
    mel_pos = (torch.arange(n_frames, dtype=torch.float32) - 0.5).clamp(0, pan.shape[-1] - 1)
    t_lo = mel_pos.floor().long()
    t_hi = (t_lo + 1).clamp(max=pan.shape[-1] - 1)
    tw = (mel_pos - t_lo.float())[None, None, :]

    def expand(g: torch.Tensor) -> torch.Tensor:  # (B, M, F) → (B, K, N)
        g_t = g[:, :, t_lo] * (1 - tw) + g[:, :, t_hi] * tw  # (B, M, N)
        return g_t[:, lo, :] * (1 - w) + g_t[:, hi, :] * w  # (B, K, N)

    out = [torch.istft(spec * expand(g), n_fft, hop, window=window, length=wave.shape[-1]) for g in (gain_l, gain_r)]
    return torch.stack(out, dim=1).clamp(-1.0, 1.0)  # (B, 2, T)
