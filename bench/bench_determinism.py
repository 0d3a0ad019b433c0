"""Determinism of the default model (issue 18 item 11): the same seed twice at one thread count, and 1 vs 2 threads.

    python bench/bench_determinism.py [--seconds 8] [--runs 2]

Each run is a fresh process (torch.set_num_threads before anything runs) that generates foley-tiny's audio for the
same held-out SynthHits video with seed 0; the parent compares the waveforms (watermark on, as users get them) and
the latents.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def child(threads: int, seconds: float, out: str) -> None:
    import torch

    torch.set_num_threads(threads)
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import SynthHitsConfig, generate_clip
    from kling_foley_core.default_model import default_pipeline

    config = SynthHitsConfig(min_duration=seconds, max_duration=seconds, p_no_hits=0.0)
    clip = generate_clip(load_bank(), seed=3, index=0, split="heldout", config=config)
    pipe = default_pipeline()
    pipe.set_progress_bar_config(disable=True)
    res = pipe(frames=torch.from_numpy(clip.frames).float() / 255.0, fps=clip.fps, seed=0)
    np.savez(out, waveform=res.waveform.numpy(), latents=res.latents.numpy())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--runs", type=int, default=2, help="runs per thread count")
    p.add_argument("--child", nargs=2, metavar=("THREADS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(int(args.child[0]), args.seconds, args.child[1])
        return 0
    results: dict[int, list] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):  # interleaved, so load changes hit both thread counts alike
            for threads in (1, 2):
                out = str(Path(tmp) / f"t{threads}_{run}.npz")
                t = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--seconds", str(args.seconds), "--child", str(threads), out],
                               check=True)
                results[threads].append(dict(np.load(out)))
                print(f"{threads} thread(s), run {run + 1}: {time.perf_counter() - t:.0f} s", flush=True)
    for threads, runs in results.items():
        same = all(np.array_equal(r["waveform"], runs[0]["waveform"]) and np.array_equal(r["latents"],
                   runs[0]["latents"]) for r in runs[1:])
        print(f"same seed, {threads} thread(s), {len(runs)} runs: bit-identical = {same}")
    a, b = results[1][0], results[2][0]
    for key in ("latents", "waveform"):
        d = np.abs(a[key].astype(np.float64) - b[key])
        print(f"1 vs 2 threads, {key}: max |diff| {d.max():.3g}, mean {d.mean():.3g} (values up to "
              f"{np.abs(a[key]).max():.3g})")
    x, y = a["waveform"].astype(np.float64), b["waveform"].astype(np.float64)
    print(f"1 vs 2 threads: waveform difference at {10 * np.log10(np.sum(x ** 2) / max(np.sum((x - y) ** 2), 1e-30)):.1f}"
          f" dB below the signal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
