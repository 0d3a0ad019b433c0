"""Encode an IMAGE batch into a small H.264 file, so frames that came without a file can still be muxed."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import torch


def write_frames(path: str | os.PathLike, images: torch.Tensor, fps: float, *, crf: int = 18) -> None:
    """``images`` ``(B, H, W, C)`` float 0..1 (a ComfyUI IMAGE) → H.264 yuv420p at ``fps`` (sizes rounded down to
    even, as yuv420p needs)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (B, H, W, C) batch, got {tuple(images.shape)}")
    b, h, w = images.shape[:3]
    h2, w2 = max(2, h - h % 2), max(2, w - w % 2)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i in range(b):
            rgb = (images[i, :h2, :w2, :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            if rgb.shape[-1] == 1:
                rgb = np.repeat(rgb, 3, axis=-1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
