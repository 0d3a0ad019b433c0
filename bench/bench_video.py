"""Benchmark the streaming video loader.

1. Speed: decode + timestamp-resample 10 s of 720p to both rates (8 fps semantic, 25 fps sync, 224x224) versus a
   bare PyAV decode of the same file (no colour conversion at all). Target: ratio <= 1.5.
2. Memory: peak RSS (ru_maxrss) of a fresh process that loads a 60 s 1080p file, next to a process that only
   decodes it bare, and the size of the output tensors themselves.

The clips are generated with PyAV (libx264) into a temporary folder first.

    python bench/bench_video.py [--short 10] [--long 60] [--fps 30000/1001] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_clip(path: Path, seconds: float, width: int, height: int, rate: Fraction, *, grain: bool = True,
              preset: str = "veryfast") -> Path:
    """Moving gradient + moving box (+ film grain so the bitrate, and the decode cost, look like camera footage;
    a flat synthetic clip decodes unrealistically fast and would flatter nothing but the baseline)."""
    n = int(seconds * rate)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    base = base.astype(np.int16)  # (H, W, 3)
    rng = np.random.default_rng(0)
    bank = [rng.integers(-4, 5, size=(height, width, 1), dtype=np.int16) for _ in range(7)] if grain else None
    box = max(16, height // 6)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": preset, "crf": "23"}
        s.thread_type = "AUTO"
        for i in range(n):
            img = np.roll(base, shift=(i * 3) % width, axis=1)
            if bank is not None:
                img = img + bank[i % len(bank)]
            img = np.clip(img, 0, 255).astype(np.uint8)
            x0 = (i * 7) % (width - box)
            y0 = (i * 5) % (height - box)
            img[y0:y0 + box, x0:x0 + box] = (255 - (i * 3) % 256, (i * 11) % 256, 128)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def bare_decode(path: Path) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        return sum(1 for _ in c.decode(s))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


_CHILD = r"""
import resource, sys, json, time
mode, path = sys.argv[1], sys.argv[2]
import torch, av
from kling_foley_core.video import load_video
t = time.perf_counter()
out = {}
if mode == "load":
    v = load_video(path)
    out["frames"] = {k: list(fs.frames.shape) for k, fs in v.streams.items()}
    out["output_mb"] = sum(fs.frames.numel() * fs.frames.element_size() for fs in v.streams.values()) / 2**20
elif mode == "load_fp16":
    from dataclasses import replace
    from kling_foley_core.video import SEMANTIC, SYNC
    v = load_video(path, semantic=replace(SEMANTIC, dtype=torch.float16), sync=replace(SYNC, dtype=torch.float16))
    out["output_mb"] = sum(fs.frames.numel() * fs.frames.element_size() for fs in v.streams.values()) / 2**20
else:
    with av.open(path) as c:
        s = c.streams.video[0]; s.thread_type = "AUTO"
        out["frames"] = sum(1 for _ in c.decode(s))
out["seconds"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, path: Path) -> dict:
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path)], capture_output=True, text=True,
                       cwd=str(root), check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", type=float, default=10.0, help="seconds of 720p for the speed test")
    ap.add_argument("--long", type=float, default=60.0, help="seconds of 1080p for the memory test (0 = skip)")
    ap.add_argument("--fps", type=Fraction, default=Fraction(30000, 1001), help="input frame rate")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kling_foley_core.video import load_video

    results: dict = {"input_fps": str(args.fps), "load_average_at_start": list(os.getloadavg()),
                     "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        short = make_clip(tmp / "720p.mp4", args.short, 1280, 720, args.fps)
        print(f"generated {args.short:g}s 720p in {time.perf_counter() - t:.1f}s", flush=True)
        n_frames = bare_decode(short)  # warm the page cache
        load_video(short)  # warm up torch/swscale
        # paired, interleaved runs: on a shared machine the load drifts, so compare each run with its neighbour
        pairs = []
        for _ in range(args.repeats):
            pairs.append((best_of(lambda: bare_decode(short), 1), best_of(lambda: load_video(short), 1)))
        t_bare = min(p[0] for p in pairs)
        t_load = min(p[1] for p in pairs)
        ratios = sorted(b / a for a, b in pairs)
        v = load_video(short)
        results["speed_720p"] = {
            "seconds_of_video": args.short,
            "decoded_frames": n_frames,
            "bare_decode_s": round(t_bare, 3),
            "load_video_s": round(t_load, 3),
            "ratio_of_best": round(t_load / t_bare, 3),
            "ratio_median_paired": round(ratios[len(ratios) // 2], 3),
            "semantic": list(v.semantic.frames.shape),
            "sync": list(v.sync.frames.shape),
        }
        results["speed_720p"]["load_video_inline_resize_s"] = round(
            best_of(lambda: load_video(short, workers=0), args.repeats), 3)
        print(json.dumps(results["speed_720p"]), flush=True)

        if args.long > 0:
            t = time.perf_counter()
            long = make_clip(tmp / "1080p.mp4", args.long, 1920, 1080, args.fps, grain=False, preset="ultrafast")
            print(f"generated {args.long:g}s 1080p in {time.perf_counter() - t:.1f}s", flush=True)
            results["memory_1080p"] = {
                "seconds_of_video": args.long,
                "bare_decode": child("bare", long),
                "load_video": child("load", long),
                "load_video_fp16": child("load_fp16", long),
                "full_frames_float32_mb": round(args.long * float(args.fps) * 1920 * 1080 * 3 * 4 / 2**20),
            }
            print(json.dumps(results["memory_1080p"]), flush=True)
    results["load_average_at_end"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
