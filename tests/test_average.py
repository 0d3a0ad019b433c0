"""Checkpoint averaging of two weights folders (training.average)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from kling_foley_core.training.average import average_weights, main
from kling_foley_core.training.common import TrainingError

W = "diffusion_pytorch_model.safetensors"


def _folder(root, seed, *, width=4, vocab=("a", "b")):
    g = torch.Generator().manual_seed(seed)
    for part in ("transformer", "vae"):
        (root / part).mkdir(parents=True)
        (root / part / "config.json").write_text(json.dumps({"width": width, "vocabulary": list(vocab)}))
    save_file({"w": torch.randn(width, 3, generator=g), "steps": torch.tensor([7]),
               "h": torch.randn(2, generator=g).half()}, str(root / "transformer" / W))
    save_file({"v": torch.arange(6.0)}, str(root / "vae" / W))  # identical in both: copied unchanged
    (root / "foley_tiny.json").write_text(json.dumps({"seed": seed}))
    return root


def test_average_is_the_weighted_mean_of_float_tensors(tmp_path):
    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1)
    out = average_weights(a, b, tmp_path / "out", 0.25)
    ta, tb, to = (load_file(str(f / "transformer" / W)) for f in (a, b, out))
    torch.testing.assert_close(to["w"], 0.75 * ta["w"] + 0.25 * tb["w"])
    torch.testing.assert_close(to["h"].float(), (0.75 * ta["h"].float() + 0.25 * tb["h"].float()), atol=1e-3, rtol=0)
    assert to["h"].dtype == torch.float16 and torch.equal(to["steps"], tb["steps"])
    assert (out / "vae" / W).read_bytes() == (b / "vae" / W).read_bytes()
    assert json.loads((out / "foley_tiny.json").read_text()) == {"seed": 1}
    assert not list(tmp_path.glob("out.*"))  # the temporary folder it was built in is gone
    heads = tmp_path / "heads"
    for f, v in ((a, 1.0), (b, 3.0)):  # training-only heads beside the parts are averaged as well
        save_file({"sync_head.bias": torch.tensor([v])}, str(f / "aux_heads.safetensors"))
    torch.testing.assert_close(load_file(str(average_weights(a, b, heads, 0.25) / "aux_heads.safetensors"))
                               ["sync_head.bias"], torch.tensor([1.5]))
    (a / "aux_heads.safetensors").unlink()
    ends = average_weights(a, b, tmp_path / "b_only", 1.0)
    assert torch.equal(load_file(str(ends / "transformer" / W))["w"], tb["w"])
    assert (ends / "aux_heads.safetensors").read_bytes() == (b / "aux_heads.safetensors").read_bytes()  # B's only


@pytest.mark.parametrize("other, message", [
    (dict(width=5), "config.json differs"),
    (dict(vocab=("a", "c")), "config.json differs"),
])
def test_different_architectures_are_refused(tmp_path, other, message):
    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1, **other)
    with pytest.raises(TrainingError, match=message):
        average_weights(a, b, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_command_errors_are_one_line(tmp_path, capsys):
    a, b = _folder(tmp_path / "a", 0), _folder(tmp_path / "b", 1)
    assert main([str(a), str(b), str(tmp_path / "o"), "--weight", "1.5"]) == 2
    assert "error: --weight 1.5 must be in [0, 1]" in capsys.readouterr().out
    assert main([str(a), str(tmp_path / "nope"), str(tmp_path / "o")]) == 2
    assert "not a weights folder" in capsys.readouterr().out
    assert main([str(a), str(b), str(b)]) == 2
    assert "already exists; write the average into a new folder" in capsys.readouterr().out
    save_file({"w": torch.zeros(4, 2), "steps": torch.tensor([7]), "h": torch.zeros(2).half()},
              str(b / "transformer" / W))
    assert main([str(a), str(b), str(tmp_path / "o")]) == 2
    assert "'w' is (4, 3) in A but (4, 2) in B" in capsys.readouterr().out
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.*"))
    assert main([str(a), str(a), str(tmp_path / "o")]) == 0 and (tmp_path / "o" / "transformer" / W).is_file()
