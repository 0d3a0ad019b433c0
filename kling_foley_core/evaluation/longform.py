"""Scores of long clips generated in windows (``kling-foley eval synthhits --duration SECONDS``).

* ``window_onset_f1``: onset F1 (±40 ms) of each 10-s span of the clip, in order, pooled over the clips: a model
  that stays in sync keeps the same F1 at the end as at the start.
* ``drift_ms_per_min``: least-squares slope of the signed offset (generated − true onset time) of matched onsets
  against time, in ms per minute: a soundtrack sliding against the picture has a non-zero slope.
  ``drift_se_ms_per_min`` is its standard error, bootstrapped over the clips (a slope of a few ms/min is within
  the noise of ten 60-s clips: onsets scatter by several ms around the true times).
* ``seam_false_onset_ratio``: false onsets (generated onsets matching no true hit) within ±100 ms of a window
  join (of the whole stretch where the next window's audio fades in: from the end of its held context to the end
  of the previous window), per second of that neighbourhood, divided by the same rate elsewhere. 1 means joins add
  no clicks or doubled hits; None when neither place has a false onset.
* ``duration_error_s``: the largest |generated length − clip length| over the clips.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .onsets import detect_onsets, match_onsets

SPAN_SECONDS = 10.0
SEAM_SECONDS = 0.1
TOLERANCE = 0.04


def _mono_and_rate(audio) -> tuple[np.ndarray, int]:
    x = np.asarray(audio["waveform"], dtype=np.float32)
    while x.ndim > 2:
        x = x[0]
    return x, int(audio["sample_rate"])


def long_clip_scores(pred: Sequence[dict], clips: Sequence, joins: Sequence) -> dict:
    """The long-clip scores of one system: ``pred`` are AUDIO dicts (one per clip), ``joins`` where windows meet,
    each a time or a ``(start, end)`` stretch in seconds (the same plan for every clip of one duration)."""
    if not clips:
        raise ValueError("no clips to score")
    duration = max(c.duration for c in clips)
    n_spans = max(1, math.ceil(duration / SPAN_SECONDS - 1e-9))
    span_counts = np.zeros((n_spans, 3))  # matched, true, generated per span
    offsets, times, owner = [], [], []
    seam_false = other_false = 0
    seam_time = other_time = 0.0
    length_err = 0.0
    joins = np.asarray([(j, j) if np.ndim(j) == 0 else tuple(j) for j in joins], dtype=np.float64).reshape(-1, 2)
    for k_clip, (audio, clip) in enumerate(zip(pred, clips)):
        x, sr = _mono_and_rate(audio)
        length_err = max(length_err, abs(x.shape[-1] / sr - clip.duration))
        est = detect_onsets(x, sr)
        ref = np.array([e.time for e in clip.events], dtype=np.float64)
        pairs = match_onsets(ref, est, TOLERANCE)
        matched_est = {j for _, j in pairs}
        for i, j in pairs:
            offsets.append(est[j] - ref[i])
            times.append(ref[i])
            owner.append(k_clip)
        for k in range(n_spans):
            lo, hi = k * SPAN_SECONDS, (k + 1) * SPAN_SECONDS
            span_counts[k] += (sum(lo <= ref[i] < hi for i, _ in pairs), int(((ref >= lo) & (ref < hi)).sum()),
                               int(((est >= lo) & (est < hi)).sum()))
        near = np.zeros(len(est), bool)
        if joins.size:
            near = ((est[:, None] >= joins[None, :, 0] - SEAM_SECONDS) &
                    (est[:, None] <= joins[None, :, 1] + SEAM_SECONDS)).any(axis=1)
        false = np.array([j not in matched_est for j in range(len(est))], bool)
        seam_false += int((false & near).sum())
        other_false += int((false & ~near).sum())
        seam = min(clip.duration, sum(min(j1 + SEAM_SECONDS, clip.duration) - max(j0 - SEAM_SECONDS, 0.0)
                                      for j0, j1 in joins if j0 < clip.duration))
        seam_time += seam
        other_time += clip.duration - seam
    f1 = []
    for m, n_ref, n_est in span_counts:
        f1.append(1.0 if n_ref == n_est == 0 else (2 * m / (n_ref + n_est) if n_ref + n_est else 0.0))
    drift, drift_se = _drift(np.asarray(times), np.asarray(offsets), np.asarray(owner, dtype=np.int64))
    seam_rate = seam_false / seam_time if seam_time > 0 else 0.0
    other_rate = other_false / other_time if other_time > 0 else 0.0
    ratio = None if seam_false == other_false == 0 else (float(seam_rate / other_rate) if other_rate > 0 else None)
    return {"window_onset_f1": [round(float(v), 4) for v in f1],
            "drift_ms_per_min": None if drift is None else round(drift, 3),
            "drift_se_ms_per_min": None if drift_se is None else round(drift_se, 3),
            "seam_false_onset_ratio": None if ratio is None else round(ratio, 3),
            "seam_false_onsets": seam_false, "other_false_onsets": other_false,
            "duration_error_s": round(float(length_err), 6)}


def _slope(times: np.ndarray, offsets: np.ndarray) -> float | None:
    if len(times) < 3 or np.ptp(times) <= 0:
        return None
    return float(np.polyfit(times, offsets, 1)[0] * 1000 * 60)  # s of offset per s of clip → ms per minute


def _drift(times: np.ndarray, offsets: np.ndarray, owner: np.ndarray, reps: int = 200) -> tuple:
    """(least-squares drift, its bootstrap standard error over clips or None for a single clip), ms per minute."""
    drift = _slope(times, offsets)
    clips = np.unique(owner)
    if drift is None or len(clips) < 2:
        return drift, None
    rng = np.random.default_rng(0)
    rows = [np.nonzero(owner == c)[0] for c in clips]
    draws = []
    for _ in range(reps):
        pick = np.concatenate([rows[k] for k in rng.integers(0, len(rows), len(rows))])
        slope = _slope(times[pick], offsets[pick])
        if slope is not None:
            draws.append(slope)
    return drift, (float(np.std(draws)) if len(draws) > 1 else None)


def format_long_rows(rows: dict[str, dict]) -> str:
    """One line per system: the 10-s span F1s, drift, seam ratio and duration error."""
    lines = [f"{'system':32s} {'F1 per 10-s span':40s} {'drift ms/min (±se)':>18s} {'seam ratio':>10s} {'len err s':>10s}"]
    for name, r in rows.items():
        f1 = " ".join(f"{v:.2f}" for v in r["window_onset_f1"])
        drift = "-" if r["drift_ms_per_min"] is None else f"{r['drift_ms_per_min']:+.2f}"
        if r.get("drift_se_ms_per_min") is not None:
            drift += f" ±{r['drift_se_ms_per_min']:.2f}"
        ratio = "-" if r["seam_false_onset_ratio"] is None else f"{r['seam_false_onset_ratio']:.2f}"
        lines.append(f"{name:32s} {f1:40s} {drift:>18s} {ratio:>10s} {r['duration_error_s']:>10.4f}")
    return "\n".join(lines)
