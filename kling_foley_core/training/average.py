"""Average two weights folders of one model (checkpoint averaging, a "model soup").

    python -m kling_foley_core.training.average A B OUT [--weight 0.5]

``A`` and ``B`` are weights folders (``export`` or ``build`` output) of the same architecture, e.g. a run and the
run continued from it with ``--init``. Every floating-point tensor of ``OUT`` is ``(1 − w)·A + w·B``; the parts'
configs (vocabulary, sizes) must be equal, and everything else (integer buffers, the manifest) comes from ``B``.
A part whose weights are identical in both (e.g. a shared Mel-VAE) is copied unchanged. Safetensors files beside
the parts (``train_foley``'s training-only heads in a run's ``final``) are averaged too when both folders have
them, so the average can be an ``--init``. Averaging two models
that did not start from one another makes no sense and is not checked beyond shapes and configs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import TrainingError, cli_main, write_folder_from


def _part_dirs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and any(p.glob("*.safetensors"))}


def _average_file(fa: Path, fb: Path, out: Path, w: float, where: str) -> None:
    from safetensors.torch import load_file, save_file

    ta, tb = load_file(str(fa)), load_file(str(fb))
    if ta.keys() != tb.keys():
        extra = sorted(ta.keys() ^ tb.keys())[0]
        raise TrainingError(f"{where}: tensor '{extra}' is in one folder only; average folders of one architecture")
    avg = {}
    for k, b in tb.items():
        a = ta[k]
        if a.shape != b.shape:
            raise TrainingError(f"{where}: '{k}' is {tuple(a.shape)} in A but {tuple(b.shape)} in B; average folders "
                                f"of one architecture")
        if b.is_floating_point():
            avg[k] = ((1.0 - w) * a.float() + w * b.float()).to(b.dtype).contiguous()
        elif a.equal(b):
            avg[k] = b
        else:
            raise TrainingError(f"{where}: integer tensor '{k}' differs between the folders; they cannot be averaged")
    save_file(avg, str(out), metadata={"format": "pt"})


def average_weights(a: str | Path, b: str | Path, out: str | Path, weight: float = 0.5) -> Path:
    """Write ``(1 − weight)·a + weight·b`` into the new folder ``out`` (see the module docstring)."""
    a, b, out = Path(a), Path(b), Path(out)
    if not 0.0 <= weight <= 1.0:
        raise TrainingError(f"--weight {weight} must be in [0, 1] (the share of B)")
    for name, folder in (("A", a), ("B", b)):
        if not folder.is_dir() or not _part_dirs(folder):
            raise TrainingError(f"{name} {folder}: not a weights folder (part folders with .safetensors files)")
    if out.exists():
        raise TrainingError(f"OUT {out} already exists; write the average into a new folder")
    parts_a, parts_b = _part_dirs(a), _part_dirs(b)
    if parts_a.keys() != parts_b.keys():
        raise TrainingError(f"the folders hold different parts ({sorted(parts_a)} vs {sorted(parts_b)}); average "
                            f"weights folders of one model")
    for name, pb in parts_b.items():
        ca, cb = (json.loads(p.read_text()) if p.is_file() else None for p in (parts_a[name] / "config.json",
                                                                               pb / "config.json"))
        if ca != cb:
            raise TrainingError(f"part '{name}': its config.json differs between the folders (sizes or vocabulary); "
                                f"only weights of one architecture can be averaged")

    def average_into(tmp: Path) -> None:
        for name, pb in parts_b.items():
            for fb in sorted(pb.glob("*.safetensors")):
                fa = parts_a[name] / fb.name
                if not fa.is_file():
                    raise TrainingError(f"part '{name}': {fb.name} is missing from A")
                if fa.read_bytes() != fb.read_bytes():
                    _average_file(fa, fb, tmp / name / fb.name, weight, f"part '{name}'")
        for fb in sorted(b.glob("*.safetensors")):  # beside the parts: the training-only heads
            fa = a / fb.name
            if fa.is_file() and fa.read_bytes() != fb.read_bytes():
                _average_file(fa, fb, tmp / fb.name, weight, fb.name)

    return write_folder_from(b, out, average_into)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.average",
                                 description="Average two weights folders of one model: (1 - w)·A + w·B.")
    ap.add_argument("a", type=Path, help="weights folder A")
    ap.add_argument("b", type=Path, help="weights folder B (configs, manifest and integer buffers come from it)")
    ap.add_argument("out", type=Path, help="new folder for the average")
    ap.add_argument("--weight", type=float, default=0.5, help="share of B (default %(default)s)")
    return ap


def run(args) -> Path:
    out = average_weights(args.a, args.b, args.out, args.weight)
    print(f"averaged weights in {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
