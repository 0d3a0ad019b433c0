"""Kling-Foley Mel-VAE: shapes and latent contract, margin KL, hinge / R1 on hand-computed values, the 4-stage
schedule boundaries, freezing, save/load, and a few optimiser steps that reduce the reconstruction loss."""
import math

import pytest
import torch
import torch.nn as nn

from kling_foley_core.models.mel_vae_kling import KlingMelVAE, MelDiscriminator, kling_mel_vae_config
from kling_foley_core.training.mel_vae_losses import (discriminator_loss, frame_level_loss, frame_levels,
                                                      generator_adversarial_loss, generator_loss,
                                                      hinge_discriminator_loss, kl_divergence, margin_kl, r1_penalty)
from kling_foley_core.training.mel_vae_schedule import SteppingSchedule, apply_trainable


def _tiny(mode="44k", **kw):
    torch.manual_seed(0)
    return KlingMelVAE(**{**kling_mel_vae_config(mode, "tiny"), **kw})


# ----- model ------------------------------------------------------------------------------------------------


def test_base_config_has_32_encoder_convs_and_latent_contract():
    with torch.device("meta"):
        vae = KlingMelVAE(**kling_mel_vae_config("44k", "base"))
    assert vae.num_conv_layers() == (32, 32)
    assert vae.config.latent_dim == 40 and vae.config.n_mels == 128 and vae.time_downsample == 2
    assert vae.mel_mode == "44k" and vae.latent_channels == 40
    assert sum(isinstance(m, nn.ConvTranspose1d) for m in vae.decoder.modules()) == 1


@pytest.mark.parametrize("frames", [34, 35])
def test_shapes_half_rate_latents(frames):
    vae = _tiny().eval()
    mel = torch.randn(2, 128, frames)
    post = vae.encode(mel)
    assert post.mean.shape == (2, 40, math.ceil(frames / 2)) == post.std.shape
    assert vae.latent_length(frames) == math.ceil(frames / 2)
    assert vae.decode(post.mean).shape == (2, 128, 2 * math.ceil(frames / 2))
    assert vae(mel, sample_posterior=False).reconstruction.shape == mel.shape


def test_16k_mode_and_x4_downsampling():
    vae = _tiny("16k", time_downsample=4, num_blocks=3).eval()
    post = vae.encode(torch.randn(1, 80, 40))
    assert post.mean.shape == (1, 20, 10)
    assert vae.decode(post.mean).shape == (1, 80, 40)


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="norm_groups"):
        KlingMelVAE(hidden_dim=30, norm_groups=8)
    with pytest.raises(ValueError, match="power of two"):
        KlingMelVAE(time_downsample=3)
    vae = _tiny()
    with pytest.raises(ValueError, match=r"\(B, 128, T\)"):
        vae.encode(torch.randn(1, 80, 10))
    with pytest.raises(ValueError, match="frames"):
        MelDiscriminator(n_mels=128)(torch.randn(1, 128, 8))


def test_posterior_sampling_is_reproducible():
    vae = _tiny().eval()
    mel = torch.randn(1, 128, 16)
    a = vae(mel, generator=torch.Generator().manual_seed(1)).latents
    b = vae(mel, generator=torch.Generator().manual_seed(1)).latents
    torch.testing.assert_close(a, b)


def test_data_statistics_and_roundtrip(tmp_path):
    vae = _tiny().eval()
    with pytest.raises(ValueError, match="128"):
        vae.set_data_statistics(torch.zeros(80), torch.ones(80))
    vae.set_data_statistics(torch.linspace(-5, -1, 128), torch.linspace(1, 2, 128))
    vae.save_pretrained(tmp_path / "kvae")
    again = KlingMelVAE.from_pretrained(tmp_path / "kvae")
    mel = torch.randn(1, 128, 20)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(mel).mean, vae.encode(mel).mean, rtol=0, atol=0)
        torch.testing.assert_close(again.decode(torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(0))),
                                   vae.decode(torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(0))))
    torch.testing.assert_close(again.data_std, vae.data_std)


# ----- losses on hand-computed values -----------------------------------------------------------------------


def test_kl_and_margin_kl_values():
    mean = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (B=1, C=2, T=2)
    logvar = torch.tensor([[[0.0, math.log(4.0)], [0.0, 0.0]]])
    # per element ½(μ² + σ² − 1 − ln σ²): [[0.5, ½(4−1−ln4)], [0, 2]]; sum over C then mean over T
    e01 = 0.5 * (3 - math.log(4))
    expected = ((0.5 + 0.0) + (e01 + 2.0)) / 2
    kl = kl_divergence(mean, logvar)
    assert kl.item() == pytest.approx(expected, rel=1e-6)
    assert margin_kl(kl, 0.5).item() == pytest.approx(expected - 0.5, rel=1e-6)
    assert margin_kl(kl, 10.0).item() == 0.0
    # no gradient while within the margin, full gradient above it
    m = mean.clone().requires_grad_(True)
    margin_kl(kl_divergence(m, logvar), 10.0).backward()
    assert m.grad.abs().sum().item() == 0.0
    m.grad = None
    margin_kl(kl_divergence(m, logvar), 0.1).backward()
    torch.testing.assert_close(m.grad, mean / 2)  # d/dμ of ½μ², averaged over T=2
    with pytest.raises(ValueError, match="margin"):
        margin_kl(kl, -1.0)


def test_hinge_and_generator_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 − r) = [0, 0.5, 2] → mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = [0, 1, 2] → mean 1
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(5 / 6 + 1)
    # two scales are averaged
    assert hinge_discriminator_loss([real, real], [fake, fake - 10]).item() == pytest.approx(((5 / 6 + 1) + 5 / 6) / 2)
    assert generator_adversarial_loss(fake).item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="1 real vs 2"):
        hinge_discriminator_loss([real], [fake, fake])


def test_frame_level_loss_sees_a_lowered_peak_not_a_shifted_one():
    # one frame of 4 bins at magnitude 10^0 = 1 each: level log10(sqrt(4)) = log10(2)
    mel = torch.full((1, 4, 9), -5.0)
    mel[0, :, 4] = 0.0
    assert frame_levels(mel)[0, 4].item() == pytest.approx(math.log10(2.0), abs=1e-6)
    lowered = mel.clone()
    lowered[0, :, 4] = -0.15  # the strike's frame 3 dB down
    shifted = torch.roll(mel, 1, dims=2)  # the same strike one frame later
    # 3 dB (0.15 in log10 units) on frame 4, the only one within 40 dB of the peak
    assert frame_level_loss(lowered, mel).item() == pytest.approx(0.15, abs=1e-4)
    assert frame_level_loss(shifted, mel).item() == 0.0  # one frame late: forgiven
    assert frame_level_loss(torch.roll(mel, 2, dims=2), mel).item() > 1.0  # two frames late: not
    smeared = mel.clone()
    smeared[0, :, 6] = -0.5  # a tail 10 dB under the peak two frames after it, where the target has none
    assert frame_level_loss(smeared, mel).item() == pytest.approx(4.5 / 2, abs=1e-4)  # frames 4 and 6 count
    assert frame_level_loss(mel, mel).item() == 0.0
    with pytest.raises(ValueError, match="pool=2"):
        frame_level_loss(mel, mel, pool=2)
    # generator_loss adds it only when weighted
    w = SteppingSchedule(stage1_end=1, stage2_end=2, stage3_end=3)(0)
    z = torch.zeros(1, 2, 4)
    off = generator_loss(lowered, mel, z, z, w)
    on = generator_loss(lowered, mel, z, z, w, level_weight=2.0)
    assert off.level.item() == 0.0
    assert on.total.item() == pytest.approx(off.total.item() + 2.0 * on.level.item(), rel=1e-5)


def test_r1_on_a_linear_and_a_quadratic_discriminator():
    torch.manual_seed(0)
    w = torch.randn(1, 4, 6)
    x = torch.randn(3, 4, 6, requires_grad=True)
    # D(x) = <w, x>: ∇ = w for every sample, R1 = ||w||²
    assert r1_penalty((x * w).flatten(1).sum(1), x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
    # D(x) = ½ Σ x²: ∇ = x, R1 = mean over batch of ||x_i||²
    r1 = r1_penalty(0.5 * x.pow(2).flatten(1).sum(1), x)
    assert r1.item() == pytest.approx(x.detach().pow(2).flatten(1).sum(1).mean().item(), rel=1e-5)
    r1.backward()  # differentiable (create_graph)
    torch.testing.assert_close(x.grad, 2 * x.detach() / 3)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(torch.zeros(1), torch.zeros(1))


def test_discriminator_loss_composition():
    disc = MelDiscriminator(n_mels=16, channels=4, num_layers=2, scales=(1, 2))
    real, fake = torch.randn(2, 16, 16), torch.randn(2, 16, 16, requires_grad=True)
    w = SteppingSchedule(1, 2, 3, kl_upper=0.1, gan_upper=0.5, r1_weight=2.0)(10)
    out = discriminator_loss(disc, real, fake, w)
    assert out.total.item() == pytest.approx(0.5 * out.hinge.item() + 2.0 * out.r1.item(), rel=1e-6)
    assert out.r1.item() > 0
    out.total.backward()
    assert fake.grad is None  # the fake branch is detached: L_d never reaches the VAE
    # the generator side refuses to silently drop a weighted adversarial term
    with pytest.raises(ValueError, match="fake_logits"):
        generator_loss(real, real, torch.zeros(2, 4, 8), torch.zeros(2, 4, 8), w)
    g = generator_loss(fake, real, torch.zeros(2, 4, 8), torch.zeros(2, 4, 8), w, kl_margin=0.0,
                       fake_logits=disc(fake).logits)
    assert g.total.item() == pytest.approx(g.mse.item() + 0.1 * g.kl_margin.item() + 0.5 * g.adversarial.item(),
                                           rel=1e-5)
    assert g.kl.item() == 0.0  # posterior equal to the prior


# ----- schedule ---------------------------------------------------------------------------------------------


def test_stage_boundaries_and_ramps():
    s = SteppingSchedule(stage1_end=100, stage2_end=200, stage3_end=400, kl_upper=0.02, gan_upper=0.5, r1_weight=3)
    assert [s.stage(k) for k in (0, 100, 101, 200, 201, 400, 401, 10**6)] == [1, 1, 2, 2, 3, 3, 4, 4]
    w = s(100)
    assert (w.kl, w.gan, w.r1, w.train_encoder, w.train_discriminator) == (0.0, 0.0, 0.0, True, False)
    assert s(150).kl == pytest.approx(0.01)
    assert s(200).kl == pytest.approx(0.02) and s(200).gan == 0.0
    assert s(201).kl == 0.02 and s(201).gan == pytest.approx(0.5 / 200)
    assert s(300).gan == pytest.approx(0.25) and s(300).train_encoder and s(300).train_discriminator
    assert s(300).r1 == 3
    w4 = s(401)
    assert (w4.stage, w4.kl, w4.gan, w4.train_encoder, w4.train_decoder, w4.train_discriminator) == \
        (4, 0.02, 0.5, False, True, True)
    assert w4.name == "decoder refinement"
    assert [b[2] for b in s.boundaries()] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="stage1_end < stage2_end"):
        SteppingSchedule(100, 100, 200)
    with pytest.raises(ValueError, match="step"):
        s(-1)


def test_stage4_freezes_the_encoder_only():
    vae, disc = _tiny(), MelDiscriminator(n_mels=128, channels=4, num_layers=2, scales=(1,))
    s = SteppingSchedule(1, 2, 3)
    apply_trainable(vae, s(4), disc)
    assert not any(p.requires_grad for p in vae.encoder.parameters())
    assert all(p.requires_grad for p in vae.decoder.parameters())
    assert all(p.requires_grad for p in disc.parameters())
    apply_trainable(vae, s(0), disc)
    assert all(p.requires_grad for p in vae.parameters())
    assert not any(p.requires_grad for p in disc.parameters())


# ----- training smoke ---------------------------------------------------------------------------------------


def test_a_few_steps_reduce_reconstruction_loss():
    torch.manual_seed(0)
    vae = _tiny()
    disc = MelDiscriminator(n_mels=128, channels=4, num_layers=2, scales=(1, 2))
    # structured "mels": smooth spectral envelopes moving over time, so there is something to learn
    t = torch.linspace(0, 1, 32)
    f = torch.linspace(0, 1, 128)[:, None]
    mel = torch.stack([torch.sin(6 * f + 3 * t * (k + 1)) - 4 * f for k in range(4)])  # (4, 128, 32)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    sched = SteppingSchedule(stage1_end=10, stage2_end=15, stage3_end=20, kl_upper=1e-3, gan_upper=0.05)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = nn.functional.mse_loss(vae(mel, sample_posterior=False).reconstruction, mel).item()
    for step in range(24):  # crosses all four stages
        w = sched(step)
        apply_trainable(vae, w, disc)
        out = vae(mel, generator=gen)
        fake_logits = disc(out.reconstruction).logits if w.gan > 0 else None
        losses = generator_loss(out.reconstruction, mel, out.posterior.mean, out.posterior.logvar, w,
                                kl_margin=0.5, fake_logits=fake_logits)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        opt.step()
        if w.train_discriminator:
            d = discriminator_loss(disc, mel, out.reconstruction, w)
            opt_d.zero_grad(set_to_none=True)
            d.total.backward()
            opt_d.step()
            assert math.isfinite(d.total.item())
    with torch.no_grad():
        end = nn.functional.mse_loss(vae(mel, sample_posterior=False).reconstruction, mel).item()
    assert end < 0.5 * start, (start, end)
