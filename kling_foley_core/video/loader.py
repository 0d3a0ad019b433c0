"""Streaming PyAV video loader: one decode pass feeds every consumer (8 fps semantic, 25 fps sync, ...).

Memory stays bounded by the *outputs*: frames are decoded one at a time, the decoder's full-size frame is only
kept until the next one arrives (the timestamp rule needs the next frame's time to know how long the current one
stays on screen), and a picked frame goes to a worker thread that crops and scales it with swscale straight from
YUV to the consumer's small planar-RGB size and writes it, already in the output's value range, into the
preallocated output tensor. At most a few full-size frames wait for the worker, so a 10-minute 1080p file never
exists as one big tensor.

Where the time goes (720p H.264, both default consumers, uint8 outputs as the pipeline requests them): decoding
~1.1 ms per frame for a 0.5 Mbit/s clip, ~1.8 ms for Big Buck Bunny's 1.6 Mbit/s; converting a picked frame
~0.5 ms of swscale (crop 720x720 -> 224x224 bicubic -> planar RGB; "area" ~0.37 ms, but ~20 % further from
torchvision's Resize+CenterCrop) plus ~0.1 ms of copying and bookkeeping. Both consumers share one 224 px
geometry, so a frame is converted once however many streams pick it, and at 25-30 fps input nearly every frame is
picked by the 25 fps stream. That puts the loader at ~1.4-1.6x a bare decode's CPU time (bench/bench_video.py):
swscale's bicubic filter is the floor. Float outputs cost one more pass over ~600 KB per pick and 4x the memory
(~2x a bare decode in all), which is why the pipeline asks for uint8 and lets each encoder normalise its batches.

Rotation: phones store portrait video as landscape pictures plus a display matrix; frames are turned upright
(``frame.rotation``, counter-clockwise degrees) after the cheap downscale. Horizontal flips in the matrix are rare
and not applied.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction

import av
import numpy as np
import torch

from .probe import VideoInputError, normalize_rotation, open_container, probe_video, select_video_stream
from .resample import (
    SEMANTIC,
    SYNC,
    FrameCollector,
    FrameSpec,
    SampledVideo,
    TimestampPicker,
    VideoParamError,
    check_specs,
    frame_counts,
    resized_geometry,
    to_fraction,
)

log = logging.getLogger(__name__)

_INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "area": "AREA", "lanczos": "LANCZOS"}

# Seek instead of decoding from the beginning when the trim starts this late (keyframe-accurate seek, then the
# timestamp rule as usual). After a seek the absolute frame index is unknown, so source_indices become -1.
AUTO_SEEK_AFTER = 10.0


class _FrameConverter:
    """Crop-then-scale for one (source size, consumer geometry, rotation): a libavfilter graph
    ``crop → scale → gbrp`` (planar RGB).

    * The crop is free (it only moves plane pointers), so swscale reads just the region that survives the centre
      crop: about 44 % fewer source pixels for 16:9 video than resizing the whole frame and cropping afterwards.
      The result follows torchvision's Resize(short side) + CenterCrop up to a sub-pixel shift of the crop window.
    * Planar RGB output is both cheaper and more faithful than packed rgb24: for packed RGB swscale keeps the
      chroma at half the *output* width and duplicates it, whereas planar RGB makes it scale the chroma planes
      straight to the output size (full chroma). On 720p input that is ~2x less CPU per frame, and on colourful
      detail the error against Resize+CenterCrop of the full-resolution RGB frame drops ~3-4x. It is also
      already channel-first, which is what the encoders take.
    """

    def __init__(self, frame: av.VideoFrame, spec: FrameSpec, rotation: int, interpolation: str):
        self.quarter = rotation // 90
        dw, dh = (frame.height, frame.width) if self.quarter % 2 else (frame.width, frame.height)  # display size
        rw, rh, left, top = resized_geometry(dw, dh, spec)
        th, tw = spec.hw
        # the source region (display orientation) that the resize + crop keeps
        sw, sh = min(dw, round(tw * dw / rw)), min(dh, round(th * dh / rh))
        sx, sy = min(dw - sw, round(left * dw / rw)), min(dh - sh, round(top * dh / rh))
        if self.quarter % 2:  # the same centred region in the coded orientation
            sw, sh, sx, sy = sh, sw, (frame.width - sh) // 2, (frame.height - sw) // 2
            tw, th = th, tw
        elif self.quarter == 2:
            sx, sy = frame.width - sw - sx, frame.height - sh - sy
        self.size = (th, tw)  # coded orientation
        self.lock = threading.Lock()
        self.count = 0
        g = av.filter.Graph()
        # one thread per graph: slice threading inside swscale costs ~5-10 % more CPU for a 224 px output, and the
        # loader already overlaps conversion with decoding on its own worker thread
        g.threads = 1
        src = g.add_buffer(width=frame.width, height=frame.height, format=frame.format.name, time_base=Fraction(1, 1000))
        scale = f"{tw}:{th}:flags={interpolation.lower()}"
        if interpolation == "BICUBIC":  # swscale's default cubic is B=0, C=0.6; PIL/torchvision use a = -0.5
            scale += ":param0=0:param1=0.5"
        chain = [g.add("crop", f"{sw}:{sh}:{sx}:{sy}"), g.add("scale", scale), g.add("format", "gbrp"),
                 g.add("buffersink")]
        prev = src
        for node in chain:
            prev.link_to(node)
            prev = node
        g.configure()
        self.graph = g

    def __call__(self, frame: av.VideoFrame) -> torch.Tensor:
        th, tw = self.size
        arr = np.empty((3, th, tw), np.uint8)  # (3, th, tw) R, G, B
        with self.lock:  # a graph processes one frame at a time
            self.count += 1  # the graph wants increasing timestamps; the loader has read the real ones already
            frame.pts, frame.time_base = self.count, Fraction(1, 1000)
            self.graph.push(frame)
            out = self.graph.pull()
        planes = out.planes  # gbrp stores G, B, R; rows are padded to line_size
        for dst, plane in zip(arr, (planes[2], planes[0], planes[1])):
            dst[...] = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:th, :tw]
        if self.quarter:  # display matrix angle is counter-clockwise; np.rot90 turns CCW too
            arr = np.ascontiguousarray(np.rot90(arr, k=self.quarter, axes=(1, 2)))  # torch refuses negative strides
        return torch.from_numpy(arr)  # (3, th, tw) uint8


def _converter_for(cache: dict, frame: av.VideoFrame, spec: FrameSpec, rotation: int, interpolation: str):
    key = (frame.width, frame.height, frame.format.name, spec.hw, spec.resize, rotation, interpolation)
    if key not in cache:  # a new size mid-stream (resolution change) gets its own graph
        cache[key] = _FrameConverter(frame, spec, rotation, interpolation)
    return cache[key]


def load_video(
    path: str | os.PathLike,
    *,
    semantic: FrameSpec | None = SEMANTIC,
    sync: FrameSpec | None = SYNC,
    start: float = 0.0,
    duration: float | None = None,
    interpolation: str = "bicubic",
    seek: bool | None = None,
    max_corrupt: int = 64,
    workers: int = 1,
) -> SampledVideo:
    """Decode ``path`` once and return frames for each consumer, picked by timestamp (see ``resample``).

    Args:
        semantic / sync: what each encoder wants (:class:`FrameSpec`); None skips that stream.
        start: trim start in seconds from the stream start. duration: seconds to cover (default: to the end;
            clamped with a warning when the file is shorter). Frame counts are floor(duration * fps).
        interpolation: swscale filter for resizing ("bicubic", "bilinear", "area", "lanczos").
        seek: jump to the keyframe before ``start`` instead of decoding from 0 (default: when start >= 10 s).
        max_corrupt: give up (VideoInputError) after this many corrupt packets; fewer are skipped with a warning.
        workers: threads that resize picked frames while the next ones decode (0 = resize inline).

    Raises :class:`VideoInputError` (a ValueError) for unusable files or arguments, before any heavy work.
    """
    specs = {k: v for k, v in (("semantic", semantic), ("sync", sync)) if v is not None}
    check_specs(specs)
    if interpolation not in _INTERPOLATIONS:
        raise VideoParamError(f"interpolation: {interpolation!r} is not one of {sorted(_INTERPOLATIONS)}")
    interp = _INTERPOLATIONS[interpolation]
    start_f = to_fraction(start, "start")
    if start_f < 0:
        raise VideoParamError(f"start: must be >= 0 seconds, got {start}")
    dur_f = None
    if duration is not None:
        dur_f = to_fraction(duration, "duration")
        if dur_f <= 0:
            raise VideoParamError(f"duration: must be > 0 seconds, got {duration}")

    info = probe_video(path)  # every file-level error surfaces here, before decoding
    if info.duration is not None and start_f >= to_fraction(info.duration) + Fraction(1, 1000):
        raise VideoParamError(f"start: {start}s is past the end of '{path}' ({info.duration:.3f}s); pass a "
                              "smaller start")
    do_seek = (start_f >= AUTO_SEEK_AFTER) if seek is None else bool(seek and start_f > 0)

    counts = frame_counts(dur_f, specs) if dur_f is not None else {k: None for k in specs}
    collectors = {name: FrameCollector(name, spec, TimestampPicker(spec.rate, start_f, counts[name]),
                                       capacity=_expected_count(counts[name], info.duration, start_f, spec))
                  for name, spec in specs.items()}
    # streamed collectors get each picture written (scaled) into their output by the worker thread
    streamed = {name for name, spec in specs.items() if FrameCollector.streams_uint8(spec)}
    warnings: list[str] = []

    def warn(msg: str) -> None:
        log.warning("video '%s': %s", path, msg)
        warnings.append(msg)

    with open_container(path) as container:
        stream = select_video_stream(container, path)
        stream.thread_type = "AUTO"
        tb = stream.time_base
        tb_n, tb_d = tb.numerator, tb.denominator
        origin = Fraction(stream.start_time) * tb if stream.start_time is not None else None
        avg = stream.average_rate or stream.guessed_rate
        default_step = Fraction(1) / Fraction(avg) if avg else Fraction(1, 25)
        if do_seek:
            target_pts = int(((origin or 0) + start_f) / tb)
            container.seek(target_pts, stream=stream, backward=True, any_frame=False)

        # libavfilter/swscale and numpy release the GIL, so converting and scaling picked frames on a worker thread
        # overlaps with decoding. Frames go to the worker in small batches (fewer thread wake-ups, which cost
        # measurable CPU at ~25 picks per second), and at most `max_pending` batches wait, so only a few
        # full-size frames are ever held: memory stays bounded
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kf-video") if workers > 0 else None
        converters: dict = {}
        pending: deque[Future] = deque()
        batch: list = []
        batch_size, max_pending = 3, 2

        def flush() -> None:
            if batch:
                pending.append(pool.submit(_convert_batch, list(batch)))
                batch.clear()
                while len(pending) > max_pending:
                    pending.popleft().result()

        def submit(conv: _FrameConverter, frame: av.VideoFrame, writes: list, item: Future | None) -> None:
            if pool is None:
                _convert_batch([(conv, frame, writes, item)])
                return
            batch.append((conv, frame, writes, item))
            if len(batch) >= batch_size:
                flush()

        try:
            prev = None  # (frame, index, time) of the frame currently "on screen"
            index = 0
            skipped = 0
            # packets with data handed to the decoder against frames it gave back: a damaged packet the decoder
            # conceals by dropping raises nothing and flags nothing, so the gap is how it shows (field-coded
            # interlaced video legitimately takes two packets per frame, so the count is not used for it)
            sent = returned = 0
            fields = False
            # how long the newest frame stays on screen, kept as its parts and only turned into a Fraction when
            # needed (a frame without pts, or the clip end): its own duration (time-base units) if the container
            # says, else the gap to the frame before it, else the stream's nominal frame period
            last_dur, last_gap = 0, None

            def last_step() -> Fraction:
                if last_dur:
                    return Fraction(last_dur) * tb
                return last_gap[1] - last_gap[0] if last_gap is not None else default_step
            stopped_early = False

            def emit(until: Fraction) -> None:
                """Hand the frame on screen until `until` to every consumer whose targets it covers."""
                frame, idx, t = prev
                src_idx = -1 if do_seek else idx
                by_geometry: dict = {}  # consumers with the same geometry share one conversion of this frame
                for name, col in collectors.items():
                    n = col.picker.advance(until)
                    if n > 0:
                        by_geometry.setdefault((col.spec.hw, col.spec.resize), []).append((name, col, n))
                if not by_geometry:
                    return  # a frame no target time falls on is never converted
                rotation = normalize_rotation(frame.rotation)
                for targets in by_geometry.values():
                    conv = _converter_for(converters, frame, targets[0][1].spec, rotation, interp)
                    writes = [(col, col.reserve(n, src_idx, t), n) for name, col, n in targets if name in streamed]
                    item = None if len(writes) == len(targets) else Future()  # for consumers that keep items
                    for name, col, n in targets:
                        if name not in streamed:
                            col.add(n, idx, src_idx, t, lambda spec, item=item: item)
                    submit(conv, frame, writes, item)

            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                        sent += packet.size > 0
                        returned += len(frames)
                    except av.error.InvalidDataError:
                        skipped += 1
                        warn(f"skipped a corrupt packet at t={_packet_time(packet, origin)}")
                        if skipped > max_corrupt:
                            raise VideoInputError(path, "corrupt", f"more than {max_corrupt} corrupt packets; the "
                                                  "file is badly damaged: re-encode or re-download it.") from None
                        continue
                    for frame in frames:
                        fields = fields or frame.interlaced_frame
                        if frame.is_corrupt:
                            skipped += 1
                            warn(f"skipped a frame the decoder flagged corrupt (pts {frame.pts})")
                            continue
                        if frame.pts is None:
                            base = origin or Fraction(0)
                            t = (prev[2] + last_step()) if prev is not None else Fraction(0)
                            if origin is None:
                                origin = base
                        else:
                            if origin is None:
                                origin = Fraction(frame.pts) * tb
                            # t = pts * tb - origin as one exact Fraction (this runs for every decoded frame)
                            t = Fraction(frame.pts * tb_n * origin.denominator - origin.numerator * tb_d,
                                         tb_d * origin.denominator)
                        if prev is not None:
                            if t <= prev[2]:
                                log.debug("video '%s': frame with non-increasing time %s dropped", path, float(t))
                                continue
                            last_gap = (prev[2], t)
                            emit(t)
                        last_dur = frame.duration or 0
                        prev = (frame, index, t)
                        index += 1
                    if all(c.picker.done for c in collectors.values()):
                        stopped_early = True
                        break
            except av.error.FFmpegError as e:  # demuxer gave up mid-file (truncated download etc.)
                warn(f"stopped reading at a damaged part of the file ({e.strerror or e}); using the frames decoded "
                     "so far")
            else:  # only a decoder that was flushed to the end has given back every frame it will give
                if not stopped_early and returned < sent and not fields:
                    skipped += sent - returned
                    warn(f"the decoder dropped {sent - returned} corrupt frame(s) without an error; the frame before "
                         "each stays on screen in its place")

            if prev is None:
                raise VideoInputError(path, "no_frames", "no video frame could be decoded in the requested range; "
                                      "check start/duration or re-encode the file.")
            end = prev[2] + last_step()  # the last frame stays on screen for its own duration
            if not stopped_early:
                emit(end)
                if info.duration is not None and float(end) + 2 * float(default_step) < info.duration and dur_f is None:
                    warn(f"decoded only {float(end):.3f}s of the declared {info.duration:.3f}s; the file may be "
                         "truncated")
            if pool is not None:
                flush()
            while pending:  # surface a failed conversion here, not as a silently wrong frame
                pending.popleft().result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    available = end - start_f
    if available <= 0:
        raise VideoParamError(f"start: {start}s is past the last frame of '{path}' ({float(end):.3f}s); pass a "
                              "smaller start")
    if dur_f is None:
        dur_eff = available
    elif dur_f > available and not stopped_early:
        warn(f"requested {float(dur_f):.3f}s from {float(start_f):.3f}s but the video has only {float(available):.3f}s;"
             " using that")
        dur_eff = available
    else:
        dur_eff = dur_f
    final = frame_counts(dur_eff, specs)
    result_streams = {name: col.finish(final[name], start_f) for name, col in collectors.items()}
    return SampledVideo(
        streams=result_streams,
        start=float(start_f),
        duration=float(dur_eff),
        source_duration=float(end) if not stopped_early else (info.duration or float(end)),
        source_fps=info.fps,
        info=info,
        decoded_frames=index,
        skipped=skipped,
        warnings=warnings,
    )


def _convert_batch(jobs: list) -> None:
    """Worker job: convert each picked frame once, write it into every streamed consumer's slots, and hand it to
    the consumers that keep items (through `item`, a Future)."""
    for conv, frame, writes, item in jobs:
        try:
            picture = conv(frame)  # (3, th, tw) uint8
            for col, slot, n in writes:
                col.put(slot, n, picture)
        except BaseException as e:
            if item is not None:
                item.set_exception(e)
            raise
        if item is not None:
            item.set_result(picture)


def _expected_count(known: int | None, declared: float | None, start: Fraction, spec: FrameSpec) -> int | None:
    """Output rows to preallocate: exact for a requested duration, else from the declared length (may be off)."""
    if known is not None:
        return known
    if declared is None:
        return None
    return max(1, math.floor((to_fraction(declared) - start) * spec.rate) + 1)


def _packet_time(packet, origin) -> str:
    if packet.pts is None or packet.time_base is None:
        return "?"
    return f"{float(Fraction(packet.pts) * packet.time_base - (origin or 0)):.3f}s"
