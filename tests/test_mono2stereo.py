"""Mono2Stereo: pan laws, contract (shapes, floor, centred start), training on a synthetic panned batch, I/O."""
from __future__ import annotations

import math

import pytest
import torch

from kling_foley_core.models.mono2stereo import (Mono2Stereo, Mono2StereoError, StereoMel, pan_gains,
                                                 resample_frames, stereo_training_example)

FLOOR = math.log(1e-5)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    # Tiny models run fastest on one thread, and much slower with several when the cores are shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def synthetic_batch(batch: int, n_mels: int, frames: int, video_frames: int, gen: torch.Generator):
    """A mono source panned by a known, slowly moving amount; the video features carry that position.

    Returns (mono, left, right, video, pan) with log-mels (B, M, F) built by the constant-power law in the linear
    domain, and video features (B, N, 8) at a different frame rate than the mel.
    """
    # Source: a band-limited random spectrum with a time envelope, in natural-log units above the floor.
    spectrum = torch.randn(batch, n_mels, 1, generator=gen).cumsum(dim=1) * 0.3 - 3.0  # (B, M, 1)
    envelope = torch.randn(batch, 1, frames, generator=gen).cumsum(dim=-1) * 0.1  # (B, 1, F)
    mono = (spectrum + envelope + 0.2 * torch.randn(batch, n_mels, frames, generator=gen)).clamp(min=FLOOR)
    # Pan: start anywhere, drift linearly — the model can only know it from the video.
    start = torch.rand(batch, 1, generator=gen)
    end = (start + 0.6 * (torch.rand(batch, 1, generator=gen) - 0.5)).clamp(0, 1)
    track = start + (end - start) * torch.linspace(0, 1, video_frames)  # (B, N)
    pan = resample_frames(track.unsqueeze(-1), frames).squeeze(-1).unsqueeze(1).expand(-1, n_mels, -1)  # (B, M, F)
    gl, gr = pan_gains(pan, "constant_power")
    left = (mono.exp() * gl).clamp(min=1e-5).log()
    right = (mono.exp() * gr).clamp(min=1e-5).log()
    # Video features: the position (and its complement) with nuisance channels, as a visual encoder might give.
    noise = 0.1 * torch.randn(batch, video_frames, 6, generator=gen)
    video = torch.cat([track.unsqueeze(-1), (1 - track).unsqueeze(-1), noise], dim=-1)  # (B, N, 8)
    return mono, left, right, video, pan


def test_pan_laws():
    p = torch.linspace(0, 1, 11)
    gl, gr = pan_gains(p, "constant_power")
    torch.testing.assert_close(gl ** 2 + gr ** 2, torch.full_like(p, 2.0))  # constant power
    gl, gr = pan_gains(torch.tensor(0.5), "constant_power")
    assert abs(float(gl) - 1) < 1e-6 and abs(float(gr) - 1) < 1e-6  # a centred source keeps its loudness
    gl, gr = pan_gains(p, "linear")
    torch.testing.assert_close(gl + gr, torch.full_like(p, 2.0))  # (L + R)/2 = mono
    gl, gr = pan_gains(torch.tensor([0.0, 1.0]), "constant_power")
    assert float(gr[0]) < 1e-6 and float(gl[1]) < 1e-6  # hard left / hard right
    with pytest.raises(Mono2StereoError, match="pan_law"):
        pan_gains(p, "sine")


def test_untrained_model_is_centred_and_keeps_the_contract():
    torch.manual_seed(0)
    model = Mono2Stereo.from_preset("tiny")
    gen = torch.Generator().manual_seed(1)
    mono, _, _, video, _ = synthetic_batch(3, 16, 20, 7, gen)
    out = model(mono, video)
    assert isinstance(out, StereoMel)
    assert out.left.shape == out.right.shape == out.pan.shape == mono.shape
    assert out.stacked().shape == (3, 2, 16, 20)
    torch.testing.assert_close(out.pan, torch.full_like(mono, 0.5))
    torch.testing.assert_close(out.left, mono, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.right, mono, rtol=0, atol=1e-5)
    # without video a learned "no video" embedding stands in; the output has the same contract
    assert model(mono).left.shape == mono.shape


def test_apply_pan_in_linear_domain_with_floor_and_log10():
    model = Mono2Stereo(n_mels=4, hidden_dim=8, num_layers=1, kernel_size=3, log_base="10")
    mono = torch.tensor([[[-1.0, -4.9], [0.3, -2.0], [-5.0, -3.0], [-0.5, -0.5]]])  # (1, 4, 2) log10
    pan = torch.tensor([[[0.0, 1.0], [0.25, 0.5], [1.0, 0.0], [0.9, 0.1]]])
    out = model.apply_pan(mono, pan)
    gl, gr = pan_gains(pan)
    expect_l = torch.log10((10 ** mono * gl).clamp(min=1e-5))
    expect_r = torch.log10((10 ** mono * gr).clamp(min=1e-5))
    torch.testing.assert_close(out.left, expect_l, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.right, expect_r, rtol=0, atol=1e-5)
    assert float(out.right[0, 0, 0]) == pytest.approx(-5.0)  # hard left: the right channel is at the floor


def test_a_few_optimiser_steps_learn_the_panning_from_video():
    torch.manual_seed(0)
    model = Mono2Stereo.from_preset("tiny")
    gen = torch.Generator().manual_seed(2)
    mono, left, right, video, pan = synthetic_batch(8, 16, 32, 10, gen)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        initial = float(model.loss(mono, left, right, video))
    for _ in range(60):
        optimiser.zero_grad()
        loss = model.loss(mono, left, right, video)
        loss.backward()
        optimiser.step()
    # it learned where the source is, not just some average level: pan error well below the centred guess
    with torch.no_grad():
        final = float(model.loss(mono, left, right, video))
        predicted = model.predict_pan(mono, video)
    assert final < 0.5 * initial, (initial, final)  # measured: 0.80 → 0.11
    assert float((predicted - pan).abs().mean()) < 0.6 * float((0.5 - pan).abs().mean())


def test_vocode_gives_a_stereo_waveform_with_the_panning():
    from kling_foley_core.audio.mel import MelSpectrogram
    from kling_foley_core.models.vocoder_griffinlim import GriffinLimVocoder

    front = MelSpectrogram("16k")
    t = torch.arange(8192) / 16000
    mono = front((0.3 * torch.sin(2 * math.pi * 500 * t)).unsqueeze(0))  # (1, 80, 32) log10
    model = Mono2Stereo(n_mels=80, hidden_dim=8, num_layers=1, kernel_size=3, log_base="10")
    stereo = model.apply_pan(mono, torch.full_like(mono, 0.2))  # towards the left
    wave = stereo.vocode(GriffinLimVocoder("16k", n_iter=4))
    assert wave.shape == (1, 2, 32 * 256)
    rms = wave.pow(2).mean(dim=-1).sqrt()[0]  # (2,)
    gl, gr = pan_gains(torch.tensor(0.2))
    assert abs(float(rms[0] / rms[1]) - float(gl / gr)) < 0.1 * float(gl / gr)


def test_resample_frames():
    feats = torch.arange(4, dtype=torch.float32).view(1, 4, 1).repeat(2, 1, 3)  # (2, 4, 3)
    out = resample_frames(feats, 8)
    assert out.shape == (2, 8, 3)
    assert torch.all(out[:, 1:, 0] >= out[:, :-1, 0])  # order kept
    torch.testing.assert_close(resample_frames(torch.ones(1, 5, 2), 13), torch.ones(1, 13, 2))


def test_stereo_training_example_uses_the_mel_front_end():
    from kling_foley_core.audio.mel import MelSpectrogram

    front = MelSpectrogram("16k")
    t = torch.arange(4096) / 16000
    source = 0.3 * torch.sin(2 * math.pi * 440 * t)
    wave = torch.stack([source, 0.25 * source]).unsqueeze(0)  # (1, 2, T): panned left
    ex = stereo_training_example(wave, front)
    assert ex.mono.shape == ex.left.shape == ex.right.shape == (1, 80, 16)
    loud = ex.mono > -3
    # log10 ratios: left = 2/1.25 of the mean, right = 0.5/1.25 of it
    assert torch.allclose(ex.left[loud] - ex.mono[loud], torch.tensor(math.log10(1.6)), atol=1e-3)
    assert torch.allclose(ex.right[loud] - ex.mono[loud], torch.tensor(math.log10(0.4)), atol=1e-3)


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = Mono2Stereo.from_preset("tiny")
    with torch.no_grad():
        model.out_proj.weight.normal_()  # leave the centred start so the round trip compares real masks
    model.save_pretrained(str(tmp_path / "m2s"))
    again = Mono2Stereo.from_pretrained(str(tmp_path / "m2s"))
    mono, _, _, video, _ = synthetic_batch(2, 16, 12, 5, torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = model(mono, video), again(mono, video)
    torch.testing.assert_close(a.pan, b.pan)
    assert float((a.pan - 0.5).abs().max()) > 0.05


def test_bad_inputs():
    model = Mono2Stereo.from_preset("tiny")
    with pytest.raises(Mono2StereoError, match=r"\(B, 16, frames\)"):
        model(torch.zeros(1, 128, 10))
    with pytest.raises(Mono2StereoError, match="video must be"):
        model(torch.zeros(2, 16, 10), torch.zeros(2, 5, 4))
    with pytest.raises(Mono2StereoError, match="video_dim=0"):
        Mono2Stereo(n_mels=16, hidden_dim=8, num_layers=1, kernel_size=3)(torch.zeros(1, 16, 4), torch.zeros(1, 2, 3))
    with pytest.raises(Mono2StereoError, match="preset"):
        Mono2Stereo.from_preset("huge")
    with pytest.raises(Mono2StereoError, match="log_base"):
        Mono2Stereo(log_base="2")


def test_sync_features_are_put_in_time_order_before_use():
    from kling_foley_core.models.mono2stereo import Mono2Stereo, Mono2StereoError

    torch.manual_seed(0)
    m = Mono2Stereo(n_mels=16, hidden_dim=16, num_layers=1, kernel_size=3, video_dim=4, log_base="10",
                    video_features="sync", frame_rate=62.5)
    # window-major tokens of 3 windows: a token's first channel is its first frame (8w + 2j)
    frames = torch.tensor([8 * w + 2 * j for w in range(3) for j in range(8)], dtype=torch.float32)
    tokens = frames.view(1, -1, 1).expand(1, 24, 4).contiguous()
    per_frame = m._video_per_frame(tokens, 80)  # (1, 80, 4): 80 mel frames = 1.28 s
    assert torch.all(per_frame[0, 1:, 0] >= per_frame[0, :-1, 0])  # monotonic in time, unlike the raw order
    t = (torch.arange(80) + 0.5) / 62.5 * 25 - 0.5  # the frame instant at each mel frame, minus a slot's centre
    inside = (t > 0) & (t < 30)
    assert torch.allclose(per_frame[0, inside, 0], t[inside], atol=1e-4)
    mono = torch.randn(1, 16, 80) - 3
    assert m(mono, tokens).left.shape == (1, 16, 80)
    with pytest.raises(Mono2StereoError, match="multiple of 8"):
        m(mono, tokens[:, :20])
    with pytest.raises(Mono2StereoError, match="frame_rate"):
        Mono2Stereo(n_mels=16, video_dim=4, video_features="sync")
