"""Griffin-Lim fallback vocoder: mel → waveform → mel round trip on a real-ish signal, onsets, interface, errors."""
from __future__ import annotations

import math

import pytest
import torch

from kling_foley_core.audio.mel import MelSpectrogram
from kling_foley_core.models.vocoder_bigvgan import MelVocoder, VocoderInputError
from kling_foley_core.models.vocoder_griffinlim import GriffinLimVocoder, mel_to_magnitude

ONSETS = (0.31, 0.87, 1.42)  # seconds


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # Tiny models run fastest on one thread, and much slower with several when the cores are shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tones_and_bursts(sr: int, duration: float = 1.8, seed: int = 0) -> torch.Tensor:
    """Three steady partials plus exponentially decaying noise bursts starting at ONSETS: (1, T)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(sr * duration)) / sr
    x = (0.1 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.sin(2 * math.pi * 1250 * t + 1.0)
         + 0.03 * torch.sin(2 * math.pi * 3300 * t))
    for onset in ONSETS:
        envelope = torch.where(t >= onset, torch.exp(-(t - onset) / 0.08), torch.zeros_like(t))
        x = x + 0.4 * envelope * torch.randn(t.shape, generator=gen)
    return x.clamp(-1, 1).unsqueeze(0)


def detected_onsets(mel: torch.Tensor, log_base: str, frame_rate: float, hop_s: float) -> list[float]:
    """Time of the largest rise in total mel energy near each true onset (a minimal spectral-flux picker)."""
    power = (torch.pow(10.0, mel) if log_base == "10" else mel.exp()).sum(dim=-2)[0]  # (F,)
    rise = torch.diff(power.log(), prepend=power[:1].log())  # (F,)
    found = []
    for onset in ONSETS:  # search ±120 ms around each true onset
        lo, hi = int((onset - 0.12) * frame_rate), int((onset + 0.12) * frame_rate)
        k = lo + int(torch.argmax(rise[lo:hi]))
        found.append(k / frame_rate + hop_s / 2)  # frame k is centred on sample k·hop + hop/2
    return found


def envelope_lag(x: torch.Tensor, y: torch.Tensor, block: int = 64, max_lag: int = 12) -> int:
    """Lag (in blocks) of y's amplitude envelope relative to x's that maximises their correlation."""
    ex = x.abs().unfold(0, block, block).mean(-1)
    ey = y.abs().unfold(0, block, block).mean(-1)
    ex, ey = ex - ex.mean(), ey - ey.mean()
    n = len(ex)
    scores = {lag: float((ex[max(0, -lag):n - max(0, lag)] * ey[max(0, lag):n - max(0, -lag)]).sum())
              for lag in range(-max_lag, max_lag + 1)}
    return max(scores, key=scores.get)


@pytest.mark.parametrize("mode, max_err", [("16k", 0.12), ("44k", 0.25)])
def test_round_trip_keeps_log_mel_and_onsets(mode, max_err):
    front = MelSpectrogram(mode)
    c = front.config
    wave = tones_and_bursts(c.sampling_rate)
    mel = front(wave)  # (1, M, F)
    vocoder = GriffinLimVocoder(mode, n_iter=32)
    out = vocoder(mel)
    assert out.shape == (1, mel.shape[-1] * c.hop_length)
    again = front(out)
    floor = -5.0 if c.log_base == "10" else math.log(1e-5)
    audible = mel > floor + 1.0
    err = float((again - mel).abs()[audible].mean())
    # Measured ≈0.08 (log10 units, 16k) and ≈0.18 (ln units, 44k) — both about 1.6 dB.
    assert err < max_err, err
    # The output really is audio at the right level, not silence with a matching floor.
    assert 0.5 < float(out.pow(2).mean().sqrt() / wave[..., : out.shape[-1]].pow(2).mean().sqrt()) < 1.5
    hop_s = c.hop_length / c.sampling_rate
    reference = detected_onsets(mel, c.log_base, c.frame_rate, hop_s)
    for true, ref, got in zip(ONSETS, reference, detected_onsets(again, c.log_base, c.frame_rate, hop_s)):
        assert abs(got - true) <= 2 * hop_s, (true, got)  # two frames: 32 ms at 16k, 23 ms at 44.1k
        assert abs(got - ref) <= hop_s, (ref, got)  # and where the input's own mel puts it, within a frame
    # Sample alignment: the amplitude envelopes line up (a hop/2 framing error would show as a lag of several
    # 64-sample blocks at either rate).
    assert abs(envelope_lag(wave[0, : out.shape[-1]], out[0])) <= 1


def test_nnls_beats_clamped_pseudo_inverse():
    front = MelSpectrogram("16k")
    mel = front(tones_and_bursts(16000, duration=0.8))
    vocoder = GriffinLimVocoder("16k")
    power = torch.pow(10.0, mel)
    errors = {}
    for method in ("pinv", "nnls"):
        mag = mel_to_magnitude(power, vocoder.filters, method=method)
        assert (mag >= 0).all()
        back = torch.log10(torch.clamp(vocoder.filters @ mag, min=1e-5))
        errors[method] = float((back - mel).abs().mean())
    assert errors["nnls"] < 0.5 * errors["pinv"], errors


def test_interface_determinism_and_momentum():
    vocoder = GriffinLimVocoder("16k", n_iter=8)
    assert isinstance(vocoder, MelVocoder)
    assert (vocoder.sample_rate, vocoder.hop_length, vocoder.n_mels) == (16000, 256, 80)
    mel = MelSpectrogram("16k")(tones_and_bursts(16000, duration=0.5))
    a = vocoder(mel.repeat(2, 1, 1))
    b = vocoder(mel.repeat(2, 1, 1))
    assert a.shape == (2, mel.shape[-1] * 256) and torch.equal(a, b)
    c = vocoder(mel, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(a[:1], c)
    # The fast variant converges faster than classic Griffin-Lim for the same number of iterations.
    front = MelSpectrogram("16k")
    err = {m: float((front(GriffinLimVocoder("16k", n_iter=8, momentum=m)(mel)) - mel).abs().mean())
           for m in (0.0, 0.99)}
    assert err[0.99] < err[0.0], err


def test_bad_inputs():
    vocoder = GriffinLimVocoder("44k", n_iter=1)
    with pytest.raises(VocoderInputError, match="128"):
        vocoder(torch.zeros(1, 80, 10))  # a 16 kHz mel given to the 44.1 kHz vocoder
    with pytest.raises(VocoderInputError, match="mel_inverse"):
        GriffinLimVocoder("44k", mel_inverse="lstsq")
    with pytest.raises(VocoderInputError, match="momentum"):
        GriffinLimVocoder("44k", momentum=1.0)
    with pytest.raises(ValueError, match="preset"):
        GriffinLimVocoder("22k")


def test_long_audio_runs_in_chunks_that_join_without_a_dip(monkeypatch):
    """Griffin-Lim over long audio runs in overlapping chunks (memory bounded); each chunk continues the previous
    one's phases, so the joins neither lose level nor the log-mel, and short audio keeps its single pass."""
    import kling_foley_core.models.vocoder_griffinlim as gl

    front = MelSpectrogram("16k")
    wave = tones_and_bursts(16000, duration=6.0)
    mel = front(wave)
    vocoder = GriffinLimVocoder("16k", n_iter=32)
    single = vocoder(mel)
    monkeypatch.setattr(gl, "CHUNK_SECONDS", 1.5)
    monkeypatch.setattr(gl, "OVERLAP_SECONDS", 0.25)
    calls = []
    chunked = vocoder(mel, callback=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 5) for k in range(1, 6)]  # 6 s in 1.5-s chunks overlapping by 0.25 s: 5 chunks
    assert torch.equal(vocoder(mel), chunked)  # reporting changes nothing
    assert chunked.shape == single.shape and not torch.equal(chunked, single)
    audible = mel > -4.0
    err = lambda out: float((front(out) - mel).abs()[audible].mean())  # noqa: E731
    assert err(chunked) < 1.25 * err(single) + 0.01, (err(chunked), err(single))
    # the steady partials keep their level across every join (incoherent phases would dip by up to 3 dB)
    level = chunked[0].unfold(0, 800, 800).pow(2).mean(-1).sqrt()  # 50 ms blocks
    ref = single[0].unfold(0, 800, 800).pow(2).mean(-1).sqrt()
    assert float((level / ref).min()) > 0.8
    monkeypatch.setattr(gl, "CHUNK_SECONDS", 30.0)
    assert torch.equal(vocoder(mel), single)  # up to one chunk: the single pass as before
