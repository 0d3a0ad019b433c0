"""HunyuanVideo-Foley DAC-VAE: reference parity, weight-norm folding, config from shapes, shapes."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from kling_foley_core.compat.parity import TOLERANCE, run_parity
from kling_foley_core.hunyuan import DacVae, load_dac_vae
from kling_foley_core.compat.checkpoints import fold_weight_norm
from kling_foley_core.hunyuan.dac_vae import dac_config_from_state_dict

HERE = Path(__file__).parent / "fixtures" / "hunyuan"


def test_parity_dac_vae_tiny():
    errors = run_parity(HERE / "dac_vae_tiny")
    assert set(errors) == {"posterior_mean", "posterior_std", "decoded"}
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.parametrize("layer", [nn.Conv1d(6, 5, 3), nn.ConvTranspose1d(6, 4, 8, stride=4)])
def test_fold_weight_norm_matches_torch(layer):
    torch.manual_seed(0)
    wn = torch.nn.utils.weight_norm(layer)  # the classic weight_g/weight_v layout of the released file
    with torch.no_grad():
        wn.weight_g.mul_(torch.rand_like(wn.weight_g) + 0.5)
    sd = {f"m.{k}": v.detach() for k, v in wn.state_dict().items()}
    folded = fold_weight_norm(sd)
    assert set(folded) == {"m.weight", "m.bias"}
    x = torch.randn(2, 6, 11)
    plain = type(layer)(**{"in_channels": 6, "out_channels": layer.out_channels, "kernel_size": layer.kernel_size,
                           "stride": layer.stride})
    plain.load_state_dict({"weight": folded["m.weight"], "bias": folded["m.bias"]})
    with torch.no_grad():
        torch.testing.assert_close(plain(x), wn(x), rtol=1e-5, atol=1e-6)


def test_fold_weight_norm_parametrization_keys_and_missing_half():
    conv = torch.nn.utils.parametrizations.weight_norm(nn.Conv1d(3, 4, 5))
    sd = {k: v.detach() for k, v in conv.state_dict().items()}
    assert "parametrizations.weight.original0" in sd
    folded = fold_weight_norm(sd)
    torch.testing.assert_close(folded["weight"], conv.weight.detach())
    with pytest.raises(ValueError, match="lacks its weight_v"):
        fold_weight_norm({"a.weight_g": torch.ones(4, 1, 1)})


def test_config_read_from_shapes():
    sd = fold_weight_norm(load_file(str(HERE / "dac_vae_tiny.safetensors")))
    cfg = dac_config_from_state_dict(sd)
    assert cfg == dict(encoder_dim=8, encoder_rates=(2, 3, 4), latent_dim=16, decoder_dim=32, decoder_rates=(4, 3, 2),
                       sample_rate=48000)


def test_encode_pads_and_decode_shapes():
    vae = load_dac_vae(load_file(str(HERE / "dac_vae_tiny.safetensors")))
    assert vae.hop_length == 24 and vae.latent_rate == 2000.0
    audio = torch.randn(1, 1, 250) * 0.1  # not a hop multiple: right-padded to 264 → 11 frames
    with torch.no_grad():
        post = vae.encode(audio)
        z1, z2 = post.sample(torch.Generator().manual_seed(3)), post.sample(torch.Generator().manual_seed(3))
        wav = vae.decode(post.mode())
    assert post.mean.shape == (1, 16, 11) and torch.equal(z1, z2)
    assert wav.shape == (1, 1, 264) and wav.abs().max() <= 1.0
    assert post.kl().shape == post.mean.shape  # element-wise KL, as every codec's posterior
    with pytest.raises(ValueError, match=r"\(B, 1, T\)"):
        vae.encode(torch.zeros(1, 2, 48))
    with pytest.raises(ValueError, match="latents"):
        vae.decode(torch.zeros(1, 8, 4))


def test_released_layout_is_48k_at_50hz():
    vae = DacVae()  # default config: 48 kHz, hop 960
    assert vae.hop_length == 960 and vae.latent_rate == 50.0 and vae.config.latent_dim == 128
