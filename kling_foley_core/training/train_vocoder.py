"""Train the default model's vocoder (:class:`~kling_foley_core.models.vocoder_vocos.VocosVocoder`) on the real
recordings of SynthHits soundtracks, then fine-tune it on the Mel-VAE decoder's output (Kling-Foley Algorithm 2,
stage 4).

Examples are random crops of ``--crop-frames`` mel frames of one channel (left or right: the pipeline vocodes each
channel on its own) of the 16 kHz soundtrack; half of them start shortly before a hit, so attacks and tails are
seen often. Stage 1 (no ``--vae``): the input is the crop's own log-mel. Stage 2 (``--vae VAE_FOLDER``, usually with
``--init`` the stage-1 vocoder): the input is what the Mel-VAE decoder makes of that mel (posterior mean, decoded,
with ``--vae-context`` frames of context on each side so the crop's edges decode as inside a clip), and the target
is still the true waveform, so the vocoder learns to undo what the VAE loses.

Losses: multi-resolution STFT (spectral convergence + L1 of log magnitudes at 4 resolutions, 256-2048 points) and
L1 of the 16 kHz log10-mels; ``--adversarial W`` adds a light hinge loss from a small multi-resolution spectrogram
discriminator (0 = off, the default).

    python -m kling_foley_core.training.train_vocoder --data DIR --out RUN [--steps 4000] [--resume latest]
    python -m kling_foley_core.training.train_vocoder --data DIR --out RUN2 --init RUN/final/vocoder --vae VAE

Outputs: ``RUN/final/vocoder`` (EMA weights, ``save_pretrained``), ``RUN/checkpoints/step-N`` (resumable state),
``RUN/metrics.jsonl`` and ``RUN/loss.png``.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common import (cli_main, CHECKPOINTS, EMA, MetricLog, StepCounter, Timer, TrainingError, add_common_args,
                     check_common_args, end_step, lr_at, make_accelerator, progress, resume_from, save_checkpoint,
                     set_lr, step_generator, write_json)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256), (2048, 512))


# ----------------------------------------------------------------------------------------------------------
# Data: the soundtracks at 16 kHz, one channel per example
# ----------------------------------------------------------------------------------------------------------
class Soundtracks:
    """The 16 kHz channels of up to ``max_clips`` SynthHits clips (audio only: frames are never decoded) and their
    hit times."""

    def __init__(self, folders, max_clips: int):
        from ..audio.resample import fft_resample

        self.waves: list[np.ndarray] = []  # (2, N) float32 each
        self.hits: list[np.ndarray] = []
        for sr, audio, events in self._iter_audio(folders):
            if len(self.waves) >= max_clips:
                break
            x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
            if sr != SAMPLE_RATE:
                x = fft_resample(x, sr, SAMPLE_RATE)
            if x.shape[0] == 1:
                x = x.expand(2, -1)
            self.waves.append(x[:2].clamp(-1, 1).numpy().astype(np.float32))
            self.hits.append(np.array([e["time"] for e in events], np.float64))
        if not self.waves:
            raise TrainingError(f"--data {' '.join(map(str, folders))}: no clips found; pass SynthHits folders")

    @staticmethod
    def _iter_audio(folders):
        import soundfile as sf

        from ..data.synthhits import SynthHitsError, load_clips

        for folder in folders:
            folder = Path(folder)
            shards = sorted(folder.glob("shard-*.npz"))
            if not shards:
                try:
                    clips = load_clips(folder)
                except SynthHitsError as e:
                    raise TrainingError(f"--data {folder}: {e}") from None
                for c in clips:
                    yield c.sample_rate, c.audio, [{"time": e.time} for e in c.events]
                continue
            for shard in shards:
                with np.load(shard) as z:
                    meta = json.loads(z["meta"].tobytes().decode())
                    for i, m in enumerate(meta):
                        a, sr = sf.read(io.BytesIO(z[f"{i}/audio_flac"].tobytes()), dtype="float32", always_2d=True)
                        yield sr, a.T, m["events"]

    def __len__(self) -> int:
        return len(self.waves)

    def crops(self, batch: int, samples: int, gen: torch.Generator, context: int = 0) -> torch.Tensor:
        """``batch`` crops of ``samples`` + 2·``context`` samples (one channel each), half of them starting up to
        0.5 s before a hit."""
        idx = torch.randint(len(self.waves), (batch,), generator=gen).tolist()
        u = torch.rand(batch, 4, generator=gen).tolist()
        total = samples + 2 * context
        out = np.zeros((batch, total), np.float32)
        for b, (i, r) in enumerate(zip(idx, u)):
            x = self.waves[i][int(r[0] * 2) % 2]
            hits = self.hits[i]
            if r[1] < 0.5 and hits.size:
                t = hits[int(r[2] * hits.size) % hits.size] - 0.5 * r[3]
                start = int(t * SAMPLE_RATE) - context
            else:
                start = int(r[3] * max(1, len(x) - total + 1)) - context
            start = max(-context, min(start, len(x) - samples - context)) if len(x) > samples else -context
            a, b_ = max(0, start), min(len(x), start + total)
            out[b, a - start: b_ - start] = x[a:b_]
        return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------
def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    return torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor,
                               resolutions=STFT_RESOLUTIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """(spectral convergence, log-magnitude L1), each averaged over the resolutions."""
    sc = lm = 0.0
    for n_fft, hop in resolutions:
        p, t = stft_magnitude(pred, n_fft, hop), stft_magnitude(target, n_fft, hop)
        sc = sc + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-6)
        lm = lm + (torch.log(p.clamp(min=1e-5)) - torch.log(t.clamp(min=1e-5))).abs().mean()
    return sc / len(resolutions), lm / len(resolutions)


class SpectrogramDiscriminator(torch.nn.Module):
    """A light multi-resolution discriminator on log-magnitude spectrograms (2-D convolutions per resolution)."""

    def __init__(self, channels: int = 16, resolutions=((512, 128), (1024, 256), (256, 64))):
        super().__init__()
        self.resolutions = tuple(resolutions)
        self.nets = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Conv2d(1, channels, (7, 5), padding=(3, 2)), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1)), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(channels, channels, (5, 3), stride=(2, 1), padding=(2, 1)), torch.nn.LeakyReLU(0.1),
            torch.nn.Conv2d(channels, 1, 3, padding=1)) for _ in self.resolutions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [net(torch.log(stft_magnitude(x, n, h).clamp(min=1e-5))[:, None])
                for net, (n, h) in zip(self.nets, self.resolutions)]


# ----------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.train_vocoder",
                                 description="Train the default model's iSTFT-head vocoder on SynthHits soundtracks.")
    add_common_args(ap, steps=4000, batch_size=16, lr=1e-3)
    ap.add_argument("--dim", type=int, default=128, help="ConvNeXt width")
    ap.add_argument("--intermediate-dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6, help="ConvNeXt blocks")
    ap.add_argument("--crop-frames", type=int, default=64, help="mel frames per example (62.5 per second)")
    ap.add_argument("--max-clips", type=int, default=800, help="read at most this many clips (audio kept in RAM)")
    ap.add_argument("--init", type=Path, default=None, help="start from this vocoder folder (e.g. stage 1's final)")
    ap.add_argument("--vae", type=Path, default=None,
                    help="Mel-VAE folder: train on its decoder's output of each mel (stage 2, Algorithm 2 stage 4)")
    ap.add_argument("--vae-context", type=int, default=16, help="mel frames of context each side for the VAE (even)")
    ap.add_argument("--mel-weight", type=float, default=1.0, help="weight of the log-mel L1")
    ap.add_argument("--stft-weight", type=float, default=1.0, help="weight of the multi-resolution STFT loss")
    ap.add_argument("--adversarial", type=float, default=0.0, help="weight of the light hinge adversarial loss")
    ap.add_argument("--disc-lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    return ap


def _load_vocoder(args):
    from ..models.vocoder_bigvgan import VocoderInputError
    from ..models.vocoder_vocos import VocosVocoder

    if args.init is not None:
        try:
            return VocosVocoder.from_pretrained(str(args.init))
        except (OSError, ValueError) as e:
            raise TrainingError(f"--init {args.init}: not a VocosVocoder folder ({str(e).splitlines()[0]}); pass "
                                f"RUN/final/vocoder of this trainer") from None
    try:
        return VocosVocoder(mel="16k", dim=args.dim, intermediate_dim=args.intermediate_dim, num_layers=args.layers)
    except VocoderInputError as e:
        raise TrainingError(f"{e}; fix --dim / --intermediate-dim / --layers") from None


def _load_vae(args, vocoder):
    if args.vae is None:
        return None
    from ..models.mel_vae_kling import KlingMelVAE
    from ..models.vocoder_bigvgan import VocoderInputError
    from ..models.vocoder_vocos import check_vocoder_fits

    try:
        vae = KlingMelVAE.from_pretrained(str(args.vae)).eval().requires_grad_(False)
    except (OSError, ValueError) as e:
        raise TrainingError(f"--vae {args.vae}: not a Mel-VAE folder ({str(e).splitlines()[0]})") from None
    try:
        check_vocoder_fits(vocoder, vae.mel_mode or "unknown", what="the vocoder", of="--vae")
    except (VocoderInputError, ValueError) as e:
        raise TrainingError(f"--vae {args.vae}: {e}") from None
    return vae


def run(args) -> Path:
    from ..audio.mel import MelSpectrogram

    check_common_args(args)
    if args.crop_frames < 16:
        raise TrainingError(f"--crop-frames={args.crop_frames} must be >= 16")
    if args.vae_context < 0 or args.vae_context % 2:
        raise TrainingError(f"--vae-context={args.vae_context} must be an even number >= 0")
    if args.max_clips < 1:
        raise TrainingError(f"--max-clips={args.max_clips} must be >= 1")
    accelerator = make_accelerator()
    out = Path(args.out)
    torch.manual_seed(args.seed)
    vocoder = _load_vocoder(args)
    vae = _load_vae(args, vocoder)
    data = Soundtracks(args.data, args.max_clips)
    log.info("vocoder: %d clips, %.1f min of audio, %.2f M parameters", len(data),
             sum(w.shape[-1] for w in data.waves) / SAMPLE_RATE / 60, sum(p.numel() for p in vocoder.parameters()) / 1e6)
    mel_fn = MelSpectrogram("16k")
    hop = vocoder.hop_length
    samples = args.crop_frames * hop
    context = args.vae_context * hop if vae is not None else 0

    ema = EMA(vocoder, args.ema)
    opt = torch.optim.AdamW(vocoder.parameters(), lr=args.lr, betas=(0.8, 0.99), weight_decay=1e-4)
    disc = SpectrogramDiscriminator() if args.adversarial > 0 else None
    if disc is not None:
        opt_d = torch.optim.AdamW(disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9))
        vocoder, opt, disc, opt_d = accelerator.prepare(vocoder, opt, disc, opt_d)
    else:
        vocoder, opt = accelerator.prepare(vocoder, opt)
    mel_fn = mel_fn.to(accelerator.device)
    if vae is not None:
        vae = vae.to(accelerator.device)
    counter = StepCounter()
    accelerator.register_for_checkpointing(ema, counter)
    start = resume_from(accelerator, out, args.resume, counter)
    metrics = MetricLog(out, enabled=accelerator.is_main_process)
    metrics.truncate(start)
    raw = accelerator.unwrap_model(vocoder)
    if accelerator.is_main_process:
        write_json(out / "config.json", {"trainer": "vocoder", "args": {k: str(v) for k, v in vars(args).items()},
                                         "vocoder": {k: v for k, v in raw.config.items() if not k.startswith("_")},
                                         "clips": len(data)})
    bar = progress(args.steps, start, args.no_progress or not accelerator.is_main_process, "vocoder")
    timer = Timer()
    end = end_step(args)
    keys = ["total", "mel_l1", "stft_sc", "stft_logmag", "adversarial", "disc"]
    for step in range(start, end):
        gen = step_generator(args.seed, step, accelerator.process_index)
        set_lr(opt, lr_at(step, args.lr, args.warmup, args.steps))
        wave = data.crops(args.batch_size, samples, gen, context).to(accelerator.device)  # (B, S + 2C)
        target = wave[:, context: context + samples]
        with torch.no_grad():
            if vae is not None:
                m = mel_fn(wave)  # (B, 80, F + 2·ctx)
                m = vae.decode(vae.encode(m).mean)[..., args.vae_context: args.vae_context + args.crop_frames]
            else:
                m = mel_fn(target)
            target_mel = mel_fn(target)
        pred = vocoder(m)
        mel_l1 = (mel_fn(pred) - target_mel).abs().mean()
        sc, lm = multi_resolution_stft_loss(pred, target)
        total = args.mel_weight * mel_l1 + args.stft_weight * (sc + lm)
        values = {"mel_l1": mel_l1.item(), "stft_sc": sc.item(), "stft_logmag": lm.item()}
        if disc is not None:
            adv = sum(F.relu(1 - lg).mean() for lg in disc(pred))  # hinge: push fakes towards "real"
            total = total + args.adversarial * adv
            values["adversarial"] = float(adv)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(total)
        accelerator.clip_grad_norm_(vocoder.parameters(), 1.0)
        opt.step()
        if disc is not None:
            d = (sum(F.relu(1 - lg).mean() for lg in disc(target)) +
                 sum(F.relu(1 + lg).mean() for lg in disc(pred.detach())))
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d)
            opt_d.step()
            values["disc"] = float(d)
        values["total"] = total.item()
        ema.update(raw)
        counter.step = step + 1
        if (step + 1) % args.log_every == 0 or step == start:
            metrics.write(step + 1, values)
            bar.set_postfix(mel=f"{values['mel_l1']:.3f}", sc=f"{values['stft_sc']:.3f}")
        bar.update(1)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_checkpoint(accelerator, out, step + 1)
            metrics.plot(keys, title="vocoder")
    bar.close()
    if end < args.steps:
        log.info("stopped at step %d of %d; continue with --resume latest", end, args.steps)
        return out / CHECKPOINTS
    if accelerator.is_main_process:
        final = ema.averaged(raw).eval()
        final.save_pretrained(out / "final" / "vocoder")
        metrics.plot(keys, title="vocoder")
        log.info("vocoder: %d steps in %.0f s; EMA weights in %s", args.steps - start, timer.seconds(),
                 out / "final" / "vocoder")
    return out / "final" / "vocoder"


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
