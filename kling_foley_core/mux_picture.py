"""The picture side of the mux: which packets of the input make up a span, and how they reach the output.

:func:`scan_packets` reads every video packet's timestamps once (demux only, no decode) into a
:class:`PacketIndex`. Timestamps a demuxer leaves unset are repaired there: Matroska stores no decode times, so
FFmpeg hands the first packets of a B-frame stream over with ``dts=None``; those packets (often the first
keyframe) must be written, not skipped, so every packet gets a decode time (the sorted presentation times, moved
back just enough that no packet is decoded after it is shown). Only the demuxer's end-of-stream flush packets,
which carry no data, are left out.

:func:`plan_cut` decides how a span ``[start, end)`` of the picture is written:

* the whole picture: every packet copied with its own timestamps (no re-encode, bit-identical bytes);
* a trimmed span whose frames are exactly one run of packets in decode order that opens on a keyframe (all-intra
  codecs such as MJPEG, or a cut that falls on a keyframe with no reordered frame across its end): those packets
  are copied, shifted to start at 0, with the cut points snapped to the nearest frame boundary (so the output
  lasts the span to within one frame);
* otherwise that span alone is re-encoded (H.264 CRF 18, VP9 for WebM), frame-exact: the frame on screen at
  ``start`` opens the output and the last one is shown until ``end``. Stream copy cannot be frame-exact there:
  the frames before the cut depend on the keyframe before it, and B-frames shown before the end depend on a frame
  shown after it. MP4 could hide the extra frames with an edit list, but Matroska and WebM have none, so one rule
  serves every container.

``reencode=True`` re-encodes even when a copy would do (e.g. a picture codec the container cannot hold).
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av

from .video.probe import VideoInputError, open_container, select_video_stream

log = logging.getLogger(__name__)

ENCODE_TIME_BASE = Fraction(1, 90000)
# container format -> (encoder, pixel format, options) used when the picture is re-encoded
REENCODERS = {
    "webm": ("libvpx-vp9", "yuv420p", {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
}
DEFAULT_REENCODER = ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast"})


@dataclass
class PacketIndex:
    """Timestamps (in ``time_base`` ticks) of every video packet with data, in decode order."""

    time_base: Fraction
    origin: int  # the stream's start (start_time, else the first frame's pts): the loader's t = 0
    pts: list[int]
    dts: list[int]
    durations: list[int]  # the packet's own, else the gap to the next frame (MP4 drops a last sample of length 0)
    keyframe: list[bool]
    repaired: bool  # some pts/dts were missing or out of order and were filled in
    starts: list[int]  # distinct frame start times, sorted
    end: int  # when the last frame stops being shown
    step: Fraction  # nominal frame period in seconds

    def seconds(self, ticks: int) -> Fraction:
        """Ticks -> seconds from the stream's start."""
        return Fraction(ticks - self.origin) * self.time_base

    def ticks(self, seconds: Fraction) -> Fraction:
        return seconds / self.time_base + self.origin

    def snap(self, seconds: Fraction) -> int:
        """The frame boundary (a frame start or the end) nearest to ``seconds``."""
        bounds = self.starts + [self.end]
        t = self.ticks(seconds)
        i = bisect.bisect_left(bounds, t)
        near = [b for b in bounds[max(0, i - 1):i + 1]]
        return min(near, key=lambda b: (abs(b - t), b))


def _fill_dts(pts: list[int]) -> list[int]:
    """Strictly increasing decode times with dts <= pts for packets whose pts are given in decode order."""
    order = sorted(pts)
    lag = max(s - p for s, p in zip(order, pts))
    return [s - lag for s in order]


def scan_packets(path) -> PacketIndex:
    with open_container(path) as c:
        s = select_video_stream(c, path)
        tb = s.time_base
        rate = s.average_rate or s.guessed_rate or 25
        nominal = max(1, int(round(1 / (Fraction(rate) * tb))))
        pts: list[int] = []
        dts: list[int | None] = []
        keys: list[bool] = []
        durations: dict[int, int] = {}
        repaired = False
        for p in c.demux(s):
            if p.size == 0:  # the demuxer's end-of-stream flush packet: no data
                continue
            t = p.pts
            if t is None:
                repaired = True
                t = p.dts if p.dts is not None else (pts[-1] + nominal if pts else 0)
            pts.append(t)
            dts.append(p.dts)
            keys.append(bool(p.is_keyframe))
            if p.duration:
                durations[t] = p.duration
        start_time = s.start_time
    if not pts:
        raise VideoInputError(path, "no_frames", "has no video packets; re-encode it")
    if any(d is None for d in dts) or any(b <= a for a, b in zip(dts, dts[1:])):
        repaired = True
        dts = _fill_dts(pts)
    starts = sorted(set(pts))
    gaps = sorted(b - a for a, b in zip(starts, starts[1:]))
    step = gaps[len(gaps) // 2] if gaps else nominal
    following = dict(zip(starts, starts[1:]))
    own = [durations.get(t) or (following[t] - t if t in following else step) for t in pts]
    end = max(t + d for t, d in zip(pts, own))
    origin = start_time if start_time is not None else starts[0]
    return PacketIndex(time_base=tb, origin=origin, pts=pts, dts=dts, durations=own, keyframe=keys,
                       repaired=repaired, starts=starts, end=end, step=Fraction(step) * tb)


@dataclass
class Cut:
    """How the picture of one span is written. Times are seconds from the input stream's start."""

    mode: str  # "all" (copy everything, timestamps kept), "copy" (a run of packets, shifted) or "encode"
    zero: Fraction  # input time shown at the output's t = 0 (for "all": the first frame's time)
    duration: Fraction  # output picture duration
    first: int = 0  # decode-order packet range for "copy"
    last: int = -1
    shift: int = 0  # ticks subtracted from copied timestamps
    start: Fraction = Fraction(0)  # the span, for "encode"
    end: Fraction = Fraction(0)


def plan_cut(index: PacketIndex, start: Fraction, end: Fraction | None, reencode: bool) -> Cut:
    video_end = index.seconds(index.end)
    first_time = index.seconds(index.starts[0])
    end = video_end if end is None else min(end, video_end)
    start = max(start, Fraction(0))
    if end - start <= 0:
        raise ValueError(f"the span {float(start):.3f}-{float(end):.3f} s holds no picture (the video lasts "
                         f"{float(video_end):.3f} s)")
    s_tick, e_tick = index.snap(start), index.snap(end)
    whole = s_tick <= index.starts[0] and e_tick >= index.end
    if reencode or e_tick <= s_tick:
        return Cut("encode", zero=start, duration=end - start, start=start, end=end)
    if whole:
        return Cut("all", zero=first_time, duration=video_end - first_time)
    inside = [i for i, p in enumerate(index.pts) if s_tick <= p < e_tick]
    first, last = inside[0], inside[-1]
    if index.keyframe[first] and index.pts[first] == s_tick and len(inside) == last - first + 1:
        return Cut("copy", zero=index.seconds(s_tick), duration=Fraction(e_tick - s_tick) * index.time_base,
                   first=first, last=last, shift=s_tick)
    return Cut("encode", zero=start, duration=end - start, start=start, end=end)


def copied_packets(src, v_in, index: PacketIndex, cut: Cut, others=()) -> Iterator[av.Packet]:
    """The input's video packets of ``cut`` (mode all/copy) with repaired, shifted timestamps, interleaved with
    the packets of ``others`` (input streams copied whole, only with mode "all")."""
    i = -1
    for packet in src.demux([v_in, *others]):
        if packet.size == 0:
            continue
        if packet.stream is not v_in:
            yield packet
            continue
        i += 1
        if i < cut.first:
            continue
        if cut.mode == "copy" and i > cut.last:
            if not others:
                break
            continue
        if index.repaired or cut.shift:
            packet.pts = index.pts[i] - cut.shift
            packet.dts = index.dts[i] - cut.shift
        if not packet.duration:
            packet.duration = index.durations[i]
        yield packet


def _decoded_frames(path, index: PacketIndex, start: Fraction) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """(time, frame) of every decodable frame in presentation order, times from the stream's start. Seeks to
    the keyframe before ``start`` when that is far in."""
    with open_container(path) as c:
        s = select_video_stream(c, path)
        s.thread_type = "AUTO"
        if start > 10:
            c.seek(int(index.ticks(start)), stream=s, backward=True, any_frame=False)
        prev = None
        for frame in c.decode(s):
            if frame.pts is not None:
                t = index.seconds(frame.pts)
            else:
                t = prev + index.step if prev is not None else Fraction(0)
            if prev is not None and t <= prev:
                continue
            prev = t
            yield t, frame


def encoded_packets(path, index: PacketIndex, cut: Cut, out, rotation: int) -> tuple[object, Iterator[av.Packet]]:
    """Add a re-encoded picture stream to ``out``; return it and a generator of its packets for ``cut``."""
    enc, pix_fmt, options = REENCODERS.get(out.format.name, DEFAULT_REENCODER)
    with open_container(path) as c:
        ctx = select_video_stream(c, path).codec_context
        width, height = max(2, ctx.width - ctx.width % 2), max(2, ctx.height - ctx.height % 2)
    stream = out.add_stream(enc, rate=Fraction(1) / index.step)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.options = dict(options)
    stream.codec_context.time_base = ENCODE_TIME_BASE
    stream.time_base = ENCODE_TIME_BASE
    if rotation:
        stream.set_display_rotation(rotation)

    def ticks(seconds: Fraction) -> int:
        return int(round(seconds / ENCODE_TIME_BASE))

    def packets() -> Iterator[av.Packet]:
        durations: dict[int, int] = {}

        def send(frame, t0: Fraction, t1: Fraction):
            f = frame.reformat(width=width, height=height, format=pix_fmt)
            f.pts, f.time_base = ticks(t0), ENCODE_TIME_BASE
            f.pict_type = av.video.frame.PictureType.NONE
            durations[f.pts] = ticks(t1) - ticks(t0)
            return stream.encode(f)

        def finish(pkts):
            for p in pkts:
                p.duration = durations.pop(p.pts, p.duration)
                yield p

        def shown(held, until: Fraction):
            """Encode the held frame for the part of [its time, until) inside the span (if a tick or more)."""
            t0, t1 = max(held[0], cut.start) - cut.start, min(until, cut.end) - cut.start
            return finish(send(held[1], t0, t1)) if ticks(t1) > ticks(t0) else ()

        held = None  # (time, frame) waiting for the next frame's time
        for t, frame in _decoded_frames(path, index, cut.start):
            if held is not None and held[0] >= cut.end:
                break
            if held is not None and t > cut.start:
                yield from shown(held, t)
            held = (t, frame)
        if held is not None and held[0] < cut.end:
            yield from shown(held, cut.end)
        yield from finish(stream.encode(None))

    return stream, packets()
