"""Fidelity of generated audio to the clip's true soundtrack (numpy only, no model).

Onset F1, pan and timbre say *when*, *where* and *what*; these columns say how close the sound is to the
recording. Each compares a system's audio with the clip's true audio:

- **loudness_error_db**: per matched hit, the peak level (max |x| over the channels, dBFS) of the generated audio in
  ``[onset - 10 ms, onset + 60 ms)`` (the system's matched onset) minus the true audio's in the same window after the
  true onset; each window ends before the next true event. Median over hits (and the median of its absolute value).
- **level_slope**: the least-squares slope of those generated peak levels against the true ones over all matched
  hits (at least 3, with true levels that differ): 1 when the hits span the recordings' dynamics, above 1 when
  loud hits come out louder and soft ones softer than recorded, near 0 when the level ignores the strike.
- **decay_error**: per isolated matched hit (no other event within 0.15 s before it), the time the level (10 ms
  RMS of the mono mix, 5 ms steps) takes to fall 30 dB below its peak in the first 60 ms, generated against true,
  as a relative error ``(t_gen - t_true) / t_true``. The window runs to the next event (at most 1 s); a hit whose
  *true* tail does not fall 30 dB inside it is not scored (decided from the reference alone, the same hits for every
  system); a generated tail that never falls counts as the window's length (a lower bound of its error).
- **log_spectral_distance** (dB) and **mel_distance** (mean |Δ log10-mel|): per clip, mono mixes resampled to
  16 kHz, 1024-point STFT, hop 256, frames aligned sample for sample. Powers are floored 80 dB under the true
  clip's loudest bin; the distance averages the frames where either signal is within 60 dB of the true clip's
  loudest frame (silence shared by both does not dilute it). At 16 kHz both measure the band the default model
  produces (0-8 kHz); what lies above is the bandwidth column's.
- **bandwidth_hz**: the frequency under which 99 % of the clip's energy lies (mono mix at the clip's rate): each
  row's own audio, so the ground-truth row shows the recordings' and a system row its own.

The reference row :func:`other_recordings_audio` re-renders every clip with the same events (times, gains, pans)
played by *another* recording of the same class: the distance between two recordings of one class, the scale
on which a system's log-spectral distance is read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

FID_SR = 16000
N_FFT, HOP = 1024, 256
FLOOR_DB, ACTIVE_DB = 80.0, 60.0


@dataclass
class ClipFidelity:
    """One clip's fidelity measurements (lists per hit; distances per clip)."""

    level_diffs_db: list
    decay_rel_errors: list
    lsd_db: float
    mel_distance: float
    bandwidth_hz: float
    true_levels_db: list = field(default_factory=list)  # the true peak level of each hit of level_diffs_db


def _mono(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).mean(axis=0)


def peak_db(x: np.ndarray, sr: int, start: float, end: float) -> float:
    """Peak level (dBFS) of ``x`` (C, N) over the channels in ``[start, end)`` seconds."""
    a, b = max(0, int(round(start * sr))), min(x.shape[-1], int(round(end * sr)))
    if b <= a:
        return -200.0
    return 20 * math.log10(float(np.abs(x[:, a:b]).max()) + 1e-10)


def _envelope_db(mono: np.ndarray, sr: int, start: float, end: float, win: float = 0.01, step: float = 0.005):
    a, b = max(0, int(round(start * sr))), min(len(mono), int(round(end * sr)))
    w, s = max(1, int(win * sr)), max(1, int(step * sr))
    seg = mono[a:b]
    if len(seg) < w:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(seg, w)[::s]
    return 10 * np.log10((frames * frames).mean(axis=1) + 1e-20)


def decay_time(x: np.ndarray, sr: int, onset: float, end: float, drop_db: float = 30.0,
               peak_search: float = 0.06, step: float = 0.005) -> tuple[float, bool]:
    """(seconds from ``onset`` until the level falls ``drop_db`` under its peak, fell inside the window).

    The peak is the loudest 10 ms frame in the first ``peak_search`` s; when the level never falls that far before
    ``end`` the window's length is returned with ``False``."""
    env = _envelope_db(_mono(x), sr, onset, end, step=step)
    if env.size == 0:
        return 0.0, False
    k = max(1, min(len(env), int(round(peak_search / step))))
    p = int(np.argmax(env[:k]))
    below = np.nonzero(env[p:] < env[p] - drop_db)[0]
    if below.size == 0:
        return end - onset, False
    return (p + int(below[0])) * step, True


def _spectra(mono: np.ndarray) -> np.ndarray:
    """Power STFT (frames, bins) of a 16 kHz mono signal, frames at k·hop (zero-padded at the edges)."""
    x = np.pad(mono, (N_FFT // 2, N_FFT // 2 + HOP))
    n_frames = len(mono) // HOP + 1
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(x[idx] * np.hanning(N_FFT), axis=1)
    return spec.real ** 2 + spec.imag ** 2


_MEL_FILTERS: np.ndarray | None = None


def _mel_filters() -> np.ndarray:
    global _MEL_FILTERS
    if _MEL_FILTERS is None:
        from ..audio.mel import slaney_mel_filters

        _MEL_FILTERS = slaney_mel_filters(FID_SR, N_FFT, 80, 0.0, FID_SR / 2).astype(np.float64)
    return _MEL_FILTERS


def spectral_distances(pred: np.ndarray, true: np.ndarray, sr: int) -> tuple[float, float]:
    """(log-spectral distance in dB, mean |Δ log10-mel|) of two (C, N) signals at ``sr``, both taken at 16 kHz."""
    from ..data.recordings import resample

    a, b = (resample(_mono(s), sr, FID_SR).astype(np.float64) if sr != FID_SR else _mono(s) for s in (pred, true))
    pa, pb = _spectra(a), _spectra(b)
    top = float(pb.max())
    if top <= 0:
        return float("nan"), float("nan")
    floor = top * 10 ** (-FLOOR_DB / 10)
    da, db = (10 * np.log10(np.maximum(p, floor)) for p in (pa, pb))
    ea, eb = pa.sum(axis=1), pb.sum(axis=1)
    active = np.maximum(ea, eb) >= float(eb.max()) * 10 ** (-ACTIVE_DB / 10)
    lsd = float(np.sqrt(((da - db) ** 2).mean(axis=1))[active].mean())
    fil = _mel_filters()
    ma, mb = (np.log10(np.maximum(np.sqrt(p) @ fil.T, 1e-5)) for p in (pa, pb))
    mel = float(np.abs(ma - mb).mean(axis=1)[active].mean())
    return lsd, mel


def bandwidth_hz(x: np.ndarray, sr: int, fraction: float = 0.99) -> float:
    """The frequency under which ``fraction`` of the energy of ``x``'s mono mix lies (nan for silence)."""
    mono = _mono(x)
    n = 2048
    if len(mono) < n:
        mono = np.pad(mono, (0, n - len(mono)))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n)[:: n // 2]
    power = (np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2).sum(axis=0)
    total = float(power.sum())
    if total <= 0:
        return float("nan")
    k = int(np.searchsorted(np.cumsum(power) / total, fraction))
    return float(np.fft.rfftfreq(n, 1.0 / sr)[min(k, n // 2)])


def true_decay(true: np.ndarray, sr: int, times: np.ndarray, t: float, *, isolation_before: float = 0.15,
               max_tail: float = 1.0) -> tuple[float, float] | None:
    """(window length, true decay time) of the hit at ``t`` among the clip's sorted event ``times``, or None when
    the hit is not scored: another event lies within ``isolation_before`` s before it, or the true tail does not
    fall 30 dB before the next event (at most ``max_tail`` s). Decided from the reference alone, so every system
    is scored on the same hits."""
    dur = true.shape[-1] / sr
    earlier, later = times[times < t - 1e-6], times[times > t + 1e-6]
    if earlier.size and t - float(earlier[-1]) < isolation_before:
        return None
    end = min(float(later[0]) if later.size else dur, t + max_tail, dur)
    t_true, fell = decay_time(true, sr, t, end)
    if not fell or t_true <= 0:
        return None
    return end - t, t_true


def clip_fidelity(pred: np.ndarray, clip, est: np.ndarray, pairs: Sequence[tuple[int, int]], *,
                  isolation_before: float = 0.15, max_tail: float = 1.0) -> ClipFidelity:
    """Fidelity of ``pred`` (C, N, at the clip's rate, the clip's length) to ``clip.audio``; ``est`` the system's
    onsets and ``pairs`` their matching to the clip's events (``match_onsets``)."""
    sr = clip.sample_rate
    true = np.asarray(clip.audio, np.float64)
    dur = true.shape[-1] / sr
    times = np.array([e.time for e in clip.events], np.float64)
    order = np.sort(times)
    levels, decays, true_levels = [], [], []
    for ri, ej in pairs:
        t, te = float(times[ri]), float(est[ej])
        later = order[order > t + 1e-6]
        w = min(0.06, (float(later[0]) if later.size else dur) - t)
        true_levels.append(peak_db(true, sr, t, t + w))
        levels.append(peak_db(pred, sr, te - 0.01, te + w) - true_levels[-1])
        scored = true_decay(true, sr, order, t, isolation_before=isolation_before, max_tail=max_tail)
        if scored is None:
            continue
        window, t_true = scored
        t_gen, _ = decay_time(pred, sr, te, min(te + window, dur))
        decays.append((t_gen - t_true) / t_true)
    lsd, mel = spectral_distances(pred, true, sr)
    return ClipFidelity(levels, decays, lsd, mel, bandwidth_hz(pred, sr), true_levels)


def other_recordings_audio(clips: Sequence, bank, *, seed: int = 0) -> list[np.ndarray]:
    """Each clip re-rendered with the same events played by another recording of the same class and split
    (the clip's own recording when its class has only one): the 'two recordings of one class' reference."""
    from ..data.synthhits import pan_gains

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4099]))
    out = []
    for clip in clips:
        sr = clip.sample_rate
        if getattr(bank, "sample_rate", sr) != sr:
            from .onsets import EvaluationError

            raise EvaluationError(f"recording bank at {bank.sample_rate} Hz but clip {clip.clip_id} at {sr} Hz; "
                                  f"use the bank the clips were rendered from")
        n = clip.audio.shape[-1]
        audio = np.zeros((2, n), np.float64)
        swap: dict[int, np.ndarray] = {}
        for e in clip.events:
            if e.object_id not in swap:
                pool = [r for r in bank.select(clip.split, e.sound_class) if r.name != e.recording]
                if not pool:
                    pool = [r for r in bank.select(None, e.sound_class)]
                swap[e.object_id] = pool[int(rng.integers(len(pool)))].audio if pool else np.zeros(1)
            x = swap[e.object_id]
            s = int(round(e.time * sr))
            m = min(len(x), n - s)
            if m <= 0:
                continue
            gl, gr = pan_gains(e.pan)
            audio[0, s:s + m] += e.gain * gl * x[:m]
            audio[1, s:s + m] += e.gain * gr * x[:m]
        out.append(np.clip(audio, -1, 1).astype(np.float32))
    return out


def level_slope(true_db: Sequence[float], diffs_db: Sequence[float]) -> float:
    """Slope of generated against true peak level over matched hits (their true levels and generated - true
    differences); nan when fewer than 3 hits or their true levels are all equal."""
    true = np.asarray(true_db, np.float64)
    gen = true + np.asarray(diffs_db, np.float64)
    if len(true) < 3 or float(true.var()) < 1e-9:
        return float("nan")
    return float(((true - true.mean()) * (gen - gen.mean())).mean() / true.var())


def summarise(rows: Sequence[ClipFidelity]) -> dict:
    """The report's fidelity fields from the per-clip measurements of the clips with hits."""
    nan = float("nan")
    lv = [v for r in rows for v in r.level_diffs_db]
    dc = [v for r in rows for v in r.decay_rel_errors]

    def med(v):
        return float(np.median(v)) if len(v) else nan

    def mean(v):
        v = [x for x in v if not math.isnan(x)]
        return float(np.mean(v)) if v else nan

    return dict(loudness_error_db=med(lv), loudness_abs_error_db=med(np.abs(lv)),
                level_slope=level_slope([v for r in rows for v in r.true_levels_db], lv), decay_error=med(dc),
                decay_abs_error=med(np.abs(dc)), decay_hits=len(dc),
                log_spectral_distance=mean([r.lsd_db for r in rows]), mel_distance=mean([r.mel_distance for r in rows]),
                bandwidth_hz=med([r.bandwidth_hz for r in rows if not math.isnan(r.bandwidth_hz)]))
