"""CPU speed of the vocoders as a real-time factor (seconds of compute per second of audio; < 1 is faster than
real time). Random weights: speed does not depend on their values.

    python bench/bench_vocoder.py [--seconds 2] [--threads N] [--presets tiny bigvgan_v2_44khz_128band_512x]

Each vocoder runs once on a short input to warm up, then ``--repeats`` times on ``--seconds`` of audio; the best
time is reported (the least disturbed by other processes), with the machine's load average for context.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

from kling_foley_core.models.vocoder_bigvgan import BigVGANVocoder
from kling_foley_core.models.vocoder_griffinlim import GriffinLimVocoder


def timed(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench(name: str, vocoder, seconds: float, repeats: int) -> None:
    frames = max(1, round(seconds * vocoder.sample_rate / vocoder.hop_length))
    mel = torch.randn(1, vocoder.n_mels, frames) - 4.0
    warm = torch.randn(1, vocoder.n_mels, 8) - 4.0
    params = sum(p.numel() for p in vocoder.parameters())
    with torch.inference_mode():
        vocoder(warm)
        elapsed = timed(lambda: vocoder(mel), repeats)
    audio = frames * vocoder.hop_length / vocoder.sample_rate
    print(f"{name:34s} {params / 1e6:8.2f} M params  {audio:5.2f} s audio @ {vocoder.sample_rate} Hz  "
          f"{elapsed:7.2f} s  RTF {elapsed / audio:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--presets", nargs="*", default=["tiny", "bigvgan_v2_44khz_128band_512x"])
    parser.add_argument("--griffin-lim-iters", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {load:.1f}")
    torch.manual_seed(0)
    for preset in args.presets:
        bench(f"BigVGAN {preset}", BigVGANVocoder.from_preset(preset).eval(), args.seconds, args.repeats)
    for mode in ("44k", "16k"):
        gl = GriffinLimVocoder(mode, n_iter=args.griffin_lim_iters)
        bench(f"Griffin-Lim {mode} ({args.griffin_lim_iters} it)", gl, args.seconds, args.repeats)


if __name__ == "__main__":
    main()
