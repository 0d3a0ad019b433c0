"""The known-audio nodes: Load Audio → VAE Encode → Audio Context → Sampler(context) → … → Edit Join."""
import numpy as np
import pytest
import soundfile as sf
import torch

import kling_foley_nodes as pack
from kling_foley_core.generation import FoleyConditions
from kling_foley_core.presets import tiny_components
from kling_foley_nodes.common import NodeInputError

N = pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def comps():
    return tiny_components(0, with_encoders=False)


def _tone(seconds, sr=22050, channels=2):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return np.stack([x] * channels, axis=1).astype(np.float32), sr


def test_load_encode_and_edit_keep_everything_outside_the_window(comps, tmp_path):
    wav, sr = _tone(2.0)
    path = tmp_path / "track.wav"
    sf.write(path, wav, sr)
    (audio,) = N["KlingFoleyLoadAudio"]().load(str(path))
    assert audio["sample_rate"] == sr and audio["waveform"].shape == (1, 2, len(wav))
    (latent,) = N["KlingFoleyVAEEncode"]().encode(comps["vae"], audio)
    assert latent["latent_rate"] == pytest.approx(31.25) and latent["latents"].shape[1] == 8
    (ctx,) = N["KlingFoleyAudioContext"]().make(latent, "edit", edit_start=0.6, edit_end=1.2)
    cond = FoleyConditions(duration=2.0)
    (out,) = N["KlingFoleySampler"]().sample(comps["transformer"], cond, 0, 1.0, None,
                                              {"steps": 3, "schedule": "uniform", "shift": 1.0}, ctx)
    assert out["context_path"] == "training-free"
    keep = ctx.known[0]
    n = ctx.frames  # the model's span may hold a frame more than the encoded audio (it is generated)
    torch.testing.assert_close(out["latents"][..., :n][..., keep], latent["latents"][..., keep], atol=1e-5, rtol=1e-5)
    (mel,) = N["KlingFoleyVAEDecode"]().decode(comps["vae"], out)
    (stereo,) = N["KlingFoleyMono2Stereo"]().stereo(mel, comps["mono2stereo"])
    vocoded = N["KlingFoleyVocode"]().vocode(comps["vocoder"], stereo)[0]
    (joined,) = N["KlingFoleyEditJoin"]().join(audio, vocoded, ctx)
    x = joined["waveform"][0]
    assert joined["sample_rate"] == sr and x.shape == audio["waveform"][0].shape
    t = torch.arange(x.shape[-1]) / sr
    outside = (t < 0.6 - 0.05) | (t >= 1.2 + 0.05)
    assert torch.equal(x[:, outside], audio["waveform"][0][:, outside])  # untouched beyond the 50 ms margins
    assert not torch.allclose(x[:, (t > 0.7) & (t < 1.1)], audio["waveform"][0][:, (t > 0.7) & (t < 1.1)])


def test_continue_and_reference_contexts(comps):
    lat = {"latents": torch.randn(1, 8, 62), "duration": 62 / 31.25, "latent_rate": 31.25}
    (ctx,) = N["KlingFoleyAudioContext"]().make(lat, "continue", context_seconds=1.0)
    assert ctx.frames == 31 and torch.equal(ctx.latents, lat["latents"][..., -31:])
    assert abs(ctx.offset - 31 / 31.25) < 1e-9  # the part of the audio left out before the context
    (ref,) = N["KlingFoleyAudioContext"]().make(lat, "reference")
    assert ref.frames == 62 and ref.mode == "reference"
    with pytest.raises(NodeInputError, match="Edit Join: .*'reference' context"):
        N["KlingFoleyEditJoin"]().join({"waveform": torch.zeros(1, 1, 100), "sample_rate": 100},
                                       {"waveform": torch.zeros(1, 2, 100), "sample_rate": 100}, ref)


def test_edit_join_puts_a_continuation_after_the_given_audio():
    sr = 8000
    g = torch.Generator().manual_seed(3)
    original = {"waveform": 0.1 * torch.randn(1, 1, 2 * sr, generator=g), "sample_rate": sr}  # 2 s given
    lat = {"latents": torch.randn(1, 8, 62), "latent_rate": 31.25}
    (ctx,) = N["KlingFoleyAudioContext"]().make(lat, "continue", context_seconds=1.0)  # its last second
    generated = {"waveform": torch.full((1, 2, 3 * 16000), 0.2), "sample_rate": 16000}  # 3 s from the context on
    (joined,) = N["KlingFoleyEditJoin"]().join(original, generated, ctx)
    x = joined["waveform"]
    assert joined["sample_rate"] == sr and x.shape == (1, 2, 3 * sr)
    start = int(round(ctx.offset * sr))
    cut = int((ctx.seconds - 0.05) * sr)
    assert torch.equal(x[0, :, :cut], original["waveform"][0, :, start:start + cut].expand(2, -1))
    assert float(x[0, :, int(1.1 * sr):].std()) < 1e-3  # after the seam: the (level-matched) continuation


def test_edit_join_puts_one_original_under_every_generated_item():
    sr = 8000
    original = {"waveform": 0.1 * torch.randn(1, 2, 3 * sr, generator=torch.Generator().manual_seed(4)),
                "sample_rate": sr}
    lat = {"latents": torch.randn(1, 8, 93), "latent_rate": 31.25}
    (ctx,) = N["KlingFoleyAudioContext"]().make(lat, "edit", edit_start=1.0, edit_end=2.0)
    generated = {"waveform": torch.stack([torch.full((2, 3 * sr), v) for v in (0.2, -0.2)]), "sample_rate": sr}
    (joined,) = N["KlingFoleyEditJoin"]().join(original, generated, ctx, margin_ms=0.0)
    x = joined["waveform"]
    assert x.shape == (2, 2, 3 * sr)  # one output per generated item, each over the same original
    for k, v in enumerate((0.2, -0.2)):
        assert torch.equal(x[k, :, : sr - 1], original["waveform"][0, :, : sr - 1])
        assert torch.allclose(x[k, :, int(1.1 * sr):int(1.9 * sr)], torch.tensor(v))
    three = {"waveform": original["waveform"].expand(3, -1, -1), "sample_rate": sr}
    with pytest.raises(NodeInputError, match="one original for all or one per generated item"):
        N["KlingFoleyEditJoin"]().join(three, generated, ctx)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="edit", edit_start=1.0, edit_end=1.0), "edit_start < edit_end"),
    (dict(mode="edit", edit_start=0.5, edit_end=9.0), "past the end"),
    (dict(mode="edit", edit_start=0.0, edit_end=2.0), "whole"),
    (dict(mode="continue", context_seconds=5.0), "exceeds"),
    (dict(mode="continue", context_seconds=0.2), "at least 0.64"),
    (dict(mode="continue", context_seconds=float("nan")), "finite"),
])
def test_bad_context_settings_are_one_line_node_errors(kwargs, match):
    lat = {"latents": torch.randn(1, 8, 62), "duration": 62 / 31.25, "latent_rate": 31.25}
    with pytest.raises(NodeInputError, match=f"Kling-Foley Audio Context: .*{match}"):
        N["KlingFoleyAudioContext"]().make(lat, **kwargs)


def test_bad_audio_is_refused_before_any_sampling(comps, tmp_path):
    enc = N["KlingFoleyVAEEncode"]()
    with pytest.raises(NodeInputError, match="VAE Encode: audio is 0.30 s"):
        enc.encode(comps["vae"], {"waveform": torch.randn(1, 1, 4800), "sample_rate": 16000})
    with pytest.raises(NodeInputError, match="silent"):
        enc.encode(comps["vae"], {"waveform": torch.zeros(1, 2, 32000), "sample_rate": 16000})
    with pytest.raises(NodeInputError, match="Load Audio: .*folder"):
        N["KlingFoleyLoadAudio"]().load(str(tmp_path))
    # a context longer than the target: the Sampler names it before sampling
    (ctx,) = N["KlingFoleyAudioContext"]().make({"latents": torch.randn(1, 8, 100), "latent_rate": 31.25}, "continue")
    with pytest.raises(NodeInputError, match="Sampler: .*no longer than the target"):
        N["KlingFoleySampler"]().sample(comps["transformer"], FoleyConditions(duration=2.0), 0, 1.0, None, None, ctx)


def test_splice_stays_within_full_scale():
    """A full-scale generated window resampled to the original's rate overshoots (band-limited interpolation of
    clipped audio); the spliced result stays a valid waveform."""
    from kling_foley_core.audio.splice import splice_window

    g = torch.Generator().manual_seed(0)
    generated = torch.sign(torch.randn(2, 16000, generator=g))  # clipped noise at full scale, 16 kHz
    original = 0.1 * torch.randn(2, 44100, generator=g)
    out = splice_window(original, 44100, generated, 16000, 0.25, 0.75)
    assert out.shape == original.shape and out.abs().max() <= 1.0
    assert out[:, int(0.4 * 44100):int(0.6 * 44100)].abs().max() > 0.99  # the window holds the generated audio
    assert torch.equal(out[:, : int(0.15 * 44100)], original[:, : int(0.15 * 44100)])  # outside: untouched


def test_continuation_keeps_the_given_samples_up_to_the_seam_and_their_level():
    from kling_foley_core.audio.splice import DEFAULT_MARGIN, MATCH_LIMIT_DB, splice_continuation

    g = torch.Generator().manual_seed(1)
    given = 0.1 * torch.randn(1, 1, 8000, generator=g)  # 1 s of mono at 8 kHz
    # a batch of two stereo 3-s renders at 16 kHz: the decoded copy of the given second at half its level, then 0.2
    decoded = 0.5 * given.repeat_interleave(2, dim=-1)
    generated = torch.cat([decoded.expand(2, 2, -1), torch.full((2, 2, 32000), 0.2)], dim=-1)
    out = splice_continuation(given, 8000, generated, 16000, known_seconds=1.02, duration=2.5)
    assert out.shape == (2, 2, 20000)  # the given rate, stereo, the asked duration
    cut = int((1.0 - DEFAULT_MARGIN) * 8000)  # the seam is the given audio's end (the latents ran 20 ms past it)
    assert torch.equal(out[:, :, :cut], given.expand(2, 2, -1)[..., :cut])
    gain = float(out[:, :, 8100:].mean()) / 0.2  # the continuation lifted by the level its decoded copy lost
    assert abs(gain - 2.0) < 0.05
    plain = splice_continuation(given, 8000, generated, 16000, known_seconds=1.02, duration=2.5, match_level=False)
    assert torch.allclose(plain[:, :, 8400:], torch.full((2, 2, 11600), 0.2), atol=2e-3)  # past the resampler's ring
    silent = splice_continuation(given, 8000, generated * 1e-6, 16000, known_seconds=1.02, duration=2.5)
    assert float(silent[:, :, 8100:].abs().max()) <= 0.2e-6 * 10 ** (MATCH_LIMIT_DB / 20) * 1.01  # bounded lift
    whole = splice_continuation(given, 8000, generated, 16000, known_seconds=1.0, duration=1.0)
    assert torch.equal(whole, given.expand(2, 2, -1))  # nothing generated: the given audio as it was
