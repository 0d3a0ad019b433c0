"""MMAudio mel VAE: loading reference checkpoints (pth / safetensors, fp32 / fp16 / bf16), weight-norm removal,
config inference, clear errors, diffusers save/load, posterior sampling."""
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from kling_foley_core.compat.checkpoints import CheckpointError
from kling_foley_core.compat.convert_mmaudio_vae import (MelVAECheckpointError, convert_mmaudio_vae_state_dict,
                                                         infer_mmaudio_vae_config, is_inference_form)
from kling_foley_core.models.mel_vae_mmaudio import (DiagonalGaussian, MMAudioMelVAE, MPConv1d, load_mmaudio_mel_vae,
                                                     mmaudio_vae_config)


def _load(fixtures_dir, name):
    base = fixtures_dir / "mmaudio" / name
    weights = load_file(str(base.with_name(name + ".safetensors")))
    return weights, load_file(str(base.with_name(name + ".io.safetensors")))


def _rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("name,mode", [("mel_vae_tiny_16k", "16k"), ("mel_vae_tiny_44k", "44k")])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_load_reference_checkpoint_file(tmp_path, fixtures_dir, name, mode, fmt):
    sd, io = _load(fixtures_dir, name)
    path = tmp_path / f"vae.{fmt}"
    torch.save(sd, path) if fmt == "pth" else save_file(sd, str(path))
    model = load_mmaudio_mel_vae(path, mode=mode)
    assert not model.training
    assert model.config.data_dim == {"16k": 80, "44k": 128}[mode]
    assert model.mel_mode == mode
    with torch.inference_mode():
        post = model.encode(io["mel"])
        dec = model.decode(io["z"])
    assert _rel(post.mean, io["posterior_mean"]) < 1e-5
    assert _rel(post.std, io["posterior_std"]) < 1e-5
    assert _rel(dec, io["decoded"]) < 1e-5
    assert post.mean.shape[-1] == io["mel"].shape[-1] // 2


@pytest.mark.parametrize("store_dtype", [torch.float16, torch.bfloat16])
def test_half_precision_exports(tmp_path, fixtures_dir, store_dtype):
    sd, io = _load(fixtures_dir, "mel_vae_tiny_44k")
    path = tmp_path / "vae_half.safetensors"
    save_file({k: v.to(store_dtype) for k, v in sd.items()}, str(path))
    # fp32 compute from a half export: the removal runs in fp32 on the rounded weights, as the reference would
    m32 = load_mmaudio_mel_vae(path)
    assert m32.dtype == torch.float32
    with torch.no_grad():
        dec = m32.decode(io["z"])
    tol = 5e-3 if store_dtype == torch.float16 else 3e-2
    assert _rel(dec, io["decoded"]) < tol
    # and run in that dtype
    mh = load_mmaudio_mel_vae(path, dtype=store_dtype)
    assert mh.dtype == store_dtype
    with torch.no_grad():
        post = mh.encode(io["mel"])
    assert post.mean.dtype == store_dtype
    assert _rel(post.mean, io["posterior_mean"]) < 10 * tol


def test_weight_norm_removal_formula(fixtures_dir):
    sd, _ = _load(fixtures_dir, "mel_vae_tiny_16k")
    conv = convert_mmaudio_vae_state_dict(sd)
    key = "encoder.down.1.block.0.conv1.weight"
    w = sd[key].double()  # (O, I, K)
    fan_in = w[0].numel()
    expected = w / (1e-4 + w.flatten(1).norm(dim=1).view(-1, 1, 1) / math.sqrt(fan_in)) / math.sqrt(fan_in)
    torch.testing.assert_close(conv.state_dict[key].double(), expected, rtol=1e-6, atol=1e-7)
    # gains and statistics are untouched
    torch.testing.assert_close(conv.state_dict["decoder.learnable_gain"], sd["decoder.learnable_gain"])
    torch.testing.assert_close(conv.state_dict["data_std"], sd["data_std"])
    assert is_inference_form(conv.state_dict) and not is_inference_form(sd)


def test_module_removal_equals_converter(fixtures_dir):
    sd, io = _load(fixtures_dir, "mel_vae_tiny_16k")
    conv = convert_mmaudio_vae_state_dict(sd)
    raw_model = MMAudioMelVAE(**conv.config).eval()
    raw_model.load_state_dict(sd)  # raw training-form weights, as a trainer would hold them
    raw_model.remove_weight_norm()
    for k, v in raw_model.state_dict().items():
        torch.testing.assert_close(v, conv.state_dict[k], rtol=0, atol=0)
    # weight_norm="auto" recognises both forms and does not normalise twice
    again = convert_mmaudio_vae_state_dict(conv.state_dict, weight_norm="auto")
    for k, v in again.state_dict.items():
        torch.testing.assert_close(v, conv.state_dict[k], rtol=0, atol=0)
    twice = convert_mmaudio_vae_state_dict(conv.state_dict, weight_norm="remove")
    assert any(not torch.equal(v, conv.state_dict[k]) for k, v in twice.state_dict.items())


def test_mpconv_inference_form_preserves_magnitude():
    torch.manual_seed(0)
    conv = MPConv1d(64, 32, 3)
    with torch.no_grad():
        conv.weight.mul_(7.0)  # raw weights of any scale
    conv.remove_weight_norm()
    x = torch.randn(8, 64, 200)
    y = conv(x)
    assert 0.8 < y.std().item() < 1.2


def test_config_inference_and_real_sizes(fixtures_dir):
    sd, _ = _load(fixtures_dir, "mel_vae_tiny_44k")
    cfg = infer_mmaudio_vae_config(sd)
    assert cfg == dict(data_dim=128, embed_dim=40, hidden_dim=24, ch_mult=[1, 2, 4], num_res_blocks=2,
                       attn_layers=[3], down_layers=[0], kernel_size=3)
    # the real 44k network on the meta device: check the parameter count of the released v1-44 VAE layout
    with torch.device("meta"):
        real = MMAudioMelVAE(**mmaudio_vae_config("44k"))
    assert real.encoder.conv_in.weight.shape == (512, 128, 3)
    assert real.decoder.conv_in.weight.shape == (2048, 40, 3)  # widest level: 512 · 4
    sd_real = real.state_dict()  # meta tensors: only the shapes are read
    assert infer_mmaudio_vae_config(sd_real) == {**mmaudio_vae_config("44k"), "ch_mult": [1, 2, 4],
                                                 "attn_layers": [3], "down_layers": [0], "kernel_size": 3}


def test_wrong_checkpoint_errors(tmp_path, fixtures_dir):
    # something else entirely: an MM-DiT-like file
    other = {"audio_input_proj.0.weight": torch.zeros(4, 4), "joint_blocks.0.attn.qkv.weight": torch.zeros(12, 4)}
    p = tmp_path / "mmaudio_small_16k.safetensors"
    save_file(other, str(p))
    with pytest.raises(MelVAECheckpointError, match="MM-DiT"):
        load_mmaudio_mel_vae(p)
    # a VAE with a key dropped and an extra key: strict error lists both
    sd, _ = _load(fixtures_dir, "mel_vae_tiny_16k")
    sd = dict(sd)
    sd.pop("decoder.mid.attn_1.qkv.weight")
    sd["decoder.extra.weight"] = torch.zeros(2, 2, 1)
    p2 = tmp_path / "broken.pth"
    torch.save(sd, p2)
    with pytest.raises(CheckpointError) as exc:
        load_mmaudio_mel_vae(p2)
    msg = str(exc.value)
    assert "decoder.mid.attn_1.qkv.weight" in msg and "decoder.extra.weight" in msg
    # 16k file asked for as 44k
    sd, _ = _load(fixtures_dir, "mel_vae_tiny_16k")
    p3 = tmp_path / "v1-16.pth"
    torch.save({"state_dict": sd}, p3)  # wrapped: unwrapped by the shared reader
    with pytest.raises(ValueError, match="16k"):
        load_mmaudio_mel_vae(p3, mode="44k")
    with pytest.raises(FileNotFoundError, match="v1-44"):
        load_mmaudio_mel_vae(tmp_path / "absent.pth")


def test_nested_prefix_is_accepted(fixtures_dir):
    sd, io = _load(fixtures_dir, "mel_vae_tiny_16k")
    nested = {"vae." + k: v for k, v in sd.items()}
    nested["vocoder.conv_pre.weight"] = torch.zeros(3)
    conv = convert_mmaudio_vae_state_dict(nested)
    assert conv.mode == "16k"  # the mel mode follows data_dim / embed_dim, whatever the widths
    assert "vocoder.conv_pre.weight" not in conv.state_dict


def test_save_load_roundtrip(tmp_path, fixtures_dir):
    sd, io = _load(fixtures_dir, "mel_vae_tiny_44k")
    conv = convert_mmaudio_vae_state_dict(sd)
    model = MMAudioMelVAE(**conv.config).eval()
    model.load_state_dict(conv.state_dict)
    model.save_pretrained(tmp_path / "vae")
    again = MMAudioMelVAE.from_pretrained(tmp_path / "vae")
    with torch.no_grad():
        torch.testing.assert_close(again.decode(io["z"]), model.decode(io["z"]), rtol=0, atol=0)
    bf = MMAudioMelVAE.from_pretrained(tmp_path / "vae", torch_dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    with torch.no_grad():
        assert _rel(bf.decode(io["z"]), io["decoded"]) < 0.1


def test_posterior_sampling_uses_generator():
    mean = torch.zeros(2, 4, 10)
    post = DiagonalGaussian.from_moments(torch.cat([mean, torch.full_like(mean, 2 * math.log(0.5))], 1))
    torch.testing.assert_close(post.std, torch.full_like(mean, 0.5))
    a = post.sample(torch.Generator().manual_seed(3))
    b = post.sample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, post.sample(torch.Generator().manual_seed(4)))
    # same draws as the reference's empty_like(mean).normal_(generator) for the same generator state
    ref = post.mean + post.std * torch.empty_like(post.mean).normal_(generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, ref, rtol=0, atol=0)
    # KL of N(0, 0.25) against N(0, 1) per element: ½(0.25 − 1 − ln 0.25)
    torch.testing.assert_close(post.kl(), torch.full_like(mean, 0.5 * (0.25 - 1 - math.log(0.25))))
    # logvar is clamped like the reference
    big = DiagonalGaussian.from_moments(torch.cat([mean, torch.full_like(mean, 100.0)], 1))
    assert big.logvar.max().item() == 20.0


def test_bad_shapes_raise(fixtures_dir):
    model = MMAudioMelVAE(data_dim=80, embed_dim=20, hidden_dim=8)
    with pytest.raises(ValueError, match=r"\(B, 80, T\)"):
        model.encode(torch.zeros(1, 128, 10))
    with pytest.raises(ValueError, match=r"\(B, 20, T\)"):
        model.decode(torch.zeros(1, 40, 10))


def test_removed_form_equals_on_the_fly_weight_norm(fixtures_dir):
    # EDM2's training-time forward normalises each weight on the fly; removing the norm once must give the same
    # function. Emulate the on-the-fly form with a parametrisation over the raw weights.
    from torch.nn.utils import parametrize

    from kling_foley_core.models.mel_vae_mmaudio import normalized_mp_weight

    class OnTheFly(torch.nn.Module):
        def forward(self, w):
            return normalized_mp_weight(w)

    sd, io = _load(fixtures_dir, "mel_vae_tiny_44k")
    conv = convert_mmaudio_vae_state_dict(sd)
    live = MMAudioMelVAE(**conv.config).eval()
    live.load_state_dict(sd)  # raw weights
    for m in live.modules():
        if isinstance(m, MPConv1d):
            parametrize.register_parametrization(m, "weight", OnTheFly())
    removed = MMAudioMelVAE(**conv.config).eval()
    removed.load_state_dict(conv.state_dict)
    with torch.no_grad():
        torch.testing.assert_close(live.decode(io["z"]), removed.decode(io["z"]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(live.encode(io["mel"]).mean, removed.encode(io["mel"]).mean, rtol=1e-6, atol=1e-6)
