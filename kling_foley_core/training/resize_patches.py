"""Re-tokenise a trained sync encoder (MotionFormer) at a smaller patch size, to warm-start a finer one.

    python -m kling_foley_core.training.resize_patches IN OUT --sync-patch-size 12

``IN`` is a weights folder (``export``, ``average`` or a run's ``final``); ``OUT`` is the same folder with its
``sync_encoder`` cut into ``k × k`` times as many patches per frame (``k = old / new patch size``). A patch kernel
becomes its ``k × k`` sum-pool, so the new token of a small patch is exactly the old token of that patch
upsampled ``k`` times (FlexiViT's "PI-resize" for an integer factor); the spatial position table is interpolated
bilinearly. Everything else (blocks, the aggregation, the other parts, the training-only heads) is copied, so
``train_foley --init OUT --override sync_encoder.patch_size=NEW`` continues from it. The tokens the encoder hands
on stay one per tubelet, so the MM-DiT's inputs keep their shapes; it still has to learn the finer features.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .common import TrainingError, cli_main, write_folder_from

SYNC = "sync_encoder"
WEIGHTS = "diffusion_pytorch_model.safetensors"


def resize_sync_state_dict(sd: dict[str, torch.Tensor], patch: int, new_patch: int,
                           image_size: int) -> dict[str, torch.Tensor]:
    """A MotionFormer state dict at ``patch`` → the same at ``new_patch`` (which must divide ``patch``)."""
    k = patch // new_patch
    out = dict(sd)
    for key in ("patch_embed_3d.proj.weight", "patch_embed.proj.weight"):
        w = sd[key]  # (D, C, [T,] P, P)
        lead = w.shape[:-2]
        out[key] = w.reshape(*lead, new_patch, k, new_patch, k).sum((-3, -1)).contiguous()
    pe = sd["pos_embed"]  # (1, 1 + g², D): the class token's entry, then the patch grid
    g, new_g, d = image_size // patch, image_size // new_patch, pe.shape[-1]
    grid = pe[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid.float(), size=(new_g, new_g), mode="bilinear", align_corners=False)
    out["pos_embed"] = torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new_g * new_g, d).to(pe.dtype)],
                                 1).contiguous()
    return out


def resize_folder(src: Path, dst: Path, new_patch: int) -> dict:
    """Copy weights folder ``src`` to ``dst`` with its sync encoder at ``new_patch``; returns the new config."""
    from safetensors.torch import load_file, save_file

    cfg_file, w_file = src / SYNC / "config.json", src / SYNC / WEIGHTS
    if not (cfg_file.is_file() and w_file.is_file()):
        raise TrainingError(f"IN {src}: no {SYNC}/config.json + {WEIGHTS}; pass a weights folder (export, average "
                            f"or a run's final)")
    if dst.exists():
        raise TrainingError(f"OUT {dst} already exists; pass a new folder (nothing is overwritten)")
    cfg = json.loads(cfg_file.read_text())
    patch, size = int(cfg["patch_size"]), int(cfg["image_size"])
    if not (0 < new_patch < patch and patch % new_patch == 0 and size % new_patch == 0):
        raise TrainingError(f"--sync-patch-size {new_patch}: the sync encoder has {patch}-px patches on {size}-px "
                            f"frames; pass a smaller size that divides both (e.g. {patch // 2})")
    sd = resize_sync_state_dict(load_file(str(w_file)), patch, new_patch, size)
    cfg["patch_size"] = new_patch

    def resize_into(tmp: Path) -> None:
        save_file(sd, str(tmp / SYNC / WEIGHTS))
        (tmp / SYNC / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    write_folder_from(src, dst, resize_into)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.resize_patches",
                                 description="Warm-start a sync encoder with smaller patches from a trained one.")
    ap.add_argument("src", type=Path, metavar="IN", help="weights folder (export, average or a run's final)")
    ap.add_argument("dst", type=Path, metavar="OUT", help="new folder to write (must not exist)")
    ap.add_argument("--sync-patch-size", type=int, required=True,
                    help="the new patch size in px (divides the old one and the frame size)")
    return ap


def main(argv: list[str] | None = None) -> int:
    def run(args) -> None:
        cfg = resize_folder(args.src, args.dst, args.sync_patch_size)
        print(f"wrote {args.dst}: sync encoder at {cfg['patch_size']}-px patches "
              f"({(cfg['image_size'] // cfg['patch_size']) ** 2} per frame)")

    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
