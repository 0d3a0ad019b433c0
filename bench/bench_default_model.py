"""The default model (foley-tiny): end-to-end speed on an 8 s clip, and its SynthHits scores on held-out recordings.

    python bench/bench_default_model.py [--weights DIR] [--n 100] [--seed 0] [--steps 25] [--cfg 4.5]
                                        [--speed-only | --eval-only] [--json OUT.json] [--threads N]

Speed: an 8 s SynthHits clip (held-out recordings) is written as an mp4, then timed end to end as a user runs
it: load the video file → encode → 25 Euler steps with batched CFG → Mel-VAE decode → Mono2Stereo → Griffin-Lim
per channel → mux into a new mp4. Reports the median wall and CPU time of ``--repeats`` runs after a warm-up (the
one-off model loading is reported separately).

Scores: the evaluation module's table (onset F1 at ±40 ms, mean |offset|, timbre accuracy with the independent
classifier, pan error, false-sound rate) for the model beside the two reference rows (ground-truth audio, and
ground-truth audio shuffled across clips), on ``--n`` fresh held-out clips of seed ``--seed``. The same numbers
as ``kling-foley eval synthhits --model default``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _speed(pipe, repeats: int, steps: int, cfg: float) -> dict:
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip, write_mp4
    from kling_foley_core.mux import mux_audio

    bank = load_bank()
    clip = generate_clip(bank, seed=12345, index=0, split="heldout", duration=8.0)
    walls, cpus, stages = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        src = write_mp4(clip, Path(tmp) / "clip.mp4")
        for r in range(repeats + 1):
            out = Path(tmp) / f"out{r}.mp4"
            t0, c0 = time.perf_counter(), time.process_time()
            res = pipe(str(src), num_inference_steps=steps, guidance_scale=cfg, seed=r)
            t1 = time.perf_counter()
            mux_audio(src, res.waveform[0], res.sample_rate, out)
            if r:  # the first run is a warm-up
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                stages.append({"generate": t1 - t0, "mux": time.perf_counter() - t1})
            assert out.is_file() and res.waveform.shape[:2] == (1, 2)
    return {"seconds_audio": 8.0, "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "generate_s": statistics.median(s["generate"] for s in stages),
            "mux_s": statistics.median(s["mux"] for s in stages), "steps": steps, "cfg": cfg}


def _scores(pipe, n: int, seed: int, steps: int, cfg: float, captions: bool) -> tuple[str, list[dict]]:
    from kling_foley_core.cli_eval import run_model
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip
    from kling_foley_core.evaluation.metrics import evaluation_table
    from kling_foley_core.evaluation.timbre import get_timbre_classifier

    bank = load_bank()
    clips = [generate_clip(bank, seed=seed, index=i, split="heldout") for i in range(n)]
    audio = run_model(pipe, clips, steps=steps, cfg=cfg, sampler="euler", seed=seed, prompt=captions)
    table, reports = evaluation_table({"foley-tiny": audio}, clips, classifier=get_timbre_classifier(bank), seed=seed)
    return table, [r.as_dict() for r in reports]


def _compare_speed(folders, args) -> int:
    """Several weights folders timed in one run: ``--repeats`` rounds, each timing every folder once in turn."""
    from kling_foley_core.default_model import default_pipeline

    pipes = [default_pipeline("cpu", directory=f) for f in folders]
    runs: dict[int, list[dict]] = {i: [] for i in range(len(pipes))}
    for _ in range(args.repeats):
        for i, pipe in enumerate(pipes):
            runs[i].append(_speed(pipe, 1, args.steps, args.cfg))
    result = {}
    base = None
    for i, folder in enumerate(folders):
        wall = statistics.median(r["wall_s"] for r in runs[i])
        gen = statistics.median(r["generate_s"] for r in runs[i])
        base = base or wall
        result[str(folder)] = {"wall_s": wall, "generate_s": gen, "ratio": wall / base}
        print(f"{folder}: 8 s clip, video file -> muxed mp4: wall {wall:.2f} s (generate {gen:.2f} s), "
              f"{wall / base:.2f}x the first")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, action="append", default=None,
                    help="weights folder (default: the shipped one); repeat it to time several builds in one run "
                         "(their speed runs alternate, so load changes hit each alike; ratios against the first)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--with-captions", action="store_true", help="also give the model each clip's caption")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from kling_foley_core.default_model import default_pipeline

    folders = args.weights or [None]
    if len(folders) > 1:
        return _compare_speed(folders, args)
    t0 = time.perf_counter()
    pipe = default_pipeline("cpu", directory=folders[0])
    result = {"load_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}
    print(f"load: {result['load_s']:.2f} s ({result['threads']} threads)")
    if not args.eval_only:
        result["speed"] = _speed(pipe, args.repeats, args.steps, args.cfg)
        s = result["speed"]
        print(f"8 s clip, video file -> muxed mp4, {args.steps} Euler steps, cfg {args.cfg}: wall {s['wall_s']:.2f} s "
              f"(generate {s['generate_s']:.2f} s, mux {s['mux_s']:.2f} s), CPU {s['cpu_s']:.2f} s")
    if not args.speed_only:
        t1 = time.perf_counter()
        table, reports = _scores(pipe, args.n, args.seed, args.steps, args.cfg, args.with_captions)
        result["scores"] = reports
        print(table)
        print(f"({args.n} held-out clips, seed {args.seed}, {time.perf_counter() - t1:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
