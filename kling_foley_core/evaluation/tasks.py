"""FoleyGenEx's control tasks on SynthHits (``kling-foley eval synthhits --task …``), all on held-out recordings.

Each task builds its inputs from a held-out test clip, runs the model with that control and scores the result
with the same onset detector and timbre judge as ``v2a``, beside reference rows (the true audio and the model
without the control), so a reader sees what the control changes:

* ``tta``: caption only. ``timbre_to_caption`` (every generated onset judged against the caption's class) and
  ``onset_count_ratio`` (generated onsets / the caption's count).
* ``tc-vta``: the text names class A, the video shows class B, no semantic features. ``timbre_to_text`` (matched
  isolated hits judged as A) and ``onset_f1`` against the video's hits.
* ``ac-vta``: the context is a reference made from a held-out recording of class A (never the clip's own sound);
  ``timbre_to_reference`` and ``onset_f1``.
* ``fe``: the first 40 % of the true soundtrack is the context, and the output is the pipeline's (those samples up to
  the seam, the continuation after); scored on the rest: ``onset_f1``,
  ``timbre_accuracy``, ``seam_false_onsets`` (unmatched onsets within ±100 ms of the seam, per clip) and
  ``seam_level_step_db`` (|level step across the seam − the true audio's step|, median over the
  ``sounding_seams``, where the true audio is not silent). Beside it, ``seam_join_step_db`` is the same median
  over the ``join_seams`` alone: the sounding seams where no true hit starts in the 200 ms after the seam. There
  the step measures the join itself; at the other seams it also measures how loud and when the model renders
  the new hit (the v2a loudness error), which the seam alone does not cause.
* ``edit``: a 2–4 s window regenerated with text naming another class; ``outside_max_abs_diff`` (beyond the
  50 ms margins, relative to the peak), and inside the window ``timbre_to_text`` and ``onset_f1``.

Clips whose hits are all of one class are used for the class-swap tasks (so "the clip's class" is defined).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from ..audio.encode import encode_audio
from ..audio.resample import fft_resample_array
from ..audio.splice import DEFAULT_MARGIN, splice_continuation, splice_window
from ..data.references import reference_hits
from ..data.synthhits import _caption, generate_clip
from ..generation import (FoleyConditions, SamplerSettings, decode_latents, generate_latents, mel_to_stereo,
                          stereo_video_features, vocode)
from ..sampling.context import AudioContext, make_context
from .metrics import evaluate_clips
from .onsets import EvaluationError, detect_onsets, match_onsets

TASKS = ("v2a", "tta", "tc-vta", "ac-vta", "fe", "edit")
SEAM_WINDOW = 0.1


def _single_class(clip) -> str | None:
    classes = {e.sound_class for e in clip.events}
    return next(iter(classes)) if len(classes) == 1 else None


def _other_class(cls: str, classes: list[str], rng: np.random.Generator) -> str:
    others = [c for c in classes if c != cls]
    return others[int(rng.integers(len(others)))]


def task_clips(bank, n: int, seed: int, task: str, split: str = "heldout", cap: int = 20) -> list:
    """The first ``n`` test clips of this seed that suit the task (hits of one class; edit: ≥ 4 s; fe: a hit in the
    given first 40 %; ac-vta: ≤ 8 s)."""
    out, i = [], 0
    while len(out) < n:
        if i >= cap * n:
            raise EvaluationError(f"only {len(out)} of {cap * n} clips suit task {task}; lower --n")
        clip = generate_clip(bank, seed=seed, index=i, split=split)
        i += 1
        if not clip.events or _single_class(clip) is None:
            continue
        if task == "edit" and clip.duration < 4.0:
            continue
        if task == "ac-vta" and clip.duration > 8.0:
            continue  # the 2-s reference goes before the clip, inside the default model's 10 s
        if task == "fe" and not any(e.time < 0.4 * clip.duration - 0.05 for e in clip.events):
            continue  # the given 40 % must hold a hit (silent audio is no context to continue)
        out.append(clip)
    return out


class Renderer:
    """The model's stages with explicit conditions (the eval's own route through the pipeline's parts)."""

    def __init__(self, pipe, *, steps: int, cfg: float, sampler: str):
        self.pipe = pipe
        self.settings = SamplerSettings(sampler=sampler, steps=steps, cfg=cfg)

    def video(self, clip):
        frames = torch.from_numpy(clip.frames).float() / 255.0
        sampled = self.pipe.sample_video(frames=frames, fps=clip.fps, duration=clip.duration)
        return self.pipe.encode_video(sampled)

    def __call__(self, duration: float, seed: int, *, clip_f=None, sync_f=None, prompt: str = "",
                 context: AudioContext | None = None, stereo_from=None, guidance: str = "all") -> np.ndarray:
        cond = FoleyConditions(duration=float(duration), clip_f=clip_f, sync_f=sync_f, context=context,
                               **self.pipe.encode_text(prompt, ""))
        lat = generate_latents(self.pipe.transformer, cond, replace(self.settings, guidance=guidance), seed=seed)
        feats = stereo_from if stereo_from is not None else (clip_f, sync_f)
        mel = mel_to_stereo(self.pipe.mono2stereo, decode_latents(self.pipe.vae, lat),
                            stereo_video_features(self.pipe.mono2stereo, *feats))
        sr = int(self.pipe.vocoder.sample_rate)
        return vocode(self.pipe.vocoder, mel, num_samples=int(math.floor(duration * sr)))[0].numpy()

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.sample_rate)

    def encode(self, audio: np.ndarray, sr: int):
        return encode_audio(self.pipe.vae, torch.from_numpy(np.ascontiguousarray(audio)).float(), sr)


def _as_class(clip, cls: str):
    """The clip with its events relabelled as ``cls`` (what a control asks for) and a caption naming it."""
    events = [replace(e, sound_class=cls) for e in clip.events]
    return replace(clip, events=events, caption=_caption(events, []))


def _audio_dict(x: np.ndarray, sr: int) -> dict:
    return {"waveform": x, "sample_rate": sr}


def _crop(clip, t0: float, t1: float, audio=None):
    """The clip cut to [t0, t1): audio (the clip's or ``audio`` at the clip's rate) and events shifted."""
    sr = clip.sample_rate
    a = clip.audio if audio is None else audio
    seg = a[:, int(round(t0 * sr)):int(round(t1 * sr))]
    events = [replace(e, time=e.time - t0) for e in clip.events if t0 <= e.time < t1]
    return replace(clip, audio=seg, events=events, duration=t1 - t0)


def _row(name: str, report, **extra) -> dict:
    d = {"name": name, "onset_f1": report.onset_f1, "timbre_accuracy": report.timbre_accuracy,
         "timbre_hits": report.timbre_hits, "mean_offset_ms": report.mean_offset_ms, "pan_mae": report.pan_mae}
    d.update(extra)
    return d


SEAM_FLOOR_DB = 50.0  # levels this far under the true clip's peak count as silence
SEAM_LEVEL_WINDOW = 0.2  # seconds of audio on each side of the seam whose levels are compared


def _level_db(x: np.ndarray, sr: int, t0: float, t1: float, floor: float) -> float:
    seg = x[..., max(0, int(t0 * sr)):max(1, int(t1 * sr))]
    return max(floor, 10 * math.log10(float(np.mean(seg.astype(np.float64) ** 2)) + 1e-12))


def _hit_after(clip, seam: float) -> bool:
    """A true hit starts in the level window after the seam."""
    return any(seam <= e.time < seam + SEAM_LEVEL_WINDOW for e in clip.events)


def _seam_scores(x: np.ndarray, clip, seam: float) -> tuple[int, float | None]:
    """(unmatched onsets within ±100 ms of the seam, level step across the seam − the true audio's step (dB), or None
    where the true audio is silent on both sides: there a step is a false sound, which the first figure counts).
    Levels are floored :data:`SEAM_FLOOR_DB` under the true clip's peak, so only an audible step counts (digital
    silence against a generated noise floor far under the hits is no seam a listener hears)."""
    sr = clip.sample_rate
    est = detect_onsets(x, sr)
    ref = np.array([e.time for e in clip.events])
    matched = {j for _, j in match_onsets(ref, est)}
    false = sum(1 for j, t in enumerate(est) if abs(t - seam) <= SEAM_WINDOW and j not in matched)
    floor = 20 * math.log10(float(np.abs(clip.audio).max()) + 1e-6) - SEAM_FLOOR_DB

    def levels(a):
        w = SEAM_LEVEL_WINDOW
        return _level_db(a, sr, seam - w, seam, floor), _level_db(a, sr, seam, seam + w, floor)
    (b, a), (tb, ta) = levels(x), levels(clip.audio)
    if max(tb, ta) <= floor:
        return false, None
    return false, (a - b) - (ta - tb)


def run_task(task: str, pipe, bank, classifier, *, n: int, seed: int, steps: int, cfg: float,
             sampler: str, text_guidance: str = "text", reference_guidance: str = "all") -> list[dict]:
    """Rows (the model with the control first, then the reference rows) of one task. ``text_guidance`` is what CFG
    drops in the text-controlled renders (tc-vta, edit): "text" (only the prompt, so cfg scales the text's own
    effect) or "all" (every condition, as the papers); ``reference_guidance`` the same for ac-vta: "all" or
    "reference" (only the context summary's shares)."""
    if task not in TASKS or task == "v2a":
        raise EvaluationError(f"task={task!r}: choose one of {', '.join(TASKS[1:])} (v2a is the default eval)")
    with torch.inference_mode():
        return _run_task(task, pipe, bank, classifier, n=n, seed=seed, steps=steps, cfg=cfg, sampler=sampler,
                         text_guidance=text_guidance, reference_guidance=reference_guidance)


def _run_task(task, pipe, bank, classifier, *, n, seed, steps, cfg, sampler, text_guidance,
              reference_guidance) -> list[dict]:
    rng = np.random.default_rng(seed)
    render = Renderer(pipe, steps=steps, cfg=cfg, sampler=sampler)
    clips = task_clips(bank, n, seed, task)
    classes = [c for c in bank.classes_with("heldout") if c in set(classifier.classes)]
    sr_out = render.sample_rate
    model, uncontrolled, truth, rows_extra = [], [], [], {}
    targets = []
    for i, clip in enumerate(clips):
        s = seed * 1000 + i
        cls = _single_class(clip)
        clip_f, sync_f = render.video(clip)
        if task == "tta":
            model.append(render(clip.duration, s, prompt=clip.caption))
            uncontrolled.append(render(clip.duration, s))
            targets.append(clip)
            continue
        other = _other_class(cls, classes, rng)
        target = _as_class(clip, other)
        targets.append(target)
        if task != "edit":
            uncontrolled.append(render(clip.duration, s, clip_f=clip_f, sync_f=sync_f))
        if task == "tc-vta":
            model.append(render(clip.duration, s, sync_f=sync_f, prompt=target.caption, guidance=text_guidance))
        elif task == "ac-vta":
            ref = reference_hits(bank, other, rng, clip.sample_rate)  # held-out, struck at 0.3 and 1.2 s
            enc = render.encode(ref, clip.sample_rate)
            ctx = make_context(enc.latents, enc.latent_rate, "reference")
            model.append(render(clip.duration, s, clip_f=clip_f, sync_f=sync_f, context=ctx,
                                guidance=reference_guidance))
        elif task == "fe":
            targets[-1] = clip  # the continuation keeps the clip's own sounds
            seam = round(0.4 * clip.duration, 3)
            given = clip.audio[:, :int(seam * clip.sample_rate)]
            enc = render.encode(given, clip.sample_rate)
            ctx = make_context(enc.latents, enc.latent_rate, "continue")
            gen = render(clip.duration, s, clip_f=clip_f, sync_f=sync_f, context=ctx)
            # what the pipeline returns: the given samples up to the seam, the continuation after (clip's rate)
            model.append(splice_continuation(torch.from_numpy(np.ascontiguousarray(given))[None], clip.sample_rate,
                                             torch.from_numpy(gen)[None], sr_out, ctx.seconds,
                                             clip.duration)[0].numpy())
        elif task == "edit":
            length = float(rng.uniform(2.0, min(4.0, clip.duration - 1.0)))
            t0 = float(rng.uniform(0.5, clip.duration - length - 0.5))
            enc = render.encode(clip.audio, clip.sample_rate)
            ctx = make_context(enc.latents, enc.latent_rate, "edit", edit_start=t0, edit_end=t0 + length)
            gen = render(clip.duration, s, sync_f=sync_f, prompt=target.caption, context=ctx,
                         stereo_from=(clip_f, sync_f), guidance=text_guidance)
            joined = splice_window(torch.from_numpy(clip.audio), clip.sample_rate, torch.from_numpy(gen), sr_out,
                                   t0, t0 + length).numpy()
            model.append(joined)
            rows_extra.setdefault("windows", []).append((t0, t0 + length))
    return _score(task, clips, targets, model, uncontrolled, sr_out, classifier, rows_extra)


def _score(task, clips, targets, model, uncontrolled, sr_out, classifier, extra) -> list[dict]:
    names = {"tta": "model: caption only", "tc-vta": "model: text of another class", "ac-vta":
             "model: reference of another class", "fe": "model: 40 % given", "edit": "model: window edited"}
    if task == "tta":
        rows = []
        for name, audio in (("model: caption only", model), ("model: no text (uncontrolled)", uncontrolled),
                            ("true audio", [c.audio for c in clips])):
            ok, n_est, n_ref = [], 0, 0
            for x, clip in zip(audio, clips):
                sr = clip.sample_rate if x is clip.audio else sr_out
                times = detect_onsets(x, sr)
                n_est += len(times)
                n_ref += len(clip.events)
                if len(times):
                    ok += [p == _single_class(clip) for p in classifier.classify_onsets(x, sr, list(times))]
            rows.append({"name": name, "timbre_to_caption": float(np.mean(ok)) if ok else float("nan"),
                         "onset_count_ratio": n_est / max(n_ref, 1), "n_generated_onsets": n_est,
                         "n_caption_onsets": n_ref})
        return rows
    up = [_audio_dict(x, sr_out) for x in uncontrolled]
    if task == "fe":
        rows = []
        for name, audio in (("model: 40 % given", model),  # already at the clip's rate (spliced)
                            ("model: nothing given (uncontrolled)",
                             [fft_resample_array(x, sr_out, c.sample_rate) for x, c in zip(uncontrolled, clips)]),
                            ("true audio", [c.audio for c in clips])):
            seams = [round(0.4 * c.duration, 3) for c in clips]
            crops = [_crop(c, s, c.duration, audio=x) for x, c, s in zip(audio, clips, seams)]
            rep = evaluate_clips([c.audio for c in crops], crops, classifier=classifier, name=name)
            seam = [_seam_scores(x, c, s) for x, c, s in zip(audio, clips, seams)]
            steps = [abs(b) for _, b in seam if b is not None]
            joins = [abs(b) for (_, b), c, sm in zip(seam, clips, seams)
                     if b is not None and not _hit_after(c, sm)]
            rows.append(_row(name, rep, seam_false_onsets=float(np.mean([a for a, _ in seam])),
                             seam_level_step_db=float(np.median(steps)) if steps else float("nan"),
                             sounding_seams=len(steps),
                             seam_join_step_db=float(np.median(joins)) if joins else float("nan"),
                             join_seams=len(joins),
                             per_clip_seam=[{"clip_id": c.clip_id, "seam": sm, "false_onsets": a, "level_step_db": b}
                                            for c, sm, (a, b) in zip(clips, seams, seam)]))
        return rows
    if task == "edit":
        rows = []
        windows = extra["windows"]
        for name, audio in (("model: window edited", model), ("true audio", [c.audio for c in clips])):
            inside_crops, outside = [], []
            for x, c, (t0, t1) in zip(audio, targets, windows):
                sr = c.sample_rate
                t = np.arange(x.shape[-1]) / sr
                far = (t < t0 - DEFAULT_MARGIN) | (t >= t1 + DEFAULT_MARGIN)
                peak = float(np.abs(c.audio).max()) or 1.0
                outside.append(float(np.abs(x[:, far] - c.audio[:, far]).max()) / peak)
                inside_crops.append(_crop(c, t0, t1, audio=x))
            rep = evaluate_clips([c.audio for c in inside_crops], inside_crops, classifier=classifier, name=name)
            rows.append(_row(name, rep, timbre_to_text=rep.timbre_accuracy, outside_max_abs_diff=max(outside),
                             margin_ms=1000 * DEFAULT_MARGIN))
        return rows
    key = "timbre_to_text" if task == "tc-vta" else "timbre_to_reference"
    rows = []
    for name, audio in ((names[task], [_audio_dict(x, sr_out) for x in model]), ("model: v2a (uncontrolled)", up),
                        ("true audio", [c.audio for c in clips])):
        rep = evaluate_clips(audio, targets, classifier=classifier, name=name)
        rows.append(_row(name, rep, **{key: rep.timbre_accuracy}))
    return rows


def format_rows(task: str, rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "name" and not k.startswith("per_clip")]
    width = max(len(r["name"]) for r in rows) + 2
    head = f"{'system':<{width}}" + "".join(f"{k:>22}" for k in keys)
    lines = [f"task {task}", head, "-" * len(head)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(f"{'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else (f'{v:.3f}' if isinstance(v, float) else v):>22}")
        lines.append(f"{r['name']:<{width}}" + "".join(cells))
    return "\n".join(lines)
