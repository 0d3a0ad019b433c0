"""Parity with the MMAudio reference (hkchengrex/MMAudio @974010a) on its tiny v1 and v2 fixtures: every output
(flow, flow_uncond, flow_cfg, sample_normalized, sample_unnormalized) recomputed through the converter, the
library's model and its sampler registry, within 1e-4 relative error."""
from pathlib import Path

import pytest

from kling_foley_core.compat.parity import TOLERANCE, load_fixture, run_parity

FIX = Path(__file__).parent / "fixtures" / "mmaudio"
OUTPUTS = {"flow", "flow_uncond", "flow_cfg", "sample_normalized", "sample_unnormalized"}


@pytest.mark.parametrize("name", ["mmdit_tiny_v1_16k", "mmdit_tiny_v2_44k"])
def test_mmdit_parity(name, tmp_path):
    errors = run_parity(FIX / name, out=tmp_path / "ours.safetensors")
    assert set(errors) == OUTPUTS
    assert max(errors.values()) <= TOLERANCE, errors


def test_parity_handler_computes_rather_than_copies():
    from kling_foley_core.compat import parity_mmdit

    fixture = load_fixture(FIX / "mmdit_tiny_v1_16k")
    fixture.io = {k: v for k, v in fixture.io.items() if k not in OUTPUTS}  # hide every reference output
    out = parity_mmdit.run(fixture)
    ref = load_fixture(FIX / "mmdit_tiny_v1_16k").io
    for key in OUTPUTS:
        assert (out[key] - ref[key]).abs().max() / ref[key].abs().max() <= TOLERANCE
    # and a corrupted weight shows up as a parity failure
    fixture.weights = dict(fixture.weights)
    fixture.weights["final_layer.conv.bias"] = fixture.weights["final_layer.conv.bias"] + 1.0
    bad = parity_mmdit.run(fixture)
    assert (bad["flow"] - ref["flow"]).abs().max() / ref["flow"].abs().max() > TOLERANCE
