"""Train the Kling-Foley Mel-VAE (paper §4.5, Algorithm 2) on the mono 16 kHz log-mels of a SynthHits folder.

The four stages of the stepping schedule (reconstruction only → + ramped margin KL → + ramped hinge/R1
adversarial loss → decoder refinement with the encoder frozen) are placed at fractions of ``--steps``
(``--stages 0.3 0.55 0.8``), so a short run keeps the paper's proportions. Training examples are random crops of
``--crop-frames`` mel frames; the mel statistics (per-bin mean/std) are measured on the training clips and stored
in the VAE's buffers.

``--refine-from VAE_FOLDER`` trains only the decoder of an already trained Mel-VAE (every step is a stage-4 step):
the encoder, bottleneck and mel statistics stay as they are, so an MM-DiT trained on its latents keeps working with
the refined decoder. With ``--decoder-hidden-dim`` / ``--decoder-blocks`` the decoder is a new one of that size.

    python -m kling_foley_core.training.train_mel_vae --data DIR --out RUN [--steps 3000] [--resume latest]

Outputs: ``RUN/final/vae`` (EMA weights, ``save_pretrained``), ``RUN/checkpoints/step-N`` (resumable state),
``RUN/metrics.jsonl`` and ``RUN/loss.png``.
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
from .mel_vae_losses import discriminator_loss, generator_loss
from .mel_vae_schedule import SteppingSchedule, apply_trainable

log = logging.getLogger(__name__)


def vae_config(args) -> dict:
    return dict(n_mels=80, latent_dim=args.latent_dim, hidden_dim=args.hidden_dim, num_blocks=args.num_blocks,
                kernel_size=args.kernel_size, norm_groups=args.norm_groups, time_downsample=2,
                decoder_hidden_dim=args.decoder_hidden_dim, decoder_num_blocks=args.decoder_blocks)


def vae_to_refine(args):
    """``--refine-from``: the folder's Mel-VAE, with a fresh decoder when ``--decoder-hidden-dim`` /
    ``--decoder-blocks`` ask for another size. Its encoder, bottleneck and mel statistics are kept as they are, so the
    latent space (what an MM-DiT was trained on) does not change."""
    from ..models.mel_vae_kling import KlingMelVAE

    try:
        base = KlingMelVAE.from_pretrained(str(args.refine_from))
    except (OSError, ValueError) as e:
        raise TrainingError(f"--refine-from {args.refine_from}: not a Mel-VAE folder ({str(e).splitlines()[0]}); "
                            f"pass a folder written by this trainer (RUN/final/vae)") from None
    cfg = {k: v for k, v in base.config.items() if not k.startswith("_")}
    for key, value in (("decoder_hidden_dim", args.decoder_hidden_dim), ("decoder_num_blocks", args.decoder_blocks)):
        if value is not None:
            cfg[key] = value
    vae = KlingMelVAE(**cfg)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("decoder.")}
    same_decoder = all(cfg.get(k) == base.config.get(k) for k in ("decoder_hidden_dim", "decoder_num_blocks"))
    if same_decoder:
        state.update({k: v for k, v in base.state_dict().items() if k.startswith("decoder.")})
    vae.load_state_dict(state, strict=same_decoder)
    return vae, cfg


def mel_statistics(cache: FeatureCache, max_clips: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std over (up to) ``max_clips`` evenly spaced training clips."""
    idx = np.linspace(0, len(cache) - 1, min(max_clips, len(cache))).round().astype(int)
    mels = np.concatenate([cache.mel(int(i)) for i in idx], axis=1)  # (80, ΣF)
    return mels.mean(1), np.maximum(mels.std(1), 1e-2)


def crop_batch(cache: FeatureCache, batch: int, frames: int, gen: torch.Generator) -> torch.Tensor:
    """``batch`` random crops of ``frames`` mel frames (clips shorter than that are edge-padded)."""
    idx = torch.randint(len(cache), (batch,), generator=gen).tolist()
    u = torch.rand(batch, generator=gen).tolist()
    out = []
    for i, r in zip(idx, u):
        m = cache.mel(i)  # (80, F)
        if m.shape[1] < frames:
            m = np.pad(m, ((0, 0), (0, frames - m.shape[1])), mode="edge")
        s = int(r * (m.shape[1] - frames + 1))
        out.append(m[:, s: s + frames])
    return torch.from_numpy(np.stack(out))  # (B, 80, frames)


@torch.no_grad()
def freeze_encoder_at_average(vae, ema: EMA) -> None:
    """Entering stage 4: set the encoder to its EMA weights before freezing it.

    The exported VAE uses EMA weights; copying them into the trained encoder now means the decoder is refined on
    exactly the latents the exported encoder produces (and the MM-DiT is trained on), not on a slightly different
    raw encoder's.
    """
    for name, p in vae.encoder.named_parameters():
        key = f"encoder.{name}"
        if key in ema.shadow:
            p.copy_(ema.shadow[key].to(p.dtype))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.train_mel_vae",
                                 description="Train the Kling-Foley Mel-VAE (4-stage schedule) on SynthHits.")
    add_common_args(ap, steps=3000, batch_size=16, lr=4e-4)
    ap.add_argument("--latent-dim", type=int, default=20)
    ap.add_argument("--hidden-dim", type=int, default=64)
    ap.add_argument("--num-blocks", type=int, default=4)
    ap.add_argument("--kernel-size", type=int, default=5)
    ap.add_argument("--norm-groups", type=int, default=8)
    ap.add_argument("--crop-frames", type=int, default=120, help="mel frames per example (even; 62.5 per second)")
    ap.add_argument("--decoder-hidden-dim", type=int, default=None, help="decoder width (default: --hidden-dim)")
    ap.add_argument("--decoder-blocks", type=int, default=None, help="decoder residual blocks (default: --num-blocks)")
    ap.add_argument("--refine-from", type=Path, default=None,
                    help="a trained Mel-VAE folder: keep its encoder, bottleneck and mel statistics (its latent "
                         "space) and train only the decoder, every step in stage 4; with --decoder-hidden-dim / "
                         "--decoder-blocks the decoder is a new one of that size")
    ap.add_argument("--stages", type=float, nargs=3, default=[0.3, 0.55, 0.8],
                    help="ends of stages 1-3 as fractions of --steps (Algorithm 2)")
    ap.add_argument("--kl-upper", type=float, default=1e-3)
    ap.add_argument("--kl-margin", type=float, default=0.0, help="Δ of the margin KL, nats per latent frame")
    ap.add_argument("--gan-upper", type=float, default=0.05)
    ap.add_argument("--r1", type=float, default=1.0)
    ap.add_argument("--l1-weight", type=float, default=1.0)
    ap.add_argument("--level-weight", type=float, default=0.0,
                    help="weight of the peak-level loss (frame levels, max-pooled; 0 = off, as in the paper)")
    ap.add_argument("--disc-lr", type=float, default=2e-4)
    ap.add_argument("--disc-channels", type=int, default=8)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    ap.add_argument("--image-size", type=int, default=48, help="frame size of the feature cache")
    return ap


def run(args) -> Path:
    from ..models.mel_vae_kling import KlingMelVAE, MelDiscriminator

    check_common_args(args)
    if not args.level_weight >= 0:
        raise TrainingError(f"--level-weight={args.level_weight} must be >= 0 (0 turns the peak-level loss off)")
    if args.crop_frames % 2 or args.crop_frames < 32:
        raise TrainingError(f"--crop-frames={args.crop_frames} must be an even number >= 32")
    s1, s2, s3 = (int(round(f * args.steps)) for f in args.stages)
    if args.refine_from is not None:  # every step is a stage-4 step (the stage ends only need to be valid)
        s1, s2, s3 = 0, 1, 2
    if not 0 <= s1 < s2 < s3:
        raise TrainingError(f"--stages {args.stages} give stage ends {s1}, {s2}, {s3} for --steps {args.steps}; "
                            f"need increasing fractions in (0, 1)")
    schedule = SteppingSchedule(stage1_end=s1, stage2_end=s2, stage3_end=s3, kl_upper=args.kl_upper,
                                gan_upper=args.gan_upper, r1_weight=args.r1)
    accelerator = make_accelerator()
    cache = open_caches(args.data, args.cache, image_size=args.image_size)
    out = Path(args.out)

    torch.manual_seed(args.seed)  # module initialisers draw from the global RNG: make the start reproducible
    try:
        if args.refine_from is not None:
            vae, vae_cfg = vae_to_refine(args)
        else:
            vae_cfg = vae_config(args)
            vae = KlingMelVAE(**vae_cfg)
    except TrainingError:  # already names the option at fault (it is a ValueError too)
        raise
    except ValueError as e:  # a size the model refuses (e.g. --decoder-hidden-dim 0, or not divisible by groups)
        raise TrainingError(f"{e}; fix the size options (--hidden-dim, --decoder-hidden-dim, --norm-groups, ...)") \
            from None
    disc = MelDiscriminator(n_mels=80, channels=args.disc_channels, num_layers=3, max_channels=4 * args.disc_channels,
                            scales=(1, 2))
    if args.refine_from is None:
        vae.set_data_statistics(*mel_statistics(cache))
    ema = EMA(vae, args.ema)
    opt_g = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=1e-4)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9))
    vae, disc, opt_g, opt_d = accelerator.prepare(vae, disc, opt_g, opt_d)
    counter = StepCounter()
    accelerator.register_for_checkpointing(ema, counter)
    start = resume_from(accelerator, out, args.resume, counter)
    metrics = MetricLog(out, enabled=accelerator.is_main_process)
    metrics.truncate(start)
    if accelerator.is_main_process:
        write_json(out / "config.json", {"trainer": "mel_vae", "args": {k: str(v) for k, v in vars(args).items()},
                                         "vae": vae_cfg, "cache": cache.sources,
                                         "schedule": [s1, s2, s3]})
    raw_vae = accelerator.unwrap_model(vae)
    raw_disc = accelerator.unwrap_model(disc)
    bar = progress(args.steps, start, args.no_progress or not accelerator.is_main_process, "mel-vae")
    timer = Timer()
    end = end_step(args)
    for step in range(start, end):
        gen = step_generator(args.seed, step, accelerator.process_index)
        if args.refine_from is not None:
            w = schedule(s3 + 1 + step)
        else:
            w = schedule(step)
            if step == s3 + 1:
                freeze_encoder_at_average(raw_vae, ema)
        apply_trainable(raw_vae, w, raw_disc)
        set_lr(opt_g, lr_at(step, args.lr, args.warmup, args.steps))
        mel = crop_batch(cache, args.batch_size, args.crop_frames, gen).to(accelerator.device)
        outp = vae(mel, generator=gen)
        fake_logits = disc(outp.reconstruction).logits if w.gan > 0 else None
        g = generator_loss(outp.reconstruction, mel, outp.posterior.mean, outp.posterior.logvar, w,
                           kl_margin=args.kl_margin, l1_weight=args.l1_weight, fake_logits=fake_logits,
                           level_weight=args.level_weight)
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(g.total)
        accelerator.clip_grad_norm_([p for p in vae.parameters() if p.requires_grad], 1.0)
        opt_g.step()
        values = {f"g_{k}": v for k, v in g.to_floats().items()}
        if w.train_discriminator:
            d = discriminator_loss(disc, mel, outp.reconstruction, w)
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d.total)
            opt_d.step()
            values.update({f"d_{k}": v for k, v in d.to_floats().items()})
        ema.update(raw_vae)
        counter.step = step + 1
        values["stage"] = w.stage
        if (step + 1) % args.log_every == 0 or step == start:
            metrics.write(step + 1, values)
            bar.set_postfix(stage=w.stage, mse=f"{values['g_mse']:.4f}", kl=f"{values['g_kl']:.2f}")
        bar.update(1)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_checkpoint(accelerator, out, step + 1)
            metrics.plot(["g_mse", "g_l1", "g_kl", "g_adversarial", "g_level", "d_hinge"], title="Mel-VAE")
    bar.close()
    if end < args.steps:
        log.info("stopped at step %d of %d; continue with --resume latest", end, args.steps)
        return out / CHECKPOINTS
    if accelerator.is_main_process:
        final = ema.averaged(raw_vae).eval()
        final.save_pretrained(out / "final" / "vae")
        metrics.plot(["g_mse", "g_l1", "g_kl", "g_adversarial", "d_hinge"], title="Mel-VAE")
        log.info("Mel-VAE: %d steps in %.0f s; EMA weights in %s", args.steps - start, timer.seconds(),
                 out / "final" / "vae")
    return out / "final" / "vae"


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
