"""Benchmark long videos (issue 17): bounded memory, linear time, real-time factor of the default model.

Every measurement is a fresh process, so peak RSS is that run's own (``ru_maxrss``):

* ``rss``: ``kling-foley generate`` (the default workflow: streamed encoders, windowed Sampler, decode, mux) on
  ``--short`` and ``--long`` seconds of 720p video (default 60 and 600). Target: long / short <= 1.5.
  The sampler's step count does not change memory, so ``--rss-steps`` (default 2) keeps this part short.
* ``time``: the pipeline's generation time (encode, windows, decode, vocode; models loaded before the clock
  starts) on SynthHits clips of ``--durations`` seconds; the fitted exponent of time against length
  (target <= 1.1 from 10 s to 5 min).
* ``rtf``: ``kling-foley generate`` on a ``--rtf-duration`` SynthHits clip at the default settings (25 steps),
  whole command: clip seconds / wall seconds (target >= 3), and the same on 720p when ``--rtf-720p``.

    python bench/bench_long_video.py [--parts rss time rtf] [--short 60] [--long 600] \\
        [--durations 10 30 60 120 300] [--rtf-duration 300] [--json out.json]

Videos are rendered into a temporary folder first (720p: a moving test pattern, H.264 ultrafast). The load
average is printed before and after: on a shared machine, read ratios from one run, not absolute times.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GENERATE = """
import resource, sys, time
from kling_foley_core.cli import main
t = time.perf_counter()
code = main(sys.argv[1:])
print('RESULT', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code, file=sys.stderr)
"""

PIPELINE = """
import resource, sys, time
import torch
from kling_foley_core.default_model import default_pipeline
torch.set_num_threads(int(sys.argv[3]))
pipe = default_pipeline()
pipe.set_progress_bar_config(disable=True)
t = time.perf_counter()
out = pipe(sys.argv[1], num_inference_steps=int(sys.argv[2]))
print('RESULT', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, out.waveform.shape[-1] /
      out.sample_rate, file=sys.stderr)
"""


def run_child(code: str, args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, last field) of a fresh Python process running ``code``."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("RESULT")]
    if proc.returncode or not line:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    _, secs, rss_kb, last = line[-1].split()
    return float(secs), float(rss_kb) / 1024, last


def write_720p(path: Path, seconds: float, fps: int = 25) -> Path:
    """A moving gradient with a bouncing square at 1280x720, H.264 ultrafast (cheap to write, real to decode)."""
    import av
    import numpy as np

    w, h = 1280, 720
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(int(round(seconds * fps))):
            img = np.empty((h, w, 3), np.uint8)
            img[..., 0] = ((x + 3 * i) % 256).astype(np.uint8)
            img[..., 1] = ((y + 2 * i) % 256).astype(np.uint8)
            img[..., 2] = 80
            cx = int((w - 120) * (0.5 + 0.5 * math.sin(i / 17)))
            cy = int((h - 120) * abs(math.sin(i / 11)))
            img[cy:cy + 120, cx:cx + 120] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_synthhits(path: Path, seconds: float, seed: int = 0) -> Path:
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip, write_mp4

    clip = generate_clip(load_bank(), seed=seed, index=0, split="heldout", with_hits=True, duration=seconds)
    write_mp4(clip, path)
    return path


def generate(video: Path, out_dir: Path, steps: int) -> tuple[float, float]:
    secs, rss, code = run_child(GENERATE, ["generate", str(video), "--steps", str(steps), "--output-dir",
                                           str(out_dir), "--no-watermark"])
    if code != "0":
        raise SystemExit(f"generate {video.name} exited {code}")
    return secs, rss


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", choices=["rss", "time", "rtf"], default=["rss", "time", "rtf"])
    ap.add_argument("--short", type=float, default=60.0)
    ap.add_argument("--long", type=float, default=600.0)
    ap.add_argument("--rss-steps", type=int, default=2)
    ap.add_argument("--durations", type=float, nargs="+", default=[10, 30, 60, 120, 300])
    ap.add_argument("--time-steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rtf-duration", type=float, default=300.0)
    ap.add_argument("--rtf-720p", action="store_true", help="also the real-time factor on 720p of that length")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    report: dict = {"load_before": load()}
    print(f"load average before: {report['load_before']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kf_bench_long_") as tmp:
        tmp = Path(tmp)
        if "rss" in args.parts:
            rows = {}
            for name, secs in (("short", args.short), ("long", args.long)):
                t = time.perf_counter()
                video = write_720p(tmp / f"{name}.mp4", secs)
                print(f"rendered {secs:g} s of 720p in {time.perf_counter() - t:.0f} s", flush=True)
                wall, rss = generate(video, tmp / f"out_{name}", args.rss_steps)
                rows[name] = {"seconds": secs, "wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1)}
                print(f"720p {secs:g} s: generate {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)
                video.unlink()
            rows["rss_ratio"] = round(rows["long"]["peak_rss_mb"] / rows["short"]["peak_rss_mb"], 3)
            print(f"peak RSS {args.long:g} s / {args.short:g} s of 720p: {rows['rss_ratio']:.2f} (target <= 1.5)")
            report["rss"] = rows
        if "time" in args.parts:
            points = []
            for secs in args.durations:
                video = write_synthhits(tmp / f"hits_{secs:g}.mp4", secs)
                wall, rss, out_secs = run_child(PIPELINE, [str(video), str(args.time_steps), str(args.threads)])
                points.append({"seconds": secs, "generate_s": round(wall, 2), "peak_rss_mb": round(rss, 1),
                               "output_s": float(out_secs)})
                print(f"SynthHits {secs:g} s: pipeline {wall:.1f} s ({secs / wall:.2f}x real time), peak RSS "
                      f"{rss:.0f} MB", flush=True)
            import numpy as np

            xs = np.log([p["seconds"] for p in points])
            ys = np.log([p["generate_s"] for p in points])
            exponent = float(np.polyfit(xs, ys, 1)[0]) if len(points) > 1 else float("nan")
            print(f"time exponent {args.durations[0]:g}-{args.durations[-1]:g} s: {exponent:.3f} (target <= 1.1)")
            report["time"] = {"points": points, "exponent": round(exponent, 4)}
        if "rtf" in args.parts:
            rows = {}
            video = write_synthhits(tmp / "rtf.mp4", args.rtf_duration, seed=1)
            wall, rss = generate(video, tmp / "out_rtf", 25)
            rows["synthhits"] = {"seconds": args.rtf_duration, "wall_s": round(wall, 1),
                                 "real_time_factor": round(args.rtf_duration / wall, 3), "peak_rss_mb": round(rss, 1)}
            print(f"generate, {args.rtf_duration:g}-s SynthHits clip, 25 steps: {wall:.1f} s = "
                  f"{args.rtf_duration / wall:.2f}x real time (target >= 3)", flush=True)
            if args.rtf_720p:
                video = write_720p(tmp / "rtf720.mp4", args.rtf_duration)
                wall, rss = generate(video, tmp / "out_rtf720", 25)
                rows["720p"] = {"seconds": args.rtf_duration, "wall_s": round(wall, 1),
                                "real_time_factor": round(args.rtf_duration / wall, 3), "peak_rss_mb": round(rss, 1)}
                print(f"generate, {args.rtf_duration:g} s of 720p, 25 steps: {wall:.1f} s = "
                      f"{args.rtf_duration / wall:.2f}x real time", flush=True)
            report["rtf"] = rows
    report["load_after"] = load()
    print(f"load average after: {report['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
