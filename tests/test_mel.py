"""Mel front-ends: presets, Slaney filters, frame count, shapes, errors, and the reference fixture."""
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kling_foley_core.audio import MEL_PRESETS, MelConfig, MelInputError, MelSpectrogram, mel_preset, slaney_mel_filters


def test_presets_hold_the_design_numbers():
    a, b = mel_preset("16k"), mel_preset("44k")
    assert (a.sampling_rate, a.n_fft, a.hop_length, a.win_length, a.n_mels, a.f_max, a.log_base) == \
        (16000, 1024, 256, 1024, 80, 8000, "10")
    assert (b.sampling_rate, b.n_fft, b.hop_length, b.win_length, b.n_mels, b.f_max, b.log_base) == \
        (44100, 2048, 512, 2048, 128, 22050, "e")
    assert mel_preset("44.1kHz") == b and mel_preset("16000") == a
    # 44.1 kHz mel at 86.13 fps; the VAE halves it to the 43.07 Hz latent rate of DESIGN.md.
    assert b.frame_rate / 2 == pytest.approx(43.066, abs=1e-3)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_slaney_filters_match_transformers(mode):
    audio_utils = pytest.importorskip("transformers.audio_utils")
    c = MEL_PRESETS[mode]
    ours = slaney_mel_filters(c.sampling_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
    ref = audio_utils.mel_filter_bank(num_frequency_bins=c.n_fft // 2 + 1, num_mel_filters=c.n_mels,
                                      min_frequency=c.f_min, max_frequency=c.f_max, sampling_rate=c.sampling_rate,
                                      norm="slaney", mel_scale="slaney").T
    assert ours.shape == (c.n_mels, c.n_fft // 2 + 1)
    assert np.abs(ours - ref).max() < 1e-7
    # every band is non-empty
    assert (ours.max(axis=1) > 0).all()


def test_slaney_filters_unit_area():
    # Slaney normalisation: each triangle integrates to ~1 over Hz (checked on a fine grid, away from fmax clipping).
    sr, n_fft = 16000, 8192
    w = slaney_mel_filters(sr, n_fft, 40, 0, 8000).astype(np.float64)
    df = sr / n_fft
    areas = w.sum(axis=1) * df
    np.testing.assert_allclose(areas[:-1], 1.0, rtol=2e-2)


@pytest.mark.parametrize("mode", ["16k", "44k"])
def test_matches_reference_fixture(fixtures_dir, mode):
    io = load_file(str(fixtures_dir / "mmaudio" / "mel_converter.io.safetensors"))
    ours = MelSpectrogram(mode)(io[f"wav_{mode}"])
    ref = io[f"mel_{mode}"]
    assert ours.shape == ref.shape
    assert ((ours - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_frame_count_and_leading_dims():
    m = MelSpectrogram("16k")
    for n in (256, 257, 1000, 16000, 20800):
        assert m.num_frames(n) == n // 256
    x = torch.rand(2, 3, 4000) * 2 - 1
    y = m(x)
    assert y.shape == (2, 3, 80, 4000 // 256)
    torch.testing.assert_close(y[1, 2], m(x[1, 2]))


def test_log_floor_and_clamp():
    # Silence hits the clamp: log10(1e-5) = -5 in 16k mode, ln(1e-5) in 44k mode.
    assert MelSpectrogram("16k")(torch.zeros(1, 4096)).max().item() == pytest.approx(-5.0)
    assert MelSpectrogram("44k")(torch.zeros(1, 8192)).max().item() == pytest.approx(math.log(1e-5), rel=1e-6)
    # The waveform is clamped to [-1, 1] first: scaling a clipped square wave changes nothing.
    sq = torch.sign(torch.sin(torch.arange(8192) * 0.05)).unsqueeze(0)
    torch.testing.assert_close(MelSpectrogram("44k")(sq), MelSpectrogram("44k")(sq * 3))


def test_sine_peaks_in_the_right_band():
    sr = 16000
    t = torch.arange(sr) / sr
    mel = MelSpectrogram("16k")(0.5 * torch.sin(2 * math.pi * 1000 * t))  # (80, 62)
    peak = mel.mean(-1).argmax().item()
    filters = slaney_mel_filters(sr, 1024, 80, 0, 8000)
    centre_bin = filters[peak].argmax()
    assert abs(centre_bin * sr / 1024 - 1000) < 120


def test_errors_are_clear():
    with pytest.raises(MelInputError, match="preset"):
        mel_preset("22k")
    with pytest.raises(MelInputError, match="samples"):
        MelSpectrogram("44k")(torch.zeros(1, 100))
    with pytest.raises(MelInputError, match="dtype"):
        MelSpectrogram("16k")(torch.zeros(1, 4096, dtype=torch.int16))
    with pytest.raises(MelInputError, match="f_max"):
        MelConfig(sampling_rate=16000, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, f_min=0,
                  f_max=9000, log_base="10")


def test_buffers_not_in_state_dict():
    assert MelSpectrogram("44k").state_dict() == {}
