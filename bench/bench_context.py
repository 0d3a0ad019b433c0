"""Benchmark known-audio generation (FoleyGenEx modes) against plain V2A, in one run, interleaved.

For an 8-s SynthHits clip (held-out recordings) and the default model, the pipeline runs plain V2A, Foley extension
(the first 40 % of the true soundtrack given), reference audio (a 2-s reference prepended) and editing (a 2-s
window regenerated, with the latent inversion), rounds interleaved so machine noise hits every mode alike. Each
figure is the median wall time of a whole ``pipe(...)`` call (video decode, encoders, sampling, decode, vocoder).
Targets (issue "Audio-conditioned generation"): context ≤ 1.2× plain, editing ≤ 2.5× plain.

    python bench/bench_context.py [--repeats 5] [--steps 25] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="foley-tiny", help="pipeline folder or short name (default foley-tiny)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip, write_mp4
    from kling_foley_core.pipeline import KlingFoleyPipeline

    pipe = KlingFoleyPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    bank = load_bank()
    clip = next(c for c in (generate_clip(bank, seed=0, index=i, split="heldout", duration=8.0) for i in range(50))
                if c.has_hits)
    sr = clip.sample_rate
    audio = torch.from_numpy(clip.audio).float()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.mp4"
        write_mp4(clip, video)
        common = dict(num_inference_steps=args.steps, seed=0)
        modes = {
            "v2a": dict(),
            "fe (40 % given)": dict(audio=audio[:, :int(0.4 * audio.shape[1])], audio_sample_rate=sr,
                                    audio_mode="continue"),
            "ac-vta (2-s reference)": dict(audio=audio[:, :2 * sr], audio_sample_rate=sr, audio_mode="reference"),
            "edit (2-s window)": dict(audio=audio, audio_sample_rate=sr, audio_mode="edit", edit_start=3.0,
                                      edit_end=5.0),
        }
        pipe(video, **common)  # warm-up (first-call allocations, lazy imports)
        times = {name: [] for name in modes}
        for _ in range(args.repeats):
            for name, kw in modes.items():
                t = time.perf_counter()
                pipe(video, **common, **kw)
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["v2a"])
    rows = []
    print(f"{clip.duration:.1f}-s clip, {args.steps} steps, {args.threads} threads, {args.repeats} interleaved rounds")
    print(f"{'mode':26s} {'median s':>9s} {'x v2a':>7s} {'target':>7s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = None if name == "v2a" else (2.5 if name.startswith("edit") else 1.2)
        rows.append({"mode": name, "median_s": med, "ratio": med / base, "target": target, "times": ts})
        print(f"{name:26s} {med:9.3f} {med / base:7.2f} {'' if target is None else f'<= {target}':>7s}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
