"""Where the default model's sound is lost: the fidelity columns of resynthesised true soundtracks.

    python bench/bench_vocoder_fidelity.py [--n 30] [--seed 0] [--vocoder DIR ...] [--vae DIR] [--threads N]

No MM-DiT: each held-out SynthHits clip's true soundtrack is taken to the 16 kHz log-mel of each channel, then back
to audio by each vocoder (Griffin-Lim, and every ``--vocoder`` folder), either straight from the true mel
("mel → vocoder") or through the Mel-VAE (encode, posterior mean, decode: "mel → VAE → vocoder"). The rows
isolate what the vocoder and the VAE each cost in loudness, decay and spectral distance, beside the usual
reference rows. Also prints each vocoder's time per second of audio (one run, same input).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocoder", type=Path, action="append", default=[], help="a vocoder folder (repeatable)")
    ap.add_argument("--vae", type=Path, default=None, help="Mel-VAE folder (default: the shipped model's)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from kling_foley_core.audio.mel import MelSpectrogram
    from kling_foley_core.audio.resample import fft_resample
    from kling_foley_core.data.recordings import load_bank
    from kling_foley_core.data.synthhits import generate_clip
    from kling_foley_core.default_model import weights_dir
    from kling_foley_core.evaluation.metrics import evaluation_table
    from kling_foley_core.evaluation.timbre import get_timbre_classifier
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE
    from kling_foley_core.models.vocoder_griffinlim import GriffinLimVocoder
    from kling_foley_core.models.vocoder_vocos import VocosVocoder

    bank = load_bank()
    clips = [generate_clip(bank, seed=args.seed, index=i, split="heldout") for i in range(args.n)]
    vae = KlingMelVAE.from_pretrained(str(args.vae or weights_dir() / "vae")).eval()
    mel_fn = MelSpectrogram("16k")
    vocoders = {"griffin-lim": GriffinLimVocoder("16k", n_iter=32).eval()}
    for folder in args.vocoder:
        vocoders[folder.parent.parent.name if folder.name == "vocoder" else folder.name] = \
            VocosVocoder.from_pretrained(str(folder)).eval()
    mels, vae_mels = [], []
    with torch.inference_mode():
        for c in clips:
            x = fft_resample(torch.from_numpy(c.audio).float(), c.sample_rate, 16000)  # (2, N)
            m = mel_fn(x)  # (2, 80, F)
            mels.append(m)
            frames = m.shape[-1]
            vae_mels.append(vae.decode(vae.encode(m).mean)[..., :frames])
    systems, seconds = {}, {}
    audio_s = sum(c.duration for c in clips)
    with torch.inference_mode():
        for name, voc in vocoders.items():
            for route, src in (("mel", mels), ("mel → VAE", vae_mels)):
                t0 = time.perf_counter()
                out = [voc(m).numpy() for m in src]
                seconds[name] = time.perf_counter() - t0
                systems[f"{route} → {name}"] = [{"waveform": np.clip(w, -1, 1), "sample_rate": 16000} for w in out]
    table, _ = evaluation_table(systems, clips, classifier=get_timbre_classifier(bank), seed=args.seed, bank=bank)
    print(table)
    for name, s in seconds.items():
        print(f"{name}: {s / audio_s * 1000:.1f} ms per second of stereo audio")
    print(f"({args.n} held-out clips, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
