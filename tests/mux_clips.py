"""Awkward little videos for the mux tests: VFR, B-frames, open GOP, a start offset, and codecs from old AVIs.

Frame i shows :func:`video_clips.index_image` (i), so a test can tell which source frame every output frame is.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from video_clips import decode_index, index_image

SIZE = (32, 24)
_PIX = {"cinepak": "rgb24", "mjpeg": "yuvj420p"}


def write_input(path: Path, *, times_ms: list[int], codec: str = "libx264", bframes: int = 0, gop: int = 12,
                open_gop: bool = False, fmt: str | None = None, time_base: Fraction = Fraction(1, 1000)) -> Path:
    """Frames at ``times_ms`` (millisecond timestamps: VFR when uneven, a start offset when times_ms[0] > 0),
    stored in ``time_base`` (AVI counts frames: give it 1/fps there)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height = SIZE
        s.pix_fmt = _PIX.get(codec, "yuv420p")
        s.codec_context.time_base = time_base
        if codec == "libx264":
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}" + (":open-gop=1" if open_gop else "")
            s.options = {"preset": "veryfast", "crf": "10", "x264-params": params}
        else:
            s.codec_context.gop_size = gop
            s.codec_context.bit_rate = 4_000_000  # enough for the colour code to survive
            if bframes:
                s.codec_context.max_b_frames = bframes
        if codec.startswith("libvpx"):
            s.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(index_image(i, *SIZE), format="rgb24")
            f.pts, f.time_base = round(Fraction(t, 1000) / time_base), time_base
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def vfr_times(n: int, start_ms: int = 0) -> list[int]:
    """n frame times with uneven gaps (33, 40, 50, 67 ms in turn)."""
    gaps = [33, 40, 50, 67, 40, 33, 50]
    out, t = [], start_ms
    for i in range(n):
        out.append(t)
        t += gaps[i % len(gaps)]
    return out


def cfr_times(n: int, fps: int = 25, start_ms: int = 0) -> list[int]:
    return [start_ms + round(1000 * i / fps) for i in range(n)]


def decoded(path: Path) -> list[tuple[Fraction, int]]:
    """(time from the stream start, source frame index) of every frame a plain decode gives."""
    import torch

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        origin = Fraction(s.start_time or 0) * s.time_base
        out = []
        for f in c.decode(s):
            img = torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)
            out.append((Fraction(f.pts) * s.time_base - origin, decode_index(img)))
        return out


def picture_span(path: Path) -> tuple[Fraction, Fraction]:
    """(first frame time, end of the last frame) of the video stream in seconds, from its packets (Matroska
    leaves most packet durations out: the gap to the next frame stands in, the last gap for the last frame)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        base = s.time_base  # read while open: PyAV 18.1.1 refuses a closed container's stream attributes
        own = {p.pts: p.duration for p in c.demux(s) if p.size and p.pts is not None}
    starts = sorted(own)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    last = own[starts[-1]] or (gaps[-1] if gaps else 0)
    end = max([starts[-1] + last] + [t + (own[t] or g) for t, g in zip(starts, gaps)])
    return Fraction(starts[0]) * base, Fraction(end) * base
