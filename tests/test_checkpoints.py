import pickle

import pytest
import torch
from safetensors.torch import save_file

from kling_foley_core.compat.checkpoints import (CheckpointError, dtype_from_name, init_empty, load_state_dict_strict,
                                                 read_state_dict, strip_prefix)


class Net(torch.nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.a = torch.nn.Linear(width, width)
        self.b = torch.nn.Linear(width, 2)


def test_safetensors_and_pickle_round_trip(tmp_path):
    net = Net()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        sd = read_state_dict(tmp_path / name)
        assert set(sd) == set(net.state_dict())
        assert torch.equal(sd["a.weight"], net.a.weight)


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="unsafe unpickling"):
        read_state_dict(tmp_path / "evil.pth")


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "t.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        read_state_dict(tmp_path / "t.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown extension"):
        read_state_dict(tmp_path / "w.onnx")


def test_meta_init_then_assign_gives_the_same_model(tmp_path):
    ref = Net().eval()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    empty = init_empty(Net)
    assert all(p.is_meta for p in empty.parameters())
    load_state_dict_strict(empty, read_state_dict(tmp_path / "w.safetensors"), what="Net")
    x = torch.randn(3, 4)
    assert torch.equal(empty.b(empty.a(x)), ref.b(ref.a(x)))


def test_key_errors_name_missing_unexpected_and_shapes():
    sd = Net().state_dict()
    sd.pop("b.bias")
    sd["c.weight"] = torch.zeros(1)
    sd["a.weight"] = torch.zeros(5, 4)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(Net(), sd, what="MM-DiT", looks_like="an MMAudio VAE")
    msg = str(e.value)
    assert "MM-DiT" in msg and "b.bias" in msg and "c.weight" in msg and "a.weight (5, 4)" in msg
    assert "looks like an MMAudio VAE" in msg


def test_dtype_and_prefix():
    net = Net()
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    load_state_dict_strict(net, strip_prefix(sd), what="Net", dtype=torch.bfloat16)
    assert net.a.weight.dtype == torch.bfloat16
    assert dtype_from_name("fp16") is torch.float16
    with pytest.raises(ValueError, match="precision 'fp8x'"):
        dtype_from_name("fp8x")
