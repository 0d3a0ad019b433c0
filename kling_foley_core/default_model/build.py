"""Load the embedded ``foley-tiny`` model, and assemble its weights folder from training runs.

    from kling_foley_core.pipeline import KlingFoleyPipeline

    pipe = KlingFoleyPipeline.from_pretrained("foley-tiny")        # or KlingFoleyPipeline(**load_default_model())
    out = pipe("clip.mp4", num_inference_steps=25, guidance_scale=4.5)   # out.waveform (1, 2, T) at 16 kHz

The weights folder is a diffusers pipeline folder: ``model_index.json``, one ``save_pretrained`` folder per part
(``config.json`` + ``diffusion_pytorch_model.safetensors``; the visual encoder's ``encoder_config.json``; the
vocoder's: the trained one's weights, or Griffin-Lim's ``config.json`` alone) and ``foley_tiny.json`` (what trained them). Assembling it from the
trainers' outputs (see ``TRAINING.md``)::

    python -m kling_foley_core.default_model.build --vae RUN_VAE/final/vae --foley RUN_FOLEY/final \\
        --mono2stereo RUN_M2S/final/mono2stereo --out kling_foley_core/default_model/weights
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..offload import align_weights
from .components import NAME, load_vocoder

log = logging.getLogger(__name__)

__all__ = ["DefaultModelError", "load_default_model", "default_pipeline", "weights_dir", "is_available",
           "PARTS"]

PARTS = ("transformer", "vae", "visual_encoder", "sync_encoder", "text_encoder", "mono2stereo")
MANIFEST = "foley_tiny.json"
APG_ETA = 0.0  # the guidance foley-tiny is tuned for (adaptive projected guidance; model_index.json's apg_eta)


class DefaultModelError(ValueError):
    """The default model's weights are missing or do not fit (names the folder and the fix)."""


def weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def is_available(directory: str | Path | None = None) -> bool:
    d = Path(directory) if directory is not None else weights_dir()
    return all((d / p / "config.json").is_file() for p in PARTS)


def load_default_model(device: torch.device | str = "cpu", *, dtype: torch.dtype = torch.float32,
                       directory: str | Path | None = None, vocoder_iters: int = 32) -> dict:
    """The ``foley-tiny`` components as ``KlingFoleyPipeline(**components)`` takes them.

    ``directory``: a weights folder (default: the one shipped inside the package). Raises
    :class:`DefaultModelError` when a part is missing. Each part is read by its class's ``from_pretrained``,
    as ``KlingFoleyPipeline.from_pretrained`` reads it, and frozen with aligned weights, so both routes give the
    same audio.
    """
    from ..encoders.synchformer import SynchformerEncoder
    from ..encoders.visual import ClipVisualEncoder
    from ..models.mel_vae_kling import KlingMelVAE
    from ..models.mmdit import KlingFoleyMMDiT
    from ..models.mono2stereo import Mono2Stereo
    from .text_encoder import WordTextEncoder

    d = Path(directory) if directory is not None else weights_dir()
    missing = [p for p in PARTS if not (d / p / "config.json").is_file()]
    if missing:
        raise DefaultModelError(f"the {NAME} weights folder '{d}' lacks {', '.join(missing)}; assemble it with "
                                f"`python -m kling_foley_core.default_model.build` (see TRAINING.md) or reinstall "
                                f"the package")

    def load(cls, part):
        try:
            return align_weights(cls.from_pretrained(str(d / part), torch_dtype=dtype)).to(device).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise DefaultModelError(f"{NAME}: cannot load '{d / part}' as {cls.__name__} ({str(e).splitlines()[0]}); "
                                    f"re-assemble the weights folder") from None

    comps = dict(
        transformer=load(KlingFoleyMMDiT, "transformer"),
        vae=load(KlingMelVAE, "vae"),
        visual_encoder=load(ClipVisualEncoder, "visual_encoder"),
        sync_encoder=load(SynchformerEncoder, "sync_encoder"),
        text_encoder=load(WordTextEncoder, "text_encoder"),
        mono2stereo=load(Mono2Stereo, "mono2stereo"),
    )
    comps["vocoder"] = _vocoder(d, comps["vae"], vocoder_iters).to(device)
    for m in comps.values():
        m.requires_grad_(False)
    return comps


def _vocoder(d: Path, vae, vocoder_iters: int):
    """The folder's vocoder (the trained one its ``vocoder/config.json`` names, else Griffin-Lim), checked against
    the VAE's mel layout."""
    from ..models.vocoder_bigvgan import VocoderInputError
    from ..models.vocoder_vocos import check_vocoder_fits

    try:
        vocoder = load_vocoder(d / "vocoder", vocoder_iters)
        check_vocoder_fits(vocoder, vae.mel_mode or "16k", what=f"the vocoder in '{d / 'vocoder'}'",
                           of=f"Mel-VAE in '{d / 'vae'}'")
    except (OSError, ValueError, RuntimeError) as e:
        if isinstance(e, VocoderInputError):
            raise DefaultModelError(str(e)) from None
        raise DefaultModelError(f"{NAME}: cannot load '{d / 'vocoder'}' ({str(e).splitlines()[0]}); re-assemble the "
                                f"weights folder") from None
    return vocoder


def default_pipeline(device: torch.device | str = "cpu", **kwargs):
    from ..pipeline import KlingFoleyPipeline

    return KlingFoleyPipeline(**load_default_model(device, **kwargs), apg_eta=APG_ETA)


# ----------------------------------------------------------------------------------------------------------
# Assembling the weights folder
# ----------------------------------------------------------------------------------------------------------
def _copy_part(src: Path, dst: Path) -> None:
    if not (src / "config.json").is_file():
        raise DefaultModelError(f"'{src}' is not a saved part (no config.json); pass a trainer's final/<part> folder")
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        if not (src / f).is_file():
            raise DefaultModelError(f"'{src}' lacks {f}")
        shutil.copy2(src / f, tmp / f)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _write_pipeline_files(out: Path) -> None:
    """What makes the parts a pipeline folder: model_index.json, the vocoder's and the visual encoder's settings
    (configs only: the weights are left exactly as copied)."""
    from ..pipeline import KlingFoleyPipeline

    comps = load_default_model("cpu", directory=out)
    KlingFoleyPipeline(**comps, apg_eta=APG_ETA).save_config(out)
    comps["vocoder"].save_config(out / "vocoder")
    _drop_load_path(out / "vocoder" / "config.json")
    comps["visual_encoder"].name = f"{NAME}-clip"
    comps["visual_encoder"].save_settings(out / "visual_encoder")


def _drop_load_path(config: Path) -> None:
    """A part loaded with ``from_pretrained`` remembers its folder (``_name_or_path``); a config saved from it would
    carry the building machine's path into the shipped weights."""
    cfg = json.loads(config.read_text())
    if cfg.pop("_name_or_path", None) is not None:
        config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def assemble(out: Path, *, vae: Path | None = None, foley: Path | None = None, mono2stereo: Path | None = None,
             vocoder: Path | None = None, notes: dict | None = None) -> Path:
    """Copy the parts from the trainers' ``final`` folders into ``out`` and update ``foley_tiny.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if vae is not None:
        _copy_part(Path(vae), out / "vae")
    if foley is not None:
        for part in ("transformer", "visual_encoder", "sync_encoder", "text_encoder"):
            _copy_part(Path(foley) / part, out / part)
    if mono2stereo is not None:
        _copy_part(Path(mono2stereo), out / "mono2stereo")
    if vocoder is not None:
        _copy_part(Path(vocoder), out / "vocoder")
    if is_available(out):
        _write_pipeline_files(out)
    man_path = out / MANIFEST
    manifest = json.loads(man_path.read_text()) if man_path.is_file() else {"name": NAME}
    manifest["parts"] = {p: round(sum(f.stat().st_size for f in (out / p).iterdir()) / 1e6, 3)
                         for p in (*PARTS, "vocoder") if (out / p).is_dir()}
    manifest["total_mb"] = round(sum(manifest["parts"].values()), 3)
    if notes:
        manifest.setdefault("training", {}).update(notes)
    man_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.default_model.build",
                                 description=f"Assemble the {NAME} weights folder from training runs.")
    ap.add_argument("--out", type=Path, default=weights_dir())
    ap.add_argument("--vae", type=Path, default=None, help="train_mel_vae's final/vae")
    ap.add_argument("--foley", type=Path, default=None, help="train_foley's final folder")
    ap.add_argument("--mono2stereo", type=Path, default=None, help="train_mono2stereo's final/mono2stereo")
    ap.add_argument("--vocoder", type=Path, default=None, help="train_vocoder's final/vocoder (default: Griffin-Lim)")
    ap.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="training notes to record")
    args = ap.parse_args(argv)
    notes = dict(n.split("=", 1) for n in args.note if "=" in n)
    try:
        out = assemble(args.out, vae=args.vae, foley=args.foley, mono2stereo=args.mono2stereo, vocoder=args.vocoder,
                       notes=notes)
    except DefaultModelError as e:
        print(f"error: {e}")
        return 2
    print(json.dumps(json.loads((out / MANIFEST).read_text()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
