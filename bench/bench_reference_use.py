"""Does a model read the reference? Its AC-VTA training loss with a reference of the clip's sound class vs another's.

    python bench/bench_reference_use.py RUN/final [RUN2/final ...] --data SET --cache CACHE [--batches 12]

For each ``train_foley`` final folder (the run's ``config.json`` beside it gives the sizes and the vocabulary) it
builds ``--batches`` batches of AC-VTA examples from ``SET``'s swapped one-class clips, exactly as
``train_foley --reference-prob`` does, and takes the masked flow loss of each with the same noise and times
(three draws each), once with a train recording of the clip's own sound class in front and once with a recording of
another class, with the sync stream kept and with it dropped. A model that copies the reference's timbre has a
clearly higher loss with the wrong class (the gap, in %); a model that ignores the reference has none. The set must
hold clips rendered with ``synthhits --p-swap-sound 1 --objects 1 1``.

With ``--teacher TWINS`` (the feature cache of the set's twins, ``synthhits --look-of-sound``) the loss is the one
``train_foley --reference-teacher`` trains: against the V2A velocity of each clip's twin, the model being its own
teacher (an adapter run leaves V2A as it was). A last column then gives the part of that target the look's class
makes: the same V2A velocity with the clip's own (swapped) look in place of the twin's, against the twin's.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("finals", nargs="+", type=Path,
                   help="train_foley final folders (RUN/final) or exported checkpoints (training.export)")
    p.add_argument("--data", type=Path, required=True, help="a SynthHits set with swapped one-class clips")
    p.add_argument("--cache", type=Path, required=True, help="its feature cache (48-px frames)")
    p.add_argument("--vae", type=Path, default=Path(__file__).resolve().parents[1] /
                   "kling_foley_core/default_model/weights/vae")
    p.add_argument("--recordings", type=Path, default=None, help="recording bank (default: SynthHits' own)")
    p.add_argument("--config", type=Path, default=None,
                   help="the run's config.json (default: beside each folder, RUN/config.json)")
    p.add_argument("--teacher", type=Path, default=None, metavar="TWINS",
                   help="feature cache of the set's twins: score the distillation loss (train_foley "
                        "--reference-teacher) instead of the flow loss")
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args(argv)
    import torch

    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE
    from kling_foley_core.reference import SYNC_STRIDE_S
    from kling_foley_core.sampling.flow_matching import masked_flow_matching_loss
    from kling_foley_core.training import train_foley as T
    from kling_foley_core.training.cache_set import open_caches
    from kling_foley_core.training.dataset import FeatureCache, encode_latents
    from kling_foley_core.training.reference_examples import (ReferenceBank, reference_batch, reference_clips,
                                                              reference_example, reference_frames, reference_strides)

    torch.set_grad_enabled(False)
    cache = open_caches([a.data], [a.cache], image_size=48)
    vae = KlingMelVAE.from_pretrained(str(a.vae)).eval()
    lat = cache.latents(encode_latents(cache, vae))
    pool = reference_clips(cache.clips)
    if len(pool) < a.batch_size:
        raise SystemExit(f"--data {a.data}: {len(pool)} swapped one-class clips, fewer than --batch-size "
                         f"{a.batch_size}; render a set with `synthhits --p-swap-sound 1 --objects 1 1`")
    sound = [cache.clips[int(i)]["events"][0]["sound_class"] for i in range(len(cache))]
    classes = sorted({sound[int(i)] for i in pool})
    bank = load_bank(a.recordings, fetch=False)
    print(f"{'model':<40} {'right':>8} {'wrong':>8} {'gap %':>7} {'right, no sync':>15} {'wrong, no sync':>15} "
          f"{'gap %':>7}" + (f" {'look class':>10}" if a.teacher else ""))
    for final in a.finals:
        cfg = json.loads((a.config or final.parent / "config.json").read_text())
        parts = T.build_parts(cfg["vocabulary"], cfg["overrides"], 0, cfg["sizes"])
        T.load_parts(parts, final)
        tr = parts.transformer.eval()
        if tr.context_embed is None:
            raise SystemExit(f"{final}: no context pathway (transformer.context_input); nothing reads a reference")
        refs = ReferenceBank.build(bank, classes, vae, tr, per_class=16, seed=7)
        objective = T.FoleyObjective(parts, 0.0, 0.0, 0.0, None, 0.0, 0.0, 4.0)
        loss = {k: [] for k in ("right", "wrong", "right_nosync", "wrong_nosync", "look")}
        teacher, taught = None, pool
        if a.teacher is not None:
            from kling_foley_core.training.reference_teacher import ReferenceTeacher

            teacher = ReferenceTeacher(parts, FeatureCache(a.teacher), [cache.clips[int(i)] for i in pool])
            taught = pool[teacher.taught]
        for k in range(a.batches):
            g = torch.Generator().manual_seed(k)
            strides = reference_strides(g)
            idx = reference_batch(cache.durations, taught, a.batch_size, g)
            d = T.batch_duration(cache, idx, g, 2.0, float(tr.config.max_duration) - strides * SYNC_STRIDE_S)
            b = T.load_batch(cache, lat, idx, tr, g, parts.text_encoder, d)
            _, sync_f = objective.encode_video(b["sem"], b["sync"])
            right = [sound[int(i)] for i in idx]
            shift = 1 + k % (len(classes) - 1)  # another class, a different one each batch
            wrong = [classes[(classes.index(c) + shift) % len(classes)] for c in right]
            frames = reference_frames(strides, tr.latent_rate)
            if teacher is not None:
                lens = tr.sequence_lengths(d)
                twins = teacher.frames([cache.clips[int(i)] for i in idx], lens.clip, T.sync_frame_count(lens))
            for name, names, drop in (("right", right, False), ("wrong", wrong, False),
                                      ("right_nosync", right, True), ("wrong_nosync", wrong, True)):
                ref = refs.draw(names, frames, torch.Generator().manual_seed(100 + k))
                drops = torch.full((len(idx),), drop)
                cond, x, known = reference_example(tr, ref, b["x1"], sync_f, d, strides, drops)
                target = None if teacher is None else teacher.flow(objective.encode_video, *twins, drops, d, frames)
                loss[name].append(np.mean([float(masked_flow_matching_loss(
                    lambda xt, t: tr.predict_flow(xt, t, cond), x, known, teacher=target,
                    generator=torch.Generator().manual_seed(1000 * k + r))) for r in range(3)]))
            if teacher is not None:  # the look's class: V2A of the clip's own look against its twin's
                keep = torch.zeros(len(idx), dtype=torch.bool)
                own = teacher.flow(objective.encode_video, b["sem"], b["sync"], keep, d, frames)
                target = teacher.flow(objective.encode_video, *twins, keep, d, frames)
                loss["look"].append(np.mean([float(masked_flow_matching_loss(
                    own, x, known, teacher=target, generator=torch.Generator().manual_seed(1000 * k + r)))
                    for r in range(3)]))
        m = {k: float(np.mean(v)) if v else float("nan") for k, v in loss.items()}
        label = "/".join(final.parts[-2:])[-40:]
        print(f"{label:<40} {m['right']:8.4f} {m['wrong']:8.4f} {100 * (m['wrong'] / m['right'] - 1):7.2f} "
              f"{m['right_nosync']:15.4f} {m['wrong_nosync']:15.4f} {100 * (m['wrong_nosync'] / m['right_nosync'] - 1):7.2f}"
              + (f" {m['look']:10.4f}" if teacher is not None else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
