"""Mono2Stereo applied to a waveform (codecs that decode straight to audio, e.g. the DAC-VAE)."""
import math

import pytest
import torch

from kling_foley_core.models.mono2stereo import Mono2Stereo
from kling_foley_core.stereo import pan_waveform


def _tone_bursts(sr, seconds=1.0):
    t = torch.arange(int(sr * seconds)) / sr
    env = torch.exp(-((t % 0.25) * 20))
    return (0.3 * env * torch.sin(2 * math.pi * 440 * t) + 0.1 * env * torch.sin(2 * math.pi * 3000 * t))[None]


@pytest.mark.parametrize("sr", [48000, 16000])
def test_untrained_module_keeps_the_sound_centred(sr):
    m2s = Mono2Stereo.from_preset("16k").eval()  # output layer starts at zero: pan 0.5 everywhere
    mono = _tone_bursts(sr)
    st = pan_waveform(m2s, mono[:, None], sr)
    assert st.shape == (1, 2, mono.shape[-1])
    torch.testing.assert_close(st[:, 0], mono, atol=2e-3, rtol=0)
    torch.testing.assert_close(st[:, 1], mono, atol=2e-3, rtol=0)


def test_a_hard_left_mask_moves_all_energy_left(monkeypatch):
    m2s = Mono2Stereo.from_preset("16k").eval()
    monkeypatch.setattr(m2s, "predict_pan", lambda mel, video=None: torch.zeros_like(mel))  # p = 0: left
    mono = _tone_bursts(48000)
    st = pan_waveform(m2s, mono, 48000)
    left, right = st[0, 0], st[0, 1]
    assert float(right.abs().max()) < 1e-3
    torch.testing.assert_close(left, (math.sqrt(2) * mono[0]).clamp(-1, 1), atol=3e-3, rtol=0)
