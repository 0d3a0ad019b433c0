"""How close can any model that sees only the picture get to the held-out hits' decay times?

SynthHits gives each object a recording drawn at random from its class, and an object's look depends on its class
only, so a hit's decay time is knowable from the video up to its class. This prints the eval's ``decay_error``
(median relative error of the time to fall 30 dB, the same hits ``eval synthhits`` scores) for predictors that know
the class of every hit exactly:

- **class median (train recordings)**: each class's median decay time over its *train* recordings, each played
  alone;
- **class median (train clips)**: each class's median over the scored hits of train-split clips (seeds the
  training sets did not use): what a model that learned each class's typical tail in the mix would reach;
- **best constant per class (oracle)**: for each class the single decay time that minimises the median absolute
  relative error on the held-out hits themselves, a lower bound for any predictor that knows only the class.

    python bench/bench_decay_bound.py --seeds 0 1 2 3 4 --n 30
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np


def recording_decay(audio: np.ndarray, sr: int, max_tail: float = 1.0) -> float | None:
    from kling_foley_core.evaluation.fidelity import decay_time

    x = np.asarray(audio, np.float64)[None]
    t, fell = decay_time(x, sr, 0.0, min(max_tail, x.shape[-1] / sr))
    return t if fell and t > 0 else None


def scored_hits(clips) -> list[tuple[str, float, float]]:
    """(class, window, true decay) of every hit the eval scores for decay."""
    from kling_foley_core.evaluation.fidelity import true_decay

    out = []
    for clip in clips:
        sr = clip.sample_rate
        true = np.asarray(clip.audio, np.float64)
        times = np.sort(np.array([e.time for e in clip.events], np.float64))
        for e in clip.events:
            s = true_decay(true, sr, times, float(e.time))
            if s is not None:
                out.append((e.sound_class, s[0], s[1]))
    return out


def rel_errors(hits, decay_of: dict) -> np.ndarray:
    # a predicted tail longer than the window is cut there, as a generated one is
    return np.array([(min(decay_of[c], w) - t) / t for c, w, t in hits if c in decay_of])


def best_constant(hits) -> dict:
    by = defaultdict(list)
    for c, w, t in hits:
        by[c].append((w, t))
    best = {}
    for c, wt in by.items():
        cands = sorted({t for _, t in wt})
        errs = [np.median([abs(min(d, w) - t) / t for w, t in wt]) for d in cands]
        best[c] = cands[int(np.argmin(errs))]
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--n", type=int, default=30, help="held-out clips per seed (the eval's --n)")
    p.add_argument("--train-clips", type=int, default=200, help="train-split clips for the in-mix class medians")
    a = p.parse_args(argv)
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip

    bank = load_bank()
    train = {}
    for c in bank.classes():
        ds = [d for r in bank.select("train", c) if (d := recording_decay(r.audio, bank.sample_rate)) is not None]
        if ds:
            train[c] = float(np.median(ds))
    by = defaultdict(list)
    for c, _, t in scored_hits(generate_clip(bank, seed=100, index=i, split="train") for i in range(a.train_clips)):
        by[c].append(t)
    mix = {c: float(np.median(v)) for c, v in by.items()}
    for name, d in (("train recordings", train), ("train clips", mix)):
        print(f"class median decay ({name}): " + ", ".join(f"{c} {1000 * v:.0f} ms" for c, v in sorted(d.items())))
    print("| seed | scored hits | class median, train recordings: decay (|decay|) | class median, train clips "
          "| best constant per class (oracle) |")
    print("|---|---|---|---|---|")
    for seed in a.seeds:
        clips = [generate_clip(bank, seed=seed, index=i, split="heldout") for i in range(a.n)]
        hits = scored_hits(clips)
        cells = []
        for e in (rel_errors(hits, train), rel_errors(hits, mix), rel_errors(hits, best_constant(hits))):
            cells.append(f"{100 * np.median(e):+.0f} % ({100 * np.median(np.abs(e)):.0f} %)")
        print(f"| {seed} | {len(hits)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
