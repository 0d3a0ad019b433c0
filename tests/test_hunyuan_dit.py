"""HunyuanVideo-Foley DiT: reference parity, the time mapping into the library's sampler convention, shapes."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kling_foley_core.compat.checkpoints import init_empty
from kling_foley_core.compat.parity import TOLERANCE, run_parity
from kling_foley_core.hunyuan import (PRESETS, HunyuanConfigError, HunyuanFoleyDiT, dit_config_from_state_dict,
                                      dit_size_name, load_hunyuan_dit)
from kling_foley_core.sampling import CFGDenoiser, make_schedule, sample

HERE = Path(__file__).parent / "fixtures" / "hunyuan"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = HunyuanFoleyDiT.from_preset("tiny").eval()
    with torch.no_grad():  # the released init zeroes adaLN/final layers; randomise so every path matters
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _feats(model, b=2, n=37, m=13, s=16, l=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    return dict(x=torch.randn(b, c.audio_vae_latent_dim, n, generator=g),
                clip=torch.randn(b, m, c.clip_dim, generator=g), sync=torch.randn(b, s, c.sync_feat_dim, generator=g),
                text=torch.randn(b, l, c.condition_dim, generator=g))


def test_parity_hvf_tiny():
    errors = run_parity(HERE / "hvf_tiny")
    assert set(errors) == {"velocity", "velocity_uncond", "sample"}
    assert max(errors.values()) <= TOLERANCE, errors


def test_time_mapping_is_pinned(tiny):
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.equal(HunyuanFoleyDiT.to_native_time(t), torch.tensor([1000.0, 750.0, 500.0, 0.0]))
    f = _feats(tiny)
    cond = tiny.prepare_conditions(f["clip"], f["sync"], f["text"], f["x"].shape[-1])
    tb = torch.tensor([0.1, 0.7])
    with torch.no_grad():
        v = tiny.predict_flow(f["x"], tb, cond)
        v_native = tiny.forward_native(f["x"], 1000.0 * (1 - tb), cond)
    torch.testing.assert_close(v, -v_native, rtol=0, atol=0)


def test_library_euler_equals_native_reverse_scheduler(tiny):
    """Euler on linspace(0,1) through predict_flow == x + (σ_next − σ)·v_native with σ from 1 down to 0."""
    f = _feats(tiny, b=1)
    n = f["x"].shape[-1]
    with torch.no_grad():
        cond = tiny.prepare_conditions(f["clip"], f["sync"], f["text"], n)
        uncond = tiny.get_empty_conditions(f["text"] * 0, batch_size=1, clip_len=13, sync_len=16,
                                           latent_len=n)
        ours = sample("euler", CFGDenoiser(tiny, cond, uncond, 3.0), f["x"].clone(), make_schedule("uniform", 5))
        sigmas = torch.linspace(1, 0, 6)
        x = f["x"].clone()
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            t = (s * 1000).reshape(1)
            vc, vu = tiny.forward_native(x, t, cond), tiny.forward_native(x, t, uncond)
            x = x + (s_next - s) * (vu + 3.0 * (vc - vu))
    # same tolerance as the parity tool: max error relative to the largest value (random weights are chaotic)
    assert float((ours - x).abs().max() / x.abs().max()) < 1e-4


def test_shapes_and_batching(tiny):
    f = _feats(tiny, b=3, n=29, m=40, s=24, l=9)  # more visual than audio tokens: lossy RoPE round trip path
    cond = tiny.prepare_conditions(f["clip"], f["sync"], f["text"], 29)
    assert cond.sync.shape == (3, 29, 64) and cond.visual.shape == (3, 40, 64) and cond.text.shape == (3, 9, 64)
    uncond = tiny.get_empty_conditions(f["text"][:1], batch_size=3, clip_len=40, sync_len=24, latent_len=29)
    joint = cond.batch_cat(uncond)
    assert joint.batch_size == 6
    with torch.no_grad():
        v = tiny.predict_flow(torch.cat([f["x"], f["x"]]), torch.full((6,), 0.3), joint)
        v_c = tiny.predict_flow(f["x"], torch.full((3,), 0.3), cond)
    assert v.shape == (6, 16, 29) and v.dtype == torch.float32
    torch.testing.assert_close(v[:3], v_c, rtol=1e-5, atol=1e-5)  # batching changes nothing
    other = tiny.prepare_conditions(f["clip"], f["sync"], f["text"], 30)
    with pytest.raises(ValueError, match="latent frames"):
        cond.batch_cat(other)
    with pytest.raises(ValueError, match="prepared for 29"):
        tiny.predict_flow(torch.zeros(3, 16, 30), torch.zeros(3), cond)


def test_empty_conditions_use_learned_features(tiny):
    f = _feats(tiny, b=1)
    n = f["x"].shape[-1]
    with torch.no_grad():
        u1 = tiny.predict_flow(f["x"], torch.tensor([0.5]), tiny.get_empty_conditions(
            f["text"], batch_size=1, clip_len=13, sync_len=16, latent_len=n))
        saved = tiny.empty_clip_feat.clone()
        tiny.empty_clip_feat.add_(1.0)
        u2 = tiny.predict_flow(f["x"], torch.tensor([0.5]), tiny.get_empty_conditions(
            f["text"], batch_size=1, clip_len=13, sync_len=16, latent_len=n))
        tiny.empty_clip_feat.copy_(saved)
    assert (u1 - u2).abs().max() > 1e-4


def test_bad_inputs_are_named(tiny):
    f = _feats(tiny)
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny.prepare_conditions(f["clip"], f["sync"][:, :12], f["text"], 37)
    with pytest.raises(ValueError, match="clip_feat has 7 channels"):
        tiny.prepare_conditions(f["clip"][..., :7], f["sync"], f["text"], 37)
    with pytest.raises(HunyuanConfigError, match="divisible"):
        HunyuanFoleyDiT(hidden_size=10, num_heads=3)
    with pytest.raises(HunyuanConfigError, match="not understood"):
        HunyuanFoleyDiT.config_from_reference({"hidden_size": 64, "bogus_key": 1})


@pytest.mark.parametrize("name,head_dim", [("xxl", 128), ("xl", 128)])
def test_released_sizes_are_detected_from_shapes(name, head_dim):
    model = init_empty(HunyuanFoleyDiT, **PRESETS[name])  # meta device: no memory
    sd = model.state_dict()
    cfg = dit_config_from_state_dict(sd)
    assert dit_size_name(cfg) == name
    assert cfg["hidden_size"] // cfg["num_heads"] == head_dim
    assert cfg["audio_vae_latent_dim"] == 128 and cfg["clip_dim"] == 768 and cfg["sync_feat_dim"] == 768


def test_fixture_config_detected_from_weights():
    sd = load_file(str(HERE / "hvf_tiny.safetensors"))
    cfg = dit_config_from_state_dict(sd)
    assert dit_size_name(cfg) == "custom"
    model = load_hunyuan_dit(sd, precision="fp32")
    assert model.config.depth_triple_blocks == 2 and model.config.num_heads == 2 and model.config.sync_feat_dim == 24


def test_feature_lengths_follow_the_encoders(tiny):
    assert HunyuanFoleyDiT.feature_lengths(8.0) == {"clip_len": 64, "sync_len": 192}  # the training clips
    assert HunyuanFoleyDiT.feature_lengths(10.0)["sync_len"] == 240
    assert tiny.latent_length(8.0) == 400 and tiny.latent_length(5.3) == 265
    with pytest.raises(ValueError, match="too short"):
        HunyuanFoleyDiT.feature_lengths(0.5)
