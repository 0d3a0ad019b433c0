"""Warm-starting a sync encoder with smaller patches (training.resize_patches)."""
from __future__ import annotations

import json

import torch

from kling_foley_core.encoders.synchformer import TINY_SYNCHFORMER_CONFIG, MotionFormer
from kling_foley_core.training.resize_patches import main


def _weights_folder(root):
    torch.manual_seed(0)
    m = MotionFormer(**TINY_SYNCHFORMER_CONFIG)  # 32-px frames, 16-px patches: a 2 × 2 grid
    m.save_pretrained(str(root / "sync_encoder"))
    (root / "aux_heads.safetensors").write_bytes(b"heads")
    return m


def test_small_patches_see_what_the_big_ones_saw_upsampled(tmp_path):
    old = _weights_folder(tmp_path / "in")
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--sync-patch-size", "8"]) == 0
    new = MotionFormer.from_pretrained(str(tmp_path / "out" / "sync_encoder"))
    assert new.config.patch_size == 8 and new.grid == 4
    x = torch.randn(1, 3, 2, 32, 32)  # (B, C, T, H, W): one tubelet
    tokens = new.patch_embed_3d.proj(x)  # (1, D, 1, 4, 4)
    up = torch.nn.functional.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")  # 64 px: a 4 × 4 grid of 16 px
    assert torch.allclose(tokens, old.patch_embed_3d.proj(up), atol=1e-4)
    # the position table is interpolated: the four corners of the new grid lean to the old grid's four entries
    pe_old, pe_new = old.pos_embed[0, 1:].view(2, 2, -1), new.pos_embed[0, 1:].view(4, 4, -1)
    assert torch.allclose(pe_new[0, 0], pe_old[0, 0]) and torch.allclose(pe_new[3, 3], pe_old[1, 1])
    assert torch.equal(new.pos_embed[0, 0], old.pos_embed[0, 0])  # the class token's entry is kept
    for k, v in old.state_dict().items():  # every other weight is copied
        if "embed" not in k:
            assert torch.equal(new.state_dict()[k], v), k
    assert (tmp_path / "out" / "aux_heads.safetensors").read_bytes() == b"heads"
    out = new(torch.randn(1, 2, 4, 3, 32, 32))
    assert out.shape == (1, 2, 2, 32) and torch.isfinite(out).all()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    _weights_folder(tmp_path / "in")
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--sync-patch-size", "6"]) == 2
    assert "--sync-patch-size 6: the sync encoder has 16-px patches on 32-px frames" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "--sync-patch-size", "8"]) == 2
    assert "no sync_encoder/config.json" in capsys.readouterr().out
    (tmp_path / "taken").mkdir()
    assert main([str(tmp_path / "in"), str(tmp_path / "taken"), "--sync-patch-size", "8"]) == 2
    assert "already exists" in capsys.readouterr().out
    assert list((tmp_path / "taken").iterdir()) == []
    assert json.loads((tmp_path / "in" / "sync_encoder" / "config.json").read_text())["patch_size"] == 16


def test_a_failed_write_leaves_no_folder(tmp_path, capsys, monkeypatch):
    _weights_folder(tmp_path / "in")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--sync-patch-size", "8"]) == 2
    assert "writing failed (No space left on device); nothing was written" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
