"""Parity tool: recompute a reference fixture's outputs with the library's own converter and classes.

    python -m kling_foley_core.compat.parity PREFIX [--out OUT.safetensors]

``PREFIX.json`` describes the reference (config, conventions, ``io_keys``); ``PREFIX.safetensors`` holds its
weights under the reference's own key names (or ``weight_rule`` in the JSON says how to rebuild them);
``PREFIX.io.safetensors`` holds the inputs and the reference outputs. Each fixture kind has a handler that
loads the weights through the library's converter, recomputes every output from the inputs and returns them.
The tool compares them with the reference (max |ours - ref| / (max |ref| + 1e-8)), optionally writes them to
OUT, and exits non-zero when any output exceeds the tolerance. Outputs are always computed, never copied.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

TOLERANCE = 1e-4

# (substring of the fixture's "reference" field, handler module). Each handler module exposes
# ``run(fixture: Fixture) -> dict[str, torch.Tensor]`` returning the outputs it recomputed.
HANDLERS: list[tuple[str, str]] = [
    ("networks.MMAudio", "kling_foley_core.compat.parity_mmdit"),
    ("ext/mel_converter", "kling_foley_core.compat.parity_mel"),
    ("ext/autoencoder/vae.VAE", "kling_foley_core.compat.parity_mel"),
    ("ext/synchformer", "kling_foley_core.compat.parity_synchformer"),
    ("bigvgan.BigVGAN", "kling_foley_core.models.vocoder_bigvgan"),
    ("hifi_foley.HunyuanVideoFoley", "kling_foley_core.hunyuan.parity"),
    ("models/dac_vae", "kling_foley_core.hunyuan.parity"),
]


@dataclass
class Fixture:
    """One reference fixture: its JSON spec, its reference-format weights (or None) and its io tensors."""

    prefix: Path
    spec: dict
    weights: dict[str, torch.Tensor] | None
    io: dict[str, torch.Tensor]

    @property
    def name(self) -> str:
        return self.prefix.name

    def output_keys(self, inputs: set[str]) -> list[str]:
        """Names in ``io_keys`` that are outputs (everything the handler does not take as input)."""
        keys = self.spec.get("io_keys", {})
        return [k for k in keys if k not in inputs]


class ParityError(RuntimeError):
    """A fixture that cannot be evaluated (missing files, unknown kind)."""


def load_fixture(prefix: str | Path) -> Fixture:
    prefix = Path(prefix)
    if prefix.suffix in (".json", ".safetensors"):
        prefix = prefix.with_suffix("")
        if prefix.suffix == ".io":
            prefix = prefix.with_suffix("")
    spec_path = prefix.with_name(prefix.name + ".json")
    if not spec_path.is_file():
        raise ParityError(f"parity: no fixture spec at '{spec_path}' (expected PREFIX.json beside PREFIX.io.safetensors)")
    spec = json.loads(spec_path.read_text())
    weights_path = prefix.with_name(prefix.name + ".safetensors")
    weights = load_file(str(weights_path)) if weights_path.is_file() else None
    # a fixture of a weight-free module (the mel front-end) has neither a config nor weights
    if weights is None and "weight_rule" not in spec and "config" in spec:
        raise ParityError(f"parity: '{weights_path}' is missing and '{spec_path.name}' has no weight_rule to rebuild it")
    io_path = prefix.with_name(prefix.name + ".io.safetensors")
    if not io_path.is_file():
        raise ParityError(f"parity: no io file at '{io_path}'")
    return Fixture(prefix=prefix, spec=spec, weights=weights, io=load_file(str(io_path)))


def handler_for(spec: dict):
    reference = spec.get("reference", "")
    for needle, module in HANDLERS:
        if needle in reference:
            return importlib.import_module(module)
    known = ", ".join(n for n, _ in HANDLERS)
    raise ParityError(f"parity: no handler for reference '{reference}' (known kinds: {known})")


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours = ours.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    if ours.shape != ref.shape:
        return float("inf")
    return float((ours - ref).abs().max() / (ref.abs().max() + 1e-8))


def compare(fixture: Fixture, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative error of each recomputed output that the io file holds."""
    return {k: relative_error(v, fixture.io[k]) for k, v in outputs.items() if k in fixture.io}


def run_parity(prefix: str | Path, out: str | Path | None = None) -> dict[str, float]:
    fixture = load_fixture(prefix)
    outputs = handler_for(fixture.spec).run(fixture)
    missing = [k for k in fixture.spec.get("io_keys", {}) if k not in outputs and k not in fixture.io]
    if missing:
        raise ParityError(f"parity: {fixture.name}: handler produced no value for {missing}")
    if out is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in outputs.items()}, str(out))
    return compare(fixture, outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kling_foley_core.compat.parity", description=__doc__.split("\n")[0])
    parser.add_argument("prefix", help="fixture prefix, e.g. fixtures/mmaudio/mmdit_tiny_v1_16k")
    parser.add_argument("--out", help="write the recomputed outputs to this .safetensors file")
    parser.add_argument("--tol", type=float, default=TOLERANCE, help="max relative error per output (default 1e-4)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        errors = run_parity(args.prefix, args.out)
    except ParityError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not errors:
        print(f"parity: {Path(args.prefix).name}: no output to compare", file=sys.stderr)
        return 2
    worst = 0.0
    for key, err in errors.items():
        status = "ok" if err <= args.tol else "FAIL"
        print(f"{key:24s} max_rel_err={err:.3e}  {status}")
        worst = max(worst, err)
    print(f"{Path(args.prefix).name}: {'PASS' if worst <= args.tol else 'FAIL'} (worst {worst:.3e}, tol {args.tol:g})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
