"""Parity of the mel front-ends and the MMAudio mel VAE with the reference fixtures (tolerance 1e-4)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from kling_foley_core.compat import parity, parity_mel

TOL = 1e-4


def _fixture(fixtures_dir, name):
    prefix = fixtures_dir / "mmaudio" / name
    w = prefix.with_name(name + ".safetensors")
    return parity.Fixture(prefix=prefix, spec=json.loads(prefix.with_name(name + ".json").read_text()),
                          weights=load_file(str(w)) if w.is_file() else None,
                          io=load_file(str(prefix.with_name(name + ".io.safetensors"))))


@pytest.mark.parametrize("name", ["mel_converter", "mel_vae_tiny_16k", "mel_vae_tiny_44k"])
def test_handler_recomputes_every_output(fixtures_dir, name):
    fx = _fixture(fixtures_dir, name)
    assert parity.handler_for(fx.spec) is parity_mel
    outputs = parity_mel.run(fx)
    expected = {"mel_converter": {"mel_16k", "mel_44k"},
                "mel_vae_tiny_16k": {"posterior_mean", "posterior_std", "decoded"},
                "mel_vae_tiny_44k": {"posterior_mean", "posterior_std", "decoded"}}[name]
    assert set(outputs) == expected
    errors = parity.compare(fx, outputs)
    assert set(errors) == expected
    assert max(errors.values()) <= TOL, errors
    # the handler must compute, not copy: its tensors are new objects, not the io file's
    for k, v in outputs.items():
        assert v.data_ptr() != fx.io[k].data_ptr()


@pytest.mark.parametrize("name", ["mel_vae_tiny_16k", "mel_vae_tiny_44k"])
def test_parity_cli(fixtures_dir, name, capsys):
    rc = parity.main([str(fixtures_dir / "mmaudio" / name)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS" in out


def test_wrong_weights_fail_parity(fixtures_dir):
    # Sanity of the check itself: skipping the weight-norm removal must break parity by far.
    from kling_foley_core.compat.convert_mmaudio_vae import convert_mmaudio_vae_state_dict
    from kling_foley_core.models.mel_vae_mmaudio import MMAudioMelVAE

    fx = _fixture(fixtures_dir, "mel_vae_tiny_16k")
    conv = convert_mmaudio_vae_state_dict(fx.weights, weight_norm="keep")
    model = MMAudioMelVAE(**conv.config).eval()
    model.load_state_dict(conv.state_dict)
    with torch.no_grad():
        decoded = model.decode(fx.io["z"])
    assert parity.relative_error(decoded, fx.io["decoded"]) > 1e-2


def test_parity_cli_mel_converter(fixtures_dir, capsys):
    rc = parity.main([str(fixtures_dir / "mmaudio" / "mel_converter")])
    out = capsys.readouterr().out
    assert rc == 0 and "mel_44k" in out and "PASS" in out
