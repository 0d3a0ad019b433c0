"""Video of any length: windowed generation joined by Foley extension, in latent space.

A clip longer than the model's trained length is planned into overlapping windows (:mod:`.sampling.windows`).
Each window is one ordinary run of :func:`~.generation.generate_latents` with

* the semantic and sync features of its own span (sliced from the whole clip's features, which the encoders
  compute window by window from the file, see :func:`encode_video_streamed`, so frames of a long clip are never
  all in memory);
* the first half of its overlap with the previous window as a Foley-extension context (``AudioContext`` mode
  ``continue``): the model's context pathway where it has one, else the training-free path (known frames held on
  the flow line); over the second half the two windows' latents are cross-faded (raised cosine), so what the new
  window makes just after its known frames enters at low weight (``sampling.windows.BLEND``);
* the noise of one generator that runs on across windows (one seed gives one soundtrack).

Each window writes its new frames into one latent sequence for the whole clip, which is decoded once: there is no
waveform crossfade. (Held context alone left a false onset at 3.5 % of joins, 7.8× the rate elsewhere: the model
often starts its free frames with an attack.)
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .generation import FoleyConditions, GenerationError, SamplerSettings, context_path, generate_latents
from . import limits
from .limits import max_seconds
from .models.duration import CLIP_FPS, sequence_lengths
from .models.sync_layout import TOKENS_PER_WINDOW
from .sampling.context import AudioContext
from .sampling.windows import DEFAULT_OVERLAP, SYNC_STRIDE_SECONDS, WindowError, WindowPlan, plan_windows

log = logging.getLogger(__name__)

STREAM_CHUNK_SECONDS = 16.0  # encoder chunk when streaming a file (a multiple of 8 s: on both feature grids)


def trained_seconds(transformer) -> float:
    """The clip length a model was trained on (:func:`~.limits.trained_seconds` of its config): MMAudio and
    foley-tiny 8 s, Kling-Foley 10 s, HunyuanVideo-Foley 8 s."""
    return limits.trained_seconds(transformer.config)


def window_defaults(transformer) -> tuple[float, float]:
    """``(window_seconds, overlap_seconds)`` a model generates long clips with by default."""
    return trained_seconds(transformer), DEFAULT_OVERLAP


def latent_rate(transformer) -> float:
    if hasattr(transformer, "forward_native"):  # HunyuanVideo-Foley: DAC latents at audio_frame_rate
        return float(transformer.config.audio_frame_rate)
    return float(transformer.latent_rate)


def total_latent_frames(transformer, seconds: float) -> int:
    """Latent frames of a clip of any length (the formula one run uses, without the model's duration limit)."""
    if hasattr(transformer, "forward_native"):
        return int(transformer.latent_length(seconds))
    c = transformer.config
    return sequence_lengths(seconds, sample_rate=c.sample_rate, mel_hop=c.mel_hop,
                            latent_downsample=c.latent_downsample).latent


def plan_for(transformer, duration: float, window: float | None = None, overlap: float | None = None) -> WindowPlan:
    """The window plan of ``duration`` seconds for this model (defaults from its config); GenerationError if the
    values cannot work."""
    w0, o0 = window_defaults(transformer)
    window = w0 if not window else float(window)
    overlap = o0 if overlap is None else float(overlap)
    if window > max_seconds(transformer.config) + 1e-6:
        raise GenerationError(f"window_seconds={window:g} is longer than this model generates in one run "
                              f"({max_seconds(transformer.config):g} s); give {w0:g} (its trained length) or less")
    try:
        return plan_windows(duration, window, overlap)
    except WindowError as e:
        raise GenerationError(str(e)) from None


@dataclass
class LongLatents:
    latents: torch.Tensor  # (B, C, N) VAE-space latents of the whole clip
    plan: WindowPlan
    context_path: str | None  # which path joined the windows (None for a single window)


def _slice_features(cond: FoleyConditions, start: float, seconds: float) -> dict:
    """The clip and sync features of ``[start, start + seconds)``: semantic frames at 8 fps, and the sync tokens
    of the Synchformer segments that start inside the span (``start`` lies on the 0.32 s grid)."""
    out = {}
    lens = sequence_lengths(max(seconds, 16 / 25))
    if cond.clip_f is not None:
        i0 = min(int(round(start * CLIP_FPS)), cond.clip_f.shape[1] - 1)
        out["clip_f"] = cond.clip_f[:, i0:i0 + max(1, lens.clip)]
    if cond.sync_f is not None:
        w0 = int(round(start / SYNC_STRIDE_SECONDS)) * TOKENS_PER_WINDOW
        have = cond.sync_f.shape[1]
        if w0 >= have:  # the features end before this window (a duration longer than the video)
            w0 = max(0, have - TOKENS_PER_WINDOW)
        out["sync_f"] = cond.sync_f[:, w0:w0 + lens.sync]
    return out


def generate_long_latents(transformer, cond: FoleyConditions, settings: SamplerSettings = SamplerSettings(), *,
                          seed: int | None = 0, generator: torch.Generator | None = None,
                          window: float | None = None, overlap: float | None = None,
                          absolute_start: bool = False, callback: Callable[[dict], None] | None = None,
                          on_window: Callable[[int, int], None] | None = None) -> LongLatents:
    """Latents ``(B, C, N)`` for ``cond.duration`` seconds of any length.

    A clip within one window is exactly :func:`generate_latents`. Longer clips are generated window by window;
    ``callback`` gets each step's dict with ``window`` and ``windows`` added, ``on_window(k, n)`` is called before
    window ``k`` of ``n``. ``absolute_start`` gives each window its place in the clip as ``seconds_start``
    (models trained with non-zero starts); by default every window is timed as a clip of its own (``seconds_start``
    0), which is what released checkpoints saw in training.
    """
    plan = plan_for(transformer, cond.duration, window, overlap)
    ctx = cond.context
    if len(plan) == 1:
        if on_window is not None:
            on_window(0, 1)
        lat = generate_latents(transformer, cond, settings, seed=seed, generator=generator, callback=callback)
        return LongLatents(lat, plan, None if ctx is None else context_path(transformer))
    if ctx is not None and ctx.mode != "continue":
        raise GenerationError(f"a '{ctx.mode}' audio context works on clips up to one window ({plan.window:g} s); "
                              f"this clip is {cond.duration:.2f} s: cut the video (length) or use a continue context")
    rate = latent_rate(transformer)
    hunyuan = hasattr(transformer, "forward_native")
    n_total = total_latent_frames(transformer, cond.duration)
    if generator is None:  # one generator runs on across windows: one seed, one soundtrack
        generator = torch.Generator("cpu").manual_seed(int(seed or 0) & 0xFFFF_FFFF_FFFF_FFFF)
    out = None
    prev_end = 0  # latent frames already generated
    for w in plan.windows:
        if on_window is not None:
            on_window(w.index, len(plan))
        a = int(round(w.start * rate))
        b = n_total if w.index == len(plan) - 1 else min(n_total, int(round(w.end * rate)))
        seconds = (b - a) / rate if hunyuan else w.seconds  # Hunyuan sizes its latents from the duration alone
        sub = dataclasses.replace(cond, duration=seconds, latent_frames=None if hunyuan else b - a,
                                  seconds_start=cond.seconds_start + (w.start if absolute_start else 0.0),
                                  **_slice_features(cond, w.start, w.seconds))
        hold = prev_end  # end of the known frames (the held part of the overlap)
        if w.index == 0:
            sub.context = ctx  # the user's own known start, if any
        else:
            hold = min(prev_end, max(a + 1, a + int(round(w.hold * rate))))
            known = out[..., a:hold]
            sub.context = AudioContext(known, torch.ones(known.shape[0], known.shape[-1], dtype=torch.bool),
                                       rate, mode="continue")

        def step(info: dict, k=w.index) -> None:
            if callback is not None:
                callback({**info, "window": k, "windows": len(plan)})

        lat = generate_latents(transformer, sub, settings, generator=generator, callback=step)  # (B, C, n)
        if out is None:
            out = lat.new_zeros(lat.shape[0], lat.shape[1], n_total)
        n = min(lat.shape[-1], n_total - a)
        new = torch.cat([lat[..., :n], lat[..., n - 1:n].expand(*lat.shape[:-1], b - a - n)], -1) if a + n < b \
            else lat[..., :b - a]  # a model that rounds its length down by a frame: hold its last frame
        if hold < prev_end:  # cross-fade the rest of the overlap (raised cosine: previous window → this one)
            k = prev_end - hold
            ramp = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(k, dtype=out.dtype) + 0.5) / k)
            out[..., hold:prev_end] = torch.lerp(out[..., hold:prev_end], new[..., hold - a:prev_end - a], ramp)
        out[..., prev_end:b] = new[..., prev_end - a:]
        prev_end = b
    log.info("generated %.2f s in %d windows of %g s (overlap %g s, %s path)", cond.duration, len(plan), plan.window,
             plan.overlap, context_path(transformer))
    return LongLatents(out, plan, context_path(transformer))


# ------------------------------------------------------------------------------------------------------------
# encoders fed window by window from the file
# ------------------------------------------------------------------------------------------------------------
def _chunks(duration: float, chunk: float) -> list[tuple[float, float]]:
    """``[start, end)`` spans of ``chunk`` seconds (the last one takes a short remainder)."""
    starts = [k * chunk for k in range(max(1, int(math.floor(duration / chunk))))]
    return [(s, starts[i + 1] if i + 1 < len(starts) else duration) for i, s in enumerate(starts)]


def encode_video_streamed(path, start: float, duration: float, *, visual_encoder=None, sync_encoder=None,
                          chunk: float | None = None, on_chunk: Callable[[int, int], None] | None = None):
    """``(clip_f, sync_f)`` of ``[start, start + duration)`` of a video file, decoded and encoded ``chunk`` seconds
    at a time, so memory is bounded by one chunk's frames however long the clip is.

    ``chunk`` (default :data:`STREAM_CHUNK_SECONDS`) is a multiple of 8 s, which lies on both feature grids (8 fps frames, 0.32 s sync segments): each
    chunk's sync frames run 0.32 s past its end to complete its last segments, and the features equal those of
    one pass over the whole clip."""
    from .generation import frame_specs
    from .video.loader import load_video

    chunk = STREAM_CHUNK_SECONDS if chunk is None else chunk
    if chunk <= 0 or abs(chunk / 8.0 - round(chunk / 8.0)) > 1e-9:
        raise GenerationError(f"chunk={chunk:g} s must be a positive multiple of 8 s")
    semantic, sync = frame_specs(visual_encoder, sync_encoder)
    spans = _chunks(duration, chunk)
    clip_parts, sync_parts = [], []
    for i, (s, e) in enumerate(spans):
        if on_chunk is not None:
            on_chunk(i, len(spans))
        last = i == len(spans) - 1
        if semantic is not None:
            v = load_video(path, semantic=semantic, sync=None, start=start + s, duration=e - s)
            clip_parts.append(visual_encoder.encode(v.semantic.frames))
        if sync is not None:
            v = load_video(path, semantic=None, sync=sync, start=start + s,
                           duration=(e - s) if last else (e - s) + SYNC_STRIDE_SECONDS)
            sync_parts.append(sync_encoder.encode(v.sync.frames))
        v = None  # this chunk's frames go before the next chunk is decoded
    clip_f = torch.cat(clip_parts, dim=1) if clip_parts else None
    sync_f = torch.cat(sync_parts, dim=1) if sync_parts else None
    return clip_f, sync_f
