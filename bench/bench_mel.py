"""Throughput of the mel front-ends and the mel VAEs on this machine (CPU, fp32, random weights).

    python bench/bench_mel.py [--seconds 8] [--repeats 3] [--threads N] [--no-real]

Prints one line per case: the median wall time of ``--repeats`` runs (after one warm-up) with the throughput in
seconds of audio per wall-clock second (× real time), and the median CPU time of the process (summed over threads,
robust to other load on a shared machine) with seconds of audio per CPU-second. Cases:

* mel front-end "16k" and "44k" on a mono clip of ``--seconds``;
* MMAudio mel VAE encode / decode: the tiny 44k fixture size and the released 44k size (hidden 512, ~305 M
  parameters, the v1-44.pth layout; skipped with --no-real);
* Kling-Foley Mel-VAE encode / decode: tiny and base (hidden 512, 15 blocks, k5) 44k configs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from kling_foley_core.audio import MelSpectrogram, mel_preset
from kling_foley_core.models.mel_vae_kling import KlingMelVAE, kling_mel_vae_config
from kling_foley_core.models.mel_vae_mmaudio import MMAudioMelVAE, mmaudio_vae_config


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (all threads of this process) of ``repeats`` calls."""
    fn()  # warm-up (allocator, one-off kernel choice)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _report(name: str, seconds_audio: float, timing: tuple[float, float]) -> None:
    # CPU time is the load-robust number on a shared machine: wall time grows with other processes, CPU time
    # (summed over threads) does not.
    wall, cpu = timing
    print(f"{name:48s} wall {wall * 1e3:9.1f} ms ({seconds_audio / wall:8.1f}× real time)   "
          f"cpu {cpu * 1e3:9.1f} ms ({seconds_audio / max(cpu, 1e-9):8.1f}× per core-second)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="clip length in seconds (default 8, MMAudio's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-real", action="store_true", help="skip the real-size VAEs (they take ~1 GB each)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, clip {args.seconds:g} s, "
          f"median of {args.repeats}")
    gen = torch.Generator().manual_seed(0)

    for mode in ("16k", "44k"):
        cfg = mel_preset(mode)
        wav = torch.rand(1, int(args.seconds * cfg.sampling_rate), generator=gen) * 2 - 1
        mel = MelSpectrogram(cfg)
        with torch.inference_mode():
            timing = _time(lambda: mel(wav), args.repeats)
        _report(f"mel front-end {mode} (1×{wav.shape[-1]} samples)", args.seconds, timing)

    cfg44 = mel_preset("44k")
    frames = cfg44.num_frames(int(args.seconds * cfg44.sampling_rate))
    frames -= frames % 2
    mel44 = torch.randn(1, 128, frames, generator=gen) - 4.0

    cases = [("MMAudio VAE 44k tiny (hidden 24)", lambda: MMAudioMelVAE(data_dim=128, embed_dim=40, hidden_dim=24)),
             ("Kling Mel-VAE 44k tiny", lambda: KlingMelVAE(**kling_mel_vae_config("44k", "tiny")))]
    if not args.no_real:
        cases += [("MMAudio VAE 44k real (v1-44 layout)", lambda: MMAudioMelVAE(**mmaudio_vae_config("44k"))),
                  ("Kling Mel-VAE 44k base", lambda: KlingMelVAE(**kling_mel_vae_config("44k", "base")))]
    for name, build in cases:
        torch.manual_seed(0)
        model = build().eval()
        n_params = sum(q.numel() for q in model.parameters())
        with torch.inference_mode():
            z = model.encode(mel44).mean
            enc = _time(lambda: model.encode(mel44), args.repeats)
            dec = _time(lambda: model.decode(z), args.repeats)
        _report(f"{name} encode [{n_params / 1e6:.1f} M]", args.seconds, enc)
        _report(f"{name} decode [{n_params / 1e6:.1f} M]", args.seconds, dec)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
