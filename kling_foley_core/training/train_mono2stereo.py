"""Train Mono2Stereo (Kling-Foley §4.6) on SynthHits stereo: mono log-mel (+ video features) → left/right log-mels.

The video features are those the pipeline hands Mono2Stereo at inference: the default model's semantic visual
encoder (frozen, from a ``train_foley`` run) on the 8 fps frames. They carry the objects' x-positions, which set
the pan of their hits. Features are computed once per clip, resampled linearly to the clip's mel frames exactly
as :func:`~kling_foley_core.models.mono2stereo.resample_frames` does at inference, and random crops of
``--crop-frames`` frames are drawn from (mono, left, right, features) together. Loss: L1 on the left/right
log-mels (``Mono2Stereo.loss``), i.e. the error of the predicted ratio masks.

    python -m kling_foley_core.training.train_mono2stereo --data DIR --visual-encoder RUN2/final/visual_encoder \\
        --out RUN3 [--steps 1500]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from .common import (cli_main, CHECKPOINTS, EMA, MetricLog, StepCounter, Timer, TrainingError, add_common_args,
                     check_common_args, end_step, lr_at, make_accelerator, progress, resume_from, save_checkpoint,
                     set_lr, step_generator, write_json)
from .cache_set import open_caches
from .dataset import FeatureCache

log = logging.getLogger(__name__)


@torch.no_grad()
def clip_features(cache: FeatureCache, visual_encoder, batch: int = 256) -> list[np.ndarray]:
    """Per-clip semantic features ``(Nc, D)`` of every clip, from the frozen visual encoder."""
    from ..encoders.base import normalize_frames

    out = []
    for i in range(len(cache)):
        fr = torch.from_numpy(cache.sem_frames(i)).permute(0, 3, 1, 2).float().div_(255.0)  # (Nc, 3, S, S)
        feats = [visual_encoder.encode_pixels(normalize_frames(fr[j: j + batch], visual_encoder.mean,
                                                               visual_encoder.std))
                 for j in range(0, len(fr), batch)]
        out.append(torch.cat(feats).float().numpy())
    return out


def crop_batch(cache: FeatureCache, feats: list[np.ndarray] | None, batch: int, frames: int,
               gen: torch.Generator) -> dict:
    from ..models.mono2stereo import resample_frames

    idx = torch.randint(len(cache), (batch,), generator=gen).tolist()
    u = torch.rand(batch, generator=gen).tolist()
    mono, left, right, video = [], [], [], []
    for i, r in zip(idx, u):
        chans = [cache.mel(i, c) for c in ("mono", "left", "right")]  # (80, F) each
        f_total = chans[0].shape[1]
        if f_total < frames:
            chans = [np.pad(c, ((0, 0), (0, frames - f_total)), mode="edge") for c in chans]
        s = int(r * (max(f_total, frames) - frames + 1))
        for lst, c in zip((mono, left, right), chans):
            lst.append(c[:, s: s + frames])
        if feats is not None:
            v = resample_frames(torch.from_numpy(feats[i])[None], f_total)[0]  # (F, D) as at inference
            if f_total < frames:
                v = torch.cat([v, v[-1:].expand(frames - f_total, -1)])
            video.append(v[s: s + frames])
    out = {k: torch.from_numpy(np.stack(v)) for k, v in (("mono", mono), ("left", left), ("right", right))}
    out["video"] = torch.stack(video) if video else None  # (B, frames, D)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.train_mono2stereo",
                                 description="Train Mono2Stereo on SynthHits stereo mels + video features.")
    add_common_args(ap, steps=1500, batch_size=16, lr=1e-3)
    ap.add_argument("--visual-encoder", type=Path, default=None,
                    help="frozen visual tower folder (train_foley's final/visual_encoder); omit for audio-only")
    ap.add_argument("--crop-frames", type=int, default=256, help="mel frames per example (62.5 per second)")
    ap.add_argument("--hidden-dim", type=int, default=64)
    ap.add_argument("--num-layers", type=int, default=4)
    ap.add_argument("--p-drop-video", type=float, default=0.1,
                    help="train the learned 'no video' embedding on this fraction of examples")
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--warmup", type=int, default=50, help="linear learning-rate warm-up steps")
    ap.add_argument("--image-size", type=int, default=48)
    return ap


def run(args) -> Path:
    from ..default_model.components import build_mono2stereo, wrap_visual_tower
    from ..encoders.clip_vit import ClipVisionTower

    check_common_args(args)
    if args.crop_frames < 16:
        raise TrainingError(f"--crop-frames={args.crop_frames} must be >= 16")
    accelerator = make_accelerator()
    out = Path(args.out)
    cache = open_caches(args.data, args.cache, image_size=args.image_size)
    feats, video_dim = None, 0
    if args.visual_encoder is not None:
        if not (Path(args.visual_encoder) / "config.json").is_file():
            raise TrainingError(f"--visual-encoder {args.visual_encoder}: no tower folder (config.json + weights); "
                                f"use train_foley's final/visual_encoder")
        vis = wrap_visual_tower(ClipVisionTower.from_pretrained(str(args.visual_encoder)).eval())
        log.info("Mono2Stereo: encoding the 8 fps frames of %d clips", len(cache))
        feats = clip_features(cache, vis)
        video_dim = vis.dim
    torch.manual_seed(args.seed)
    model = build_mono2stereo(hidden_dim=args.hidden_dim, num_layers=args.num_layers, video_dim=video_dim,
                              video_features="semantic", frame_rate=None)  # frozen 8 fps visual features
    ema = EMA(model, args.ema)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    model, opt = accelerator.prepare(model, opt)
    counter = StepCounter()
    accelerator.register_for_checkpointing(ema, counter)
    start = resume_from(accelerator, out, args.resume, counter)
    metrics = MetricLog(out, enabled=accelerator.is_main_process)
    metrics.truncate(start)
    raw = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        write_json(out / "config.json", {"trainer": "mono2stereo",
                                         "args": {k: str(v) for k, v in vars(args).items()},
                                         "model": dict(raw.config), "cache": cache.sources})
    bar = progress(args.steps, start, args.no_progress or not accelerator.is_main_process, "mono2stereo")
    timer = Timer()
    end = end_step(args)
    for step in range(start, end):
        gen = step_generator(args.seed, step, accelerator.process_index)
        b = crop_batch(cache, feats, args.batch_size, args.crop_frames, gen)
        dev = accelerator.device
        video = b["video"]
        if video is not None and args.p_drop_video > 0:
            # the learned "no video" embedding only trains on clips that drop their video (whole batch at once:
            # Mono2Stereo takes video for the whole batch or none)
            if float(torch.rand((), generator=gen)) < args.p_drop_video:
                video = None
        set_lr(opt, lr_at(step, args.lr, args.warmup, args.steps))
        pred = model(b["mono"].to(dev), None if video is None else video.to(dev))
        from ..models.mono2stereo import mono2stereo_loss

        loss = mono2stereo_loss(pred, b["left"].to(dev), b["right"].to(dev))
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        ema.update(raw)
        counter.step = step + 1
        if (step + 1) % args.log_every == 0 or step == start:
            # reference: L1 of the untouched mono mel against each channel (what "no Mono2Stereo" scores)
            base = 0.5 * ((b["mono"] - b["left"]).abs().mean() + (b["mono"] - b["right"]).abs().mean())
            metrics.write(step + 1, {"loss": float(loss.detach()), "dual_mono_l1": float(base)})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", mono=f"{float(base):.4f}")
        bar.update(1)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_checkpoint(accelerator, out, step + 1)
            metrics.plot(["loss", "dual_mono_l1"], title="Mono2Stereo L1 (log-mel)")
    bar.close()
    if end < args.steps:
        log.info("stopped at step %d of %d; continue with --resume latest", end, args.steps)
        return out / CHECKPOINTS
    if accelerator.is_main_process:
        ema.averaged(raw).eval().save_pretrained(out / "final" / "mono2stereo")
        metrics.plot(["loss", "dual_mono_l1"], title="Mono2Stereo L1 (log-mel)")
        log.info("Mono2Stereo: %d steps in %.0f s; EMA weights in %s", args.steps - start, timer.seconds(),
                 out / "final" / "mono2stereo")
    return out / "final" / "mono2stereo"


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
