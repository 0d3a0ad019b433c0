"""Is a generated hit's level error the model's mean or the draw? Two draws of every held-out clip, compared hit by hit.

    python bench/bench_level_spread.py [--model default] [--seed 0] [--n 30] [--cfg 4.5] [--threads 1]

Each clip is generated twice (noise seeds ``seed + i`` and ``seed + 1000 + i``). For every true hit matched in both
draws it takes the eval's peak level (``loudness_error_db``'s window) and prints:
- the median |error| of each draw and of the two draws' mean;
- the correlation of the two draws' errors. Near 1: the model makes the same error each time (its conditional
  mean misses); near 0: the error is the draw's, so a surer or averaged sample would remove it;
- the error's spread between clips and within a clip, and its mean per sound class.
"""
from __future__ import annotations

import argparse

import numpy as np


def hit_levels(x: np.ndarray, clip) -> dict[int, tuple[float, float]]:
    """{true event index: (true peak dB, generated peak dB)} over the hits the onset matcher pairs, with the eval's
    own level windows (``clip_fidelity``)."""
    from kling_foley_core.evaluation.fidelity import clip_fidelity
    from kling_foley_core.evaluation.onsets import detect_onsets, match_onsets

    est = detect_onsets(x, clip.sample_rate)
    pairs = match_onsets(np.array([e.time for e in clip.events], np.float64), est, 0.04)
    fid = clip_fidelity(x, clip, est, pairs)
    return {ri: (t, t + d) for (ri, _), t, d in zip(pairs, fid.true_levels_db, fid.level_diffs_db)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="'default' or a weights folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from kling_foley_core.cli_eval import load_model_pipeline, run_model
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip
    from kling_foley_core.evaluation.metrics import _audio_array, _fit_length

    pipe = load_model_pipeline(a.model)
    bank = load_bank()
    clips = [c for c in (generate_clip(bank, seed=a.seed, index=i, split="heldout") for i in range(a.n)) if c.events]
    draws = []
    for s0 in (a.seed, a.seed + 1000):
        audio = run_model(pipe, clips, steps=a.steps, cfg=a.cfg, sampler="euler", seed=s0, prompt=False)
        draws.append([hit_levels(_fit_length(_audio_array(x, "audio", c.sample_rate), c.audio.shape[-1]), c)
                      for x, c in zip(audio, clips)])
    keys = [(ci, ri) for ci in range(len(clips)) for ri in draws[0][ci] if ri in draws[1][ci]]
    if len(keys) < 3:
        print(f"only {len(keys)} hits matched in both draws; use more clips")
        return 1
    true = np.array([draws[0][ci][ri][0] for ci, ri in keys])
    ea = np.array([draws[0][ci][ri][1] for ci, ri in keys]) - true
    eb = np.array([draws[1][ci][ri][1] for ci, ri in keys]) - true
    clip_of = np.array([ci for ci, _ in keys])
    clip_mean = {c: float(ea[clip_of == c].mean()) for c in np.unique(clip_of)}
    within = ea - np.array([clip_mean[c] for c in clip_of])
    print(f"{a.model}, seed {a.seed}, cfg {a.cfg:g}: {len(keys)} hits matched in both draws of {len(clips)} clips")
    print(f"median |error|: draw 1 {np.median(np.abs(ea)):.2f} dB, draw 2 {np.median(np.abs(eb)):.2f} dB, "
          f"mean of the draws {np.median(np.abs((ea + eb) / 2)):.2f} dB")
    print(f"correlation of the two draws' errors {np.corrcoef(ea, eb)[0, 1]:.2f}; draw noise s.d. "
          f"{np.std(ea - eb) / np.sqrt(2):.2f} dB of an error s.d. of {ea.std():.2f} dB")
    print(f"true levels s.d. {true.std():.2f} dB; generated {(true + ea).std():.2f} dB; correlation "
          f"{np.corrcoef(true, true + ea)[0, 1]:.2f}")
    print(f"error s.d. between clips {np.std(list(clip_mean.values())):.2f} dB, within a clip {within.std():.2f} dB")
    classes = np.array([clips[ci].events[ri].sound_class for ci, ri in keys])
    for c in np.unique(classes):
        k = classes == c
        print(f"  {c:12s} {int(k.sum()):4d} hits: mean error {ea[k].mean():+.2f} dB, "
              f"median |error| {np.median(np.abs(ea[k])):.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
