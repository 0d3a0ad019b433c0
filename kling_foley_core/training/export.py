"""Turn a training checkpoint into weights (EMA weights), without touching the run.

    python -m kling_foley_core.training.export RUN/checkpoints/step-0000750 OUT [--vae VAE_FOLDER]

A ``train_foley`` checkpoint becomes a default-model weights folder: ``OUT`` can then be evaluated
(``kling-foley eval synthhits --model OUT``) or loaded (``default_pipeline(directory=OUT)``) while the run goes on.
The parts are rebuilt from the sizes recorded in the run's ``config.json`` and filled with the checkpoint's EMA
weights; Mono2Stereo comes along when the run trained it. A ``train_mel_vae`` checkpoint becomes a Mel-VAE folder
(what ``--vae`` of the other commands takes).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from .common import EMA, TrainingError, cli_main

# accelerate numbers objects registered for checkpointing in registration order (train_foley and train_mel_vae:
# EMA, step counter, then train_foley's Mono2Stereo EMA when it is trained)
EMA_FILE, M2S_EMA_FILE = "custom_checkpoint_0.pkl", "custom_checkpoint_2.pkl"


def _load_ema(module: torch.nn.Module, path: Path, what: str) -> None:
    """Fill ``module`` with the EMA weights saved at ``path`` (the trainer's own EMA state and loader)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "shadow" not in state:
        raise TrainingError(f"'{path}' holds no EMA state; pass a train_foley or train_mel_vae checkpoint folder")
    ema = EMA(module)
    try:
        ema.load_state_dict(state)
    except TrainingError as e:
        raise TrainingError(f"{what}: the checkpoint does not fit the parts built from the run's config ({e}); "
                            f"export with the library version that trained it") from None
    ema.copy_to(module)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, vae: str | Path | None = None) -> Path:
    """Write the checkpoint's weights to ``out``, a new (or empty) folder: built beside it, then moved into place,
    so an existing export is never overwritten and a failed one leaves nothing behind."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"output '{out}' already exists; export to a new folder (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _export(Path(checkpoint), staging, vae)
        if out.exists():
            out.rmdir()  # the empty folder checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _export(ckpt: Path, out: Path, vae: str | Path | None) -> Path:
    from ..default_model.build import assemble
    from .train_foley import build_parts, export_parts

    run = ckpt.parent.parent
    cfg_path = run / "config.json"
    if not (ckpt / EMA_FILE).is_file() or not cfg_path.is_file():
        raise TrainingError(f"checkpoint '{ckpt}': expected RUN/checkpoints/step-N with {EMA_FILE} and RUN/config.json"
                            f"; pass a train_foley or train_mel_vae checkpoint folder")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("trainer") == "mel_vae":
        if vae is not None:
            raise TrainingError(f"--vae {vae}: checkpoint '{ckpt}' is a Mel-VAE run's; drop --vae")
        return export_vae_checkpoint(ckpt, cfg, out)
    if cfg.get("trainer") == "vocoder":
        if vae is not None:
            raise TrainingError(f"--vae {vae}: checkpoint '{ckpt}' is a vocoder run's; drop --vae")
        return export_vocoder_checkpoint(ckpt, cfg, out)
    if cfg.get("trainer") != "foley":
        raise TrainingError(f"checkpoint '{ckpt}': the run was trained by {cfg.get('trainer')!r}, not train_foley "
                            f"or train_mel_vae")
    vae = Path(vae) if vae is not None else Path(cfg["args"]["vae"])
    parts = build_parts(cfg["vocabulary"], cfg.get("overrides", {}), seed=0, sizes=cfg.get("sizes"))
    _load_ema(parts, ckpt / EMA_FILE, "foley parts")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_parts(parts.eval(), tmp / "foley")
        m2s_dir = None
        if (ckpt / M2S_EMA_FILE).is_file():
            from ..default_model.components import config as part_config
            from .train_foley import build_joint_mono2stereo

            m2s_cfg = (cfg.get("sizes") or {}).get("mono2stereo") or part_config("mono2stereo")
            m2s = build_joint_mono2stereo(parts, m2s_cfg)
            _load_ema(m2s, ckpt / M2S_EMA_FILE, "mono2stereo")
            m2s_dir = tmp / "mono2stereo"
            m2s.eval().save_pretrained(m2s_dir)
        return assemble(out, vae=vae, foley=tmp / "foley", mono2stereo=m2s_dir,
                        notes={"exported_from": f"{run.name}/{ckpt.name}"})


def export_vocoder_checkpoint(ckpt: Path, cfg: dict, out: Path) -> Path:
    """A ``train_vocoder`` checkpoint's EMA weights → a vocoder folder at ``out``."""
    from ..models.vocoder_vocos import VocosVocoder

    vocoder = VocosVocoder(**cfg["vocoder"])
    _load_ema(vocoder, ckpt / EMA_FILE, "vocoder")
    vocoder.eval().save_pretrained(out)
    return out


def export_vae_checkpoint(ckpt: Path, cfg: dict, out: Path) -> Path:
    """A ``train_mel_vae`` checkpoint's EMA weights (with its mel statistics) → a Mel-VAE folder at ``out``."""
    from ..models.mel_vae_kling import KlingMelVAE

    vae = KlingMelVAE(**cfg["vae"])
    _load_ema(vae, ckpt / EMA_FILE, "Mel-VAE")
    vae.eval().save_pretrained(out)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.export",
                                 description="Export a train_foley checkpoint's EMA weights as a weights folder, or "
                                             "a train_mel_vae checkpoint's as a Mel-VAE folder.")
    ap.add_argument("checkpoint", type=Path, help="RUN/checkpoints/step-N")
    ap.add_argument("out", type=Path, help="new (or empty) folder to write; an existing export is never overwritten")
    ap.add_argument("--vae", type=Path, default=None, help="Mel-VAE folder (default: the one the run trained with)")
    return ap


def run(args) -> Path:
    return export_checkpoint(args.checkpoint, args.out, vae=args.vae)


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
