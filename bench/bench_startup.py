"""Benchmark start-up: how long the command line takes before it can say anything, against importing torch.

Measured in one run, interleaved (torch, validate, missing file, torch, ...), each a fresh process:

1. ``python -c "import torch"``: the floor any torch program pays.
2. ``kling-foley run workflows/video_to_audio_default.json --validate-only``: load, validate, print. Target <= 1.5x (1).
3. ``kling-foley generate missing.mp4``: an argument error. Target <= 1.5x (1).
4. ``kling-foley generate CLIP`` on an 8-s clip (320x240, 25 fps): the whole process against its work, the
   runner's own "ran N node(s) ... in X s" (loading the models, and the imports they need, included). Target <= 2x.

Each child also reports whether diffusers or transformers were imported (they should be only when a model is
built, i.e. in 4). The load average is printed before and after.

    python bench/bench_startup.py [--repeats 3] [--steps 25] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY_PROBE = ("import sys\nfrom kling_foley_core.cli import main\ncode = main(sys.argv[1:])\n"
               "print('HEAVY', [m for m in ('diffusers', 'transformers') if m in sys.modules], file=sys.stderr)\n"
               "sys.exit(code)")  # what the kling-foley console script runs, plus a look at sys.modules


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t, proc


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def heavy(proc: subprocess.CompletedProcess) -> str:
    m = re.search(r"HEAVY (\[.*\])", proc.stderr)
    return m.group(1) if m else "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_video import make_clip

    py = sys.executable
    cli = [py, "-c", HEAVY_PROBE]
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip8s.mp4", 8.0, 320, 240, Fraction(25), grain=False)
        cases = {
            "import torch": [py, "-c", "import torch"],
            "run --validate-only": cli + ["run", "workflows/video_to_audio_default.json", "--validate-only"],
            "generate missing.mp4": cli + ["generate", str(Path(tmp) / "missing.mp4")],
        }
        rows: dict = {name: [] for name in cases}
        imports: dict = {}
        for _ in range(args.repeats):
            for name, cmd in cases.items():
                seconds, proc = timed(cmd)
                rows[name].append(seconds)
                imports[name] = heavy(proc) if name != "import torch" else "-"
        gen_total, gen_work = [], []
        for k in range(args.repeats):
            seconds, proc = timed(cli + ["generate", str(clip), "--steps", str(args.steps), "--output-dir",
                                         str(Path(tmp) / f"out{k}")])
            m = re.search(r"in ([0-9.]+) s", proc.stdout)
            if proc.returncode != 0 or m is None:
                print(f"generate failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
                return 1
            gen_total.append(seconds)
            gen_work.append(float(m.group(1)))
            imports["generate 8 s"] = heavy(proc)
    torch_s = median(rows["import torch"])
    result = {"load_average_after": os.getloadavg(), "import_torch_s": round(torch_s, 3)}
    print(f"{'case':24s} {'median s':>9s} {'x torch':>8s}  heavy imports")
    for name, xs in rows.items():
        ratio = median([x / t for x, t in zip(xs, rows["import torch"])])
        result[name] = {"median_s": round(median(xs), 3), "ratio_to_torch": round(ratio, 3),
                        "heavy_imports": imports[name]}
        print(f"{name:24s} {median(xs):9.2f} {ratio:8.2f}  {imports[name]}")
    ratio = median([t / w for t, w in zip(gen_total, gen_work)])
    result["generate_8s"] = {"total_s": round(median(gen_total), 3), "work_s": round(median(gen_work), 3),
                             "total_over_work": round(ratio, 3), "heavy_imports": imports["generate 8 s"]}
    print(f"{'generate 8 s':24s} {median(gen_total):9.2f}  work {median(gen_work):.2f} s, total/work "
          f"{ratio:.2f}  {imports['generate 8 s']}")
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
