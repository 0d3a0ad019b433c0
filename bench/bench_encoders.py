"""CPU throughput of the conditioning encoders (random weights: meta-device build, then a seeded fill).

    python bench/bench_encoders.py [--full] [--threads N]

Tiny configs always; ``--full`` adds the real-size Synchformer (ViT-B, one 16-frame window per forward),
DFN5B ViT-H/14 @384 and MetaCLIP ViT-bigG/14 @224 (1.84 B parameters: one small batch only, ~7.4 GB fp32).
Reports frames per second of *input* frames (a Synchformer window covers 16 frames, advancing 8 per window, so
its steady-state clip rate is 8 new frames per window).
"""
from __future__ import annotations

import argparse
import gc
import time

import torch

from kling_foley_core.encoders import get_sync_encoder, get_visual_encoder, load_motionformer
from kling_foley_core.encoders.base import build_model
from kling_foley_core.encoders.clip_vit import CLIP_PRESETS, ClipVisionTower
from kling_foley_core.encoders.synchformer import SYNCHFORMER_CONFIG, SynchformerEncoder
from kling_foley_core.encoders.visual import ClipVisualEncoder


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_sync(enc: SynchformerEncoder, windows: int, repeats: int, label: str) -> None:
    seg = enc.model.config.num_frames
    frames = (seg // 2) * (windows + 1)  # exactly `windows` windows
    size = enc.image_size
    x = torch.randn(frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    sec = timed(lambda: enc.encode(x, preprocessed=True, batch_size=windows), repeats)
    print(f"{label:34s} {windows} windows ({frames} frames @25fps) {sec:7.3f} s  -> {frames / sec:8.1f} frames/s "
          f"(= {frames / 25 / sec:5.2f}x real time)")


def bench_visual(enc, n: int, repeats: int, label: str) -> None:
    x = torch.randn(n, 3, enc.image_size, enc.image_size, generator=torch.Generator().manual_seed(0))
    sec = timed(lambda: enc.encode(x, preprocessed=True, batch_size=n), repeats)
    print(f"{label:34s} {n} frames {sec:7.3f} s  -> {n / sec:8.2f} frames/s (= {n / 8 / sec:5.2f}x real time @8fps)")


def full_clip(name: str) -> ClipVisualEncoder:
    p = CLIP_PRESETS[name]
    t0 = time.perf_counter()
    tower = build_model(ClipVisionTower, p.vision, None, what=name, generator=torch.Generator().manual_seed(0))
    n = sum(x.numel() for x in tower.parameters())
    print(f"  built {name}: {n / 1e6:.0f} M params in {time.perf_counter() - t0:.1f} s")
    return ClipVisualEncoder(tower, name=name, input_size=p.input_size, resize_mode=p.resize_mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="also real-size models (minutes, up to ~8 GB RAM)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    bench_sync(get_sync_encoder("tiny-synchformer", generator=g), 8, 5, "tiny-synchformer")
    bench_visual(get_visual_encoder("tiny-clip", generator=g), 32, 5, "tiny-clip")
    bench_visual(get_visual_encoder("tiny-siglip", generator=g), 32, 5, "tiny-siglip")
    if not args.full:
        return
    sync = SynchformerEncoder(load_motionformer(None, config=SYNCHFORMER_CONFIG, generator=g))
    bench_sync(sync, 1, 1, "synchformer (ViT-B, 122 M)")
    bench_sync(sync, 2, 1, "synchformer (ViT-B, 122 M)")
    del sync
    gc.collect()
    bench_visual(full_clip("dfn5b-clip-vit-h-14-384"), 2, 1, "DFN5B ViT-H/14 @384")
    gc.collect()
    bench_visual(full_clip("metaclip-vit-bigg-14-quickgelu"), 2, 1, "MetaCLIP ViT-bigG/14 @224")


if __name__ == "__main__":
    main()
