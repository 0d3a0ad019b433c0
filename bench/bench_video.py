"""Benchmark the streaming video loader.

1. Speed: decode + timestamp-resample 10 s of 720p to both rates (8 fps semantic, 25 fps sync, 224x224) versus a
   bare PyAV decode of the same file (no colour conversion at all). Target: ratio <= 1.5.
   The main figure uses the frame specs the pipeline and nodes really ask for (``generation.frame_specs`` for the
   default encoders: uint8 frames, each encoder normalises its own batches); the loader's float defaults
   ([0, 1] semantic, [-1, 1] sync, 4x the memory) are timed beside it.
   The synthetic clip is generated (``--short`` seconds); ``--clip PATH`` (repeatable) measures your own videos
   the same way, e.g. camera footage, whose higher bitrate makes the bare decode dearer and the ratio smaller.
   Runs are paired and interleaved (bare, load, bare, load, ...) and each pair gives two ratios: wall time and
   process CPU time (all threads, including FFmpeg's decoder threads). On a shared machine the wall ratio moves
   with whatever else runs; the CPU-time ratio is the steadier measure of the work added. The load average is
   printed before and after so a reader can judge how busy the machine was.
2. Memory: peak RSS (ru_maxrss) of a fresh process that loads a 60 s 1080p file, next to a process that only
   decodes it bare, and the size of the output tensors themselves.

The clips are generated with PyAV (libx264) into a temporary folder first.

    python bench/bench_video.py [--short 10] [--long 60] [--fps 30000/1001] [--clip my.mp4] [--json out.json]
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


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call; CPU time counts every thread of this process."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def paired(base, other, repeats: int) -> dict:
    """Interleaved runs of ``base`` and ``other``; medians of the per-pair wall and CPU ratios."""
    pairs = [(timed(base), timed(other)) for _ in range(repeats)]
    wall_r = [o[0] / b[0] for b, o in pairs]
    cpu_r = [o[1] / b[1] for b, o in pairs]
    return {
        "base_wall_s_median": round(median([b[0] for b, _ in pairs]), 3),
        "base_cpu_s_median": round(median([b[1] for b, _ in pairs]), 3),
        "wall_s_median": round(median([o[0] for _, o in pairs]), 3),
        "cpu_s_median": round(median([o[1] for _, o in pairs]), 3),
        "wall_ratio_median_paired": round(median(wall_r), 3),
        "cpu_ratio_median_paired": round(median(cpu_r), 3),
        "wall_ratio_of_best": round(min(o[0] for _, o in pairs) / min(b[0] for b, _ in pairs), 3),
        "wall_ratios": [round(r, 3) for r in wall_r],
        "cpu_ratios": [round(r, 3) for r in cpu_r],
    }


_CHILD = r"""
import resource, sys, json, time
mode, path = sys.argv[1], sys.argv[2]
import torch, av
from kling_foley_core.video import load_video, FrameSpec
t = time.perf_counter()
out = {}
if mode == "load":
    v = load_video(path)
    out["output_mb"] = sum(fs.frames.numel() * fs.frames.element_size() for fs in v.streams.values()) / 2**20
elif mode == "load_specs":
    specs = {k: FrameSpec(**d) for k, d in json.loads(sys.argv[3]).items()}
    v = load_video(path, **specs)
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


def child(mode: str, path: Path, *extra: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), *extra], capture_output=True, text=True,
                       cwd=str(root), check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def pipeline_specs() -> dict:
    """The frame specs the pipeline/nodes request for the default encoders (MetaCLIP 224 px, Synchformer)."""
    from types import SimpleNamespace

    from kling_foley_core.generation import frame_specs

    semantic, sync = frame_specs(SimpleNamespace(fps=8.0, image_size=224, resize_mode="shortest"),
                                 SimpleNamespace(fps=25.0, image_size=224))
    return {"semantic": semantic, "sync": sync}


def spec_json(specs: dict) -> str:
    return json.dumps({k: {"fps": float(v.fps), "size": v.size, "resize": v.resize, "output": v.output,
                           "min_frames": v.min_frames} for k, v in specs.items()})


def clip_info(path: Path) -> dict:
    from kling_foley_core.video import probe_video

    info = probe_video(path)
    with av.open(str(path)) as c:
        bitrate = c.bit_rate
    return {"path": path.name, "codec": info.codec, "size": [info.width, info.height], "fps": str(info.fps),
            "duration_s": round(info.duration or 0.0, 3), "kbit_s": round((bitrate or 0) / 1000)}


def speed(path: Path, args, specs: dict) -> dict:
    """Paired runs on one clip: bare decode vs the pipeline's specs (uint8), and vs the loader's float defaults."""
    from kling_foley_core.video import load_video

    n_frames = bare_decode(path)  # warm the page cache
    load_video(path, **specs)  # warm up torch/swscale
    bare = lambda: bare_decode(path)  # noqa: E731
    # paired, interleaved runs: on a shared machine the load drifts, so compare each run with its neighbour
    load_before = list(os.getloadavg())
    main_run = paired(bare, lambda: load_video(path, interpolation=args.interpolation, **specs), args.repeats)
    v = load_video(path, **specs)
    out = {**clip_info(path), "decoded_frames": n_frames,
           "semantic": [*v.semantic.frames.shape, str(v.semantic.frames.dtype)],
           "sync": [*v.sync.frames.shape, str(v.sync.frames.dtype)],
           "interpolation": args.interpolation, "load_average_before": load_before, **main_run}
    variants = {"float outputs (loader defaults)": dict(interpolation=args.interpolation)}
    if args.variants:
        variants["workers=0"] = dict(workers=0, **specs)
        variants.update({i: dict(interpolation=i, **specs) for i in ("bicubic", "bilinear", "area")
                         if i != args.interpolation})
    out["variants"] = {
        name: {k: r[k] for k in ("wall_ratio_median_paired", "cpu_ratio_median_paired", "cpu_s_median")}
        for name, kw in variants.items()
        for r in [paired(bare, lambda kw=kw: load_video(path, **kw), args.repeats)]
    }
    out["load_average_after"] = list(os.getloadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", type=float, default=10.0, help="seconds of synthetic 720p for the speed test "
                                                               "(0 = skip it)")
    ap.add_argument("--clip", type=Path, action="append", default=[],
                    help="also measure the speed test on this video file (repeatable)")
    ap.add_argument("--long", type=float, default=60.0, help="seconds of 1080p for the memory test (0 = skip)")
    ap.add_argument("--fps", type=Fraction, default=Fraction(30000, 1001), help="synthetic clips' frame rate")
    ap.add_argument("--repeats", type=int, default=7, help="paired runs per variant")
    ap.add_argument("--interpolation", default="bicubic", help="load_video interpolation for the main run")
    ap.add_argument("--variants", action="store_true",
                    help="also time inline conversion (workers=0) and the other interpolations")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    for clip in args.clip:
        if not clip.is_file():
            ap.error(f"--clip: '{clip}' is not a file; pass the path of a video")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    specs = pipeline_specs()
    results: dict = {"load_average_at_start": list(os.getloadavg()), "cpu_count": os.cpu_count(),
                     "specs": json.loads(spec_json(specs)), "speed": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = []
        if args.short > 0:
            t = time.perf_counter()
            clips.append(("synthetic_720p", make_clip(tmp / "720p.mp4", args.short, 1280, 720, args.fps)))
            print(f"generated {args.short:g}s 720p in {time.perf_counter() - t:.1f}s", flush=True)
        clips += [(clip.name, clip) for clip in args.clip]
        for name, path in clips:
            results["speed"][name] = speed(path, args, specs)
            print(json.dumps({name: results["speed"][name]}), flush=True)

        if args.long > 0:
            t = time.perf_counter()
            long = make_clip(tmp / "1080p.mp4", args.long, 1920, 1080, args.fps, grain=False, preset="ultrafast")
            print(f"generated {args.long:g}s 1080p in {time.perf_counter() - t:.1f}s", flush=True)
            results["memory_1080p"] = {
                "seconds_of_video": args.long,
                "bare_decode": child("bare", long),
                "load_video_pipeline_specs_uint8": child("load_specs", long, spec_json(specs)),
                "load_video_float32": child("load", long),
                "load_video_fp16": child("load_fp16", long),
                "full_frames_float32_mb": round(args.long * float(args.fps) * 1920 * 1080 * 3 * 4 / 2**20),
            }
            print(json.dumps(results["memory_1080p"]), flush=True)
    results["load_average_at_end"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
