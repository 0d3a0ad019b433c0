"""Synchformer visual branch: parity with MMAudio (full ViT-B size), key layout, windowing, preprocessing."""
from __future__ import annotations

import copy
import logging

import pytest
import torch

from kling_foley_core.compat.checkpoints import CheckpointError, init_empty
from kling_foley_core.compat.parity import load_fixture, relative_error
from kling_foley_core.encoders import (
    SYNCHFORMER_CONFIG, TINY_SYNCHFORMER_CONFIG, EncoderError, MotionFormer, convert_synchformer_state_dict,
    encode_sync_frames, get_sync_encoder, load_motionformer, num_sync_windows,
)
from kling_foley_core.encoders.base import random_init_


def tiny_model(seed: int = 0) -> MotionFormer:
    return load_motionformer(None, config=TINY_SYNCHFORMER_CONFIG, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def sync_fixture(request):
    from pathlib import Path

    return load_fixture(Path(__file__).parent / "fixtures" / "mmaudio" / "synchformer_rule")


def test_parity_full_size_first_segment(sync_fixture):
    """The handler rebuilds the 122 M reference weights by rule, converts them and reproduces MMAudio's features.
    Segments are independent in the model, so one segment (half the fixture's work) keeps this test short; the
    CLI (``python -m kling_foley_core.compat.parity``) checks both."""
    from kling_foley_core.compat import parity_synchformer

    fx = copy.copy(sync_fixture)
    fx.spec = dict(sync_fixture.spec, io_keys=dict(sync_fixture.spec["io_keys"], features=[1, 1, 8, 768]))
    out = parity_synchformer.run(fx)
    assert out["features"].shape == (1, 1, 8, 768)
    err = relative_error(out["features"], sync_fixture.io["features"][:, :1])
    assert err <= 1e-4, err
    assert relative_error(out["video_first_frame"], sync_fixture.io["video_first_frame"]) <= 1e-6


def test_weight_rule_check_catches_drift(sync_fixture):
    from kling_foley_core.compat.parity import ParityError
    from kling_foley_core.compat.parity_synchformer import check_weights, rule_state_dict

    keys = {k: sync_fixture.spec["keys"][k] for k in sync_fixture.spec["weight_check"]}
    sd = rule_state_dict(keys)
    check_weights(sd, sync_fixture.spec["weight_check"])
    sd["vfeat_extractor.cls_token"] = sd["vfeat_extractor.cls_token"] + 1e-3
    with pytest.raises(ParityError, match="cls_token"):
        check_weights(sd, sync_fixture.spec["weight_check"])


def test_state_dict_layout_matches_real_checkpoint(sync_fixture):
    model = init_empty(MotionFormer, **SYNCHFORMER_CONFIG)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {k[len("vfeat_extractor."):]: tuple(v) for k, v in sync_fixture.spec["keys"].items()}
    assert ours == ref
    assert sum(v.numel() for v in model.state_dict().values()) == sync_fixture.spec["n_params"]


def test_converter_drops_audio_branch_and_loads_from_pth(tmp_path):
    src = tiny_model(1)
    full = {f"vfeat_extractor.{k}": v for k, v in src.state_dict().items()}
    full.update({"afeat_extractor.blocks.0.attn.qkv.weight": torch.zeros(3, 3), "transformer.norm.weight": torch.ones(4),
                 "vproj.weight": torch.zeros(2, 2), "aproj.bias": torch.zeros(2)})
    conv = convert_synchformer_state_dict(full)
    assert set(conv) == set(src.state_dict())
    path = tmp_path / "synchformer_state_dict.pth"
    torch.save(full, path)
    loaded = load_motionformer(path, config=TINY_SYNCHFORMER_CONFIG)
    video = torch.randn(1, 2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(loaded(video), src(video))
    # the folder form finds the file by its usual name
    assert torch.equal(load_motionformer(tmp_path, config=TINY_SYNCHFORMER_CONFIG).cls_token, src.cls_token)


def test_converter_rejects_unrelated_checkpoint_and_missing_keys(tmp_path):
    with pytest.raises(CheckpointError, match="vfeat_extractor"):
        convert_synchformer_state_dict({"encoder.weight": torch.zeros(1)})
    sd = {f"vfeat_extractor.{k}": v for k, v in tiny_model().state_dict().items()}
    del sd["vfeat_extractor.norm.weight"]
    torch.save(sd, tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match="norm.weight"):
        load_motionformer(tmp_path / "s.pth", config=TINY_SYNCHFORMER_CONFIG)
    with pytest.raises(EncoderError, match="synchformer_state_dict.pth"):
        load_motionformer(tmp_path / "nope.pth")
    with pytest.raises(EncoderError, match="synchformer_state_dict"):
        get_sync_encoder("synchformer")


@pytest.mark.parametrize("frames,expected", [(0, 0), (1, 1), (15, 1), (16, 1), (23, 1), (24, 2), (200, 24), (250, 30)])
def test_num_windows_matches_design_formula(frames, expected):
    assert num_sync_windows(frames) == expected
    if frames >= 16:  # DESIGN: sync_seq_len = ((duration*25 - 16)//8 + 1)*8
        assert num_sync_windows(frames) * 8 == ((frames - 16) // 8 + 1) * 8


def test_windowing_equals_manual_windows_and_batching_is_invariant():
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    clip = torch.randn(11, 3, 32, 32, generator=g)  # window 4, stride 2 -> 4 windows, frame 10 unused
    tokens = encode_sync_frames(model, clip, batch_size=1)
    assert tokens.shape == (1, 4 * 2, 32)
    manual = torch.stack([clip[s * 2 : s * 2 + 4] for s in range(4)])[None]  # (1, 4, 4, C, H, W)
    with torch.inference_mode():
        ref = model(manual).reshape(1, 8, 32)
    assert torch.allclose(tokens, ref, atol=1e-6)
    both = encode_sync_frames(model, torch.stack([clip, clip.flip(0)]), batch_size=3)
    assert both.shape == (2, 8, 32)
    assert torch.allclose(both[0], tokens[0], atol=1e-6)
    assert not torch.allclose(both[1], tokens[0], atol=1e-3)


def test_short_clip_is_padded_with_last_frame(caplog):
    model = tiny_model()
    clip = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with caplog.at_level(logging.WARNING):
        tokens = encode_sync_frames(model, clip)
    assert "padding" in caplog.text
    padded = torch.cat([clip, clip[-1:]])
    assert torch.allclose(tokens, encode_sync_frames(model, padded), atol=1e-6)
    with pytest.raises(EncoderError, match="0 frames"):
        encode_sync_frames(model, clip[:0])


def test_preprocessing_constants_and_encoder_end_to_end():
    enc = get_sync_encoder("tiny-synchformer", generator=torch.Generator().manual_seed(0))
    assert enc.fps == 25.0 and enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.5, 0.5, 0.5)
    assert enc.tokens_per_window == 2 and enc.dim == 32
    gray = torch.full((5, 3, 48, 64), 128, dtype=torch.uint8)
    px = enc.preprocess(gray)
    assert px.shape == (5, 3, 32, 32)
    assert torch.allclose(px, torch.full_like(px, (128 / 255 - 0.5) / 0.5), atol=1e-5)
    frames = torch.randint(0, 256, (2, 9, 3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    out = enc.encode(frames)
    assert out.shape == (2, num_sync_windows(9, 4, 2) * 2, 32) and torch.isfinite(out).all()
    with pytest.raises(EncoderError, match="channels-first"):
        enc.encode(torch.zeros(4, 32, 32, 3))


def test_full_size_preset_matches_motionformer_config():
    assert SYNCHFORMER_CONFIG == dict(image_size=224, patch_size=16, tubelet_size=2, num_frames=16, embed_dim=768,
                                      depth=12, num_heads=12, mlp_ratio=4.0)
    model = init_empty(MotionFormer, **SYNCHFORMER_CONFIG)
    assert model.tokens_per_window == 8 and model.grid == 14


def test_random_init_uses_only_the_given_generator():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = random_init_(init_empty(MotionFormer, **TINY_SYNCHFORMER_CONFIG).to_empty(device="cpu"),
                     torch.Generator().manual_seed(9))
    b = random_init_(init_empty(MotionFormer, **TINY_SYNCHFORMER_CONFIG).to_empty(device="cpu"),
                     torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("hw", [(32, 32), (40, 60)])
def test_uint8_and_float_frames_give_the_same_tokens(hw):
    """uint8 frames at the model's size are normalised per window batch (the clip stays uint8); the tokens equal
    those of the same pixels as float 0..1 frames, also for short clips (padding) and frames that need a resize."""
    enc = get_sync_encoder("tiny-synchformer", generator=torch.Generator().manual_seed(0))
    for t in (3, 11):
        u8 = torch.randint(0, 256, (2, t, 3, *hw), dtype=torch.uint8, generator=torch.Generator().manual_seed(t))
        f = u8.float() / 255.0
        keep = f.clone()
        a, b = enc.encode(u8, batch_size=3), enc.encode(f, batch_size=2)
        assert a.shape == b.shape == (2, num_sync_windows(t, 4, 2) * 2, 32)
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
        assert torch.equal(f, keep)
