"""Tiny synthetic clips for the video/mux tests, written with PyAV.

Each frame carries its own index in its colour so a test can tell which *source frame* a sampled timestamp used,
after any resize/crop/rotation: red = 24 + 13 * (i % 16), green = 24 + 13 * (i // 16 % 16) (13 grey levels apart,
far more than H.264 at crf 0..18 moves a flat colour). Blue marks the top-left quadrant (230 there, 20 elsewhere) so
orientation can be checked as well.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

STEP = 13
BASE = 24


def index_image(i: int, width: int, height: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)  # (H, W, 3)
    img[..., 0] = BASE + STEP * (i % 16)
    img[..., 1] = BASE + STEP * (i // 16 % 16)
    img[..., 2] = 20
    img[: height // 2, : width // 2, 2] = 230
    return img


def decode_index(frame: torch.Tensor) -> int:
    """Frame index from a (3, H, W) frame in uint8, [0, 1] or [-1, 1] (symmetric) form."""
    x = frame.to(torch.float32)
    if frame.dtype == torch.uint8:
        x = x / 255.0
    elif x.min() < -0.01:
        x = (x + 1.0) / 2.0
    r = float(x[0].median()) * 255.0
    g = float(x[1].median()) * 255.0
    lo = int(round((r - BASE) / STEP))
    hi = int(round((g - BASE) / STEP))
    return hi * 16 + lo


def top_left_marked(frame: torch.Tensor) -> bool:
    """True if the blue marker sits in the top-left quadrant (i.e. the frame is upright)."""
    x = frame.to(torch.float32)
    _, h, w = x.shape
    q = {
        "tl": x[2, : h // 2, : w // 2].mean(),
        "tr": x[2, : h // 2, w // 2:].mean(),
        "bl": x[2, h // 2:, : w // 2].mean(),
        "br": x[2, h // 2:, w // 2:].mean(),
    }
    return max(q, key=q.get) == "tl"


def write_clip(
    path: Path,
    *,
    n: int | None = None,
    rate: Fraction | int = 25,
    times_ms: list[int] | None = None,
    size: tuple[int, int] = (32, 24),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    audio_seconds: float | None = None,
    audio_rate: int = 16000,
    audio_codec: str = "aac",
    gop: int | None = None,
) -> Path:
    """Write a clip whose frame i shows :func:`index_image`. Either ``n`` frames at constant ``rate`` or frames at
    ``times_ms`` (variable rate, millisecond timestamps). Optional audio track (a sine).

    ``rotation`` mimics a phone: the upright picture (``size`` is its display size) is stored turned by
    -rotation, with a display matrix of +rotation degrees; FFmpeg's convention is that a player turns the coded
    picture counter-clockwise by the display-matrix angle (ffmpeg's autorotate inserts transpose=clock for -90).
    """
    quarter = (rotation or 0) // 90 % 4
    w, h = size
    if quarter % 2:
        w, h = h, w  # coded size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            s.options = {"crf": "0", "preset": "ultrafast"}
        if gop is not None:
            s.codec_context.gop_size = gop
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = None
        if audio_seconds is not None:
            a = c.add_stream(audio_codec, rate=audio_rate, layout="stereo")
        count = len(times_ms) if times_ms is not None else n
        for i in range(count):
            upright = index_image(i, *size)
            coded = np.ascontiguousarray(np.rot90(upright, k=-quarter)) if quarter else upright  # undo the display turn
            f = av.VideoFrame.from_ndarray(coded, format="rgb24")
            if times_ms is not None:
                f.pts = times_ms[i]
                f.time_base = Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            total = int(round(audio_seconds * audio_rate))
            t = np.arange(total) / audio_rate
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            frame_size = a.codec_context.frame_size or 1024
            for off in range(0, total, frame_size):
                chunk = np.stack([wave[off:off + frame_size]] * 2)
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
                fr.sample_rate = audio_rate
                fr.pts = off
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def decoded_times(path: Path) -> list[Fraction]:
    """Presentation times (from the stream start) of every frame, from a bare PyAV pass: the ground truth."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        origin = Fraction(s.start_time or 0) * s.time_base
        return [Fraction(f.pts) * s.time_base - origin for f in c.decode(s)]


def expected_indices(times: list[Fraction], fps: int, n: int, start: Fraction = Fraction(0)) -> list[int]:
    """Brute-force reference of the rule: last frame with time <= start + k/fps (first frame if none)."""
    out = []
    for k in range(n):
        target = start + Fraction(k, fps)
        idx = 0
        for i, t in enumerate(times):
            if t <= target:
                idx = i
        out.append(idx)
    return out
