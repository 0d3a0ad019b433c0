"""End-to-end wiring of the tiny stack: video file or IMAGE batch → stereo waveform of the video's length."""
from fractions import Fraction

import pytest
import torch

from kling_foley_core.generation import GenerationError
from kling_foley_core.presets import tiny_pipeline
from video_clips import write_clip


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_video_file_to_stereo_audio_of_the_video_length(pipe, tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=45, rate=Fraction(30000, 1001), size=(40, 32))
    out = pipe(clip, prompt="a knock", num_inference_steps=2, seed=3)
    assert out.waveform.shape[:2] == (1, 2)
    assert out.sample_rate == 16000
    assert abs(out.duration - 45 * 1001 / 30000) < 1e-3
    assert out.waveform.shape[-1] == int(out.duration * 16000)
    assert torch.isfinite(out.waveform).all() and float(out.waveform.abs().max()) > 0
    again = pipe(clip, prompt="a knock", num_inference_steps=2, seed=3)
    assert torch.equal(out.latents, again.latents)
    other = pipe(clip, prompt="a knock", num_inference_steps=2, seed=4)
    assert not torch.equal(out.latents, other.latents)


def test_image_batch_and_text_only(pipe):
    frames = torch.rand(20, 24, 32, 3)
    out = pipe(frames=frames, fps=12, num_inference_steps=1, guidance_scale=1.0)
    assert out.waveform.shape[-1] == int(20 / 12 * 16000)
    text_only = type(pipe)(transformer=pipe.transformer, vae=pipe.vae, vocoder=pipe.vocoder,
                           text_encoder=pipe.text_encoder)
    out = text_only(prompt="rain", duration=1.5, num_inference_steps=1)
    assert out.waveform.shape == (1, 2, 24000)


def test_bad_inputs_are_named(pipe, tmp_path):
    with pytest.raises(GenerationError, match="does not exist"):
        pipe(tmp_path / "missing.mp4")
    with pytest.raises(GenerationError, match="duration=0"):
        pipe(prompt="x", duration=0)
    with pytest.raises(GenerationError, match="duration=nan"):
        pipe(prompt="x", duration=float("nan"))
    with pytest.raises(GenerationError, match="either video= .* or frames="):
        pipe(tmp_path / "a.mp4", frames=torch.zeros(1, 8, 8, 3), fps=8)
    with pytest.raises(ValueError, match="available samplers"):
        pipe(prompt="x", duration=1.0, num_inference_steps=1, sampler="nope")


def test_save_pretrained_round_trip_keeps_every_component_and_the_audio(pipe, tmp_path, caplog):
    from kling_foley_core.pipeline import KlingFoleyPipeline

    with caplog.at_level("WARNING"):
        pipe.save_pretrained(tmp_path / "p")
    assert not caplog.records  # every part has a save format: nothing dropped, no module dump
    again = KlingFoleyPipeline.from_pretrained(tmp_path / "p", mono2stereo=pipe.mono2stereo)
    assert {k: type(v) for k, v in again.components.items()} == {k: type(v) for k, v in pipe.components.items()}
    frames = torch.rand(16, 24, 32, 3)
    a = pipe(frames=frames, fps=8, prompt="x", num_inference_steps=2, seed=1)
    b = again(frames=frames, fps=8, prompt="x", num_inference_steps=2, seed=1)
    assert torch.equal(a.waveform, b.waveform)  # the video still conditions the reloaded pipeline


def test_apg_eta_is_a_pipeline_setting_that_save_pretrained_keeps(pipe, tmp_path):
    from kling_foley_core.pipeline import KlingFoleyPipeline

    frames = torch.rand(16, 24, 32, 3, generator=torch.Generator().manual_seed(2))
    run = lambda p, **kw: p(frames=frames, fps=8, num_inference_steps=2, seed=1, **kw).latents  # noqa: E731
    assert pipe.config.apg_eta == 1.0  # a pipeline without the setting guides as plain CFG
    tuned = KlingFoleyPipeline(**pipe.components, apg_eta=0.0)
    tuned.save_pretrained(tmp_path / "p")
    again = KlingFoleyPipeline.from_pretrained(tmp_path / "p")
    assert again.config.apg_eta == 0.0
    assert torch.equal(run(again), run(pipe, apg_eta=0.0)) and torch.equal(run(again, apg_eta=1.0), run(pipe))
    assert not torch.equal(run(again), run(pipe))  # the projection changes the guided result
    with pytest.raises(GenerationError, match="apg_eta=1.5"):
        run(pipe, apg_eta=1.5)


def test_a_component_without_save_format_is_named_on_one_line(pipe, tmp_path, caplog):
    from kling_foley_core.encoders import get_text_encoder
    from kling_foley_core.pipeline import KlingFoleyPipeline

    clip_text = get_text_encoder("tiny-clip", generator=torch.Generator().manual_seed(0))
    text_dim = pipe.transformer.config.text_dim
    assert clip_text.dim == text_dim  # the tiny stack's text width: this encoder fits the tiny model
    other = KlingFoleyPipeline(**{**pipe.components, "text_encoder": clip_text})
    with caplog.at_level("WARNING"):
        other.save_pretrained(tmp_path / "p")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "text_encoder (ClipTextEncoder)" in lines[0] and "\n" not in lines[0]
    assert other.text_encoder is clip_text  # the pipeline itself keeps it
    again = KlingFoleyPipeline.from_pretrained(tmp_path / "p", text_encoder=clip_text)
    assert again.text_encoder is clip_text and again.visual_encoder is not None


def test_progress_bar_follows_set_progress_bar_config(pipe):
    import io

    out = io.StringIO()
    pipe.set_progress_bar_config(file=out, disable=False)
    try:
        pipe(prompt="x", duration=1.0, num_inference_steps=3)
        assert "3/3" in out.getvalue()
        pipe.set_progress_bar_config(file=out, disable=True)
        out.truncate(0)
        pipe(prompt="x", duration=1.0, num_inference_steps=3)
        assert out.getvalue().strip("\x00") == ""
    finally:
        pipe.set_progress_bar_config(disable=True)


def _tone(seconds, sr=22050, channels=1):
    t = torch.arange(int(seconds * sr)) / sr
    x = 0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.exp(-3 * (t % 0.5))
    return x.expand(channels, -1).clone(), sr


def test_known_audio_modes_from_the_pipeline(pipe, tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=100, rate=Fraction(25, 1), size=(40, 32))
    wave, sr = _tone(2.4)
    plain = pipe(clip, num_inference_steps=2, seed=1)
    cont = pipe(clip, num_inference_steps=2, seed=1, audio=wave, audio_sample_rate=sr, audio_mode="continue")
    assert not torch.equal(cont.latents, plain.latents)
    # the known frames end exactly at the given audio's latents
    from kling_foley_core.audio.encode import encode_audio

    enc = encode_audio(pipe.vae, wave, sr)
    k = enc.latents.shape[-1]
    assert torch.allclose(cont.latents[..., :k], enc.latents, atol=1e-4)
    # the output keeps the given audio's own samples up to the crossfade before the seam, at its rate, in stereo
    assert cont.sample_rate == sr and cont.waveform.shape == (1, 2, int(cont.duration * sr))
    seam = int((2.4 - 0.05) * sr)
    assert torch.equal(cont.waveform[0, :, :seam - 1], wave.expand(2, -1)[:, :seam - 1])
    assert not torch.allclose(cont.waveform[0, :, int(2.5 * sr):], torch.zeros(1))
    short = wave[..., :-1]  # one sample short of whole latent frames: its context rounds up past its length
    cont = pipe(clip, num_inference_steps=2, seed=1, audio=short, audio_sample_rate=sr, audio_mode="continue")
    first = int(2.0 * sr)  # before the seam (whole frames of the short audio end up to one frame earlier)
    assert torch.equal(cont.waveform[0, :, :first], short.expand(2, -1)[:, :first])  # was: silence
    ref = pipe(clip, num_inference_steps=2, seed=1, audio=wave, audio_sample_rate=sr, audio_mode="reference")
    assert ref.waveform.shape == plain.waveform.shape  # the prepended reference is dropped again
    tc = pipe(clip, prompt="a bell", num_inference_steps=2, seed=1, video_semantics=False)
    assert not torch.equal(tc.latents, pipe(clip, prompt="a bell", num_inference_steps=2, seed=1).latents)


def test_edit_keeps_the_original_outside_the_window(pipe, tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=75, rate=Fraction(25, 1), size=(40, 32))
    wave, sr = _tone(3.0, sr=16000, channels=2)
    out = pipe(clip, num_inference_steps=2, seed=2, audio=wave, audio_sample_rate=sr, audio_mode="edit",
               edit_start=1.0, edit_end=2.0)
    assert out.sample_rate == sr and out.waveform.shape == (1, 2, wave.shape[-1])
    outside = torch.cat([out.waveform[0, :, :int(0.95 * sr)], out.waveform[0, :, int(2.05 * sr):]], -1)
    original = torch.cat([wave[:, :int(0.95 * sr)], wave[:, int(2.05 * sr):]], -1)
    assert torch.equal(outside, original)
    assert not torch.allclose(out.waveform[0, :, int(1.2 * sr):int(1.8 * sr)], wave[:, int(1.2 * sr):int(1.8 * sr)])


def test_bad_known_audio_is_named_before_sampling(pipe, tmp_path):
    wave, sr = _tone(2.0)
    with pytest.raises(GenerationError, match="audio_mode='remix'"):
        pipe(prompt="x", duration=2.0, audio=wave, audio_sample_rate=sr, audio_mode="remix")
    with pytest.raises(GenerationError, match="audio_sample_rate"):
        pipe(prompt="x", duration=2.0, audio=wave)
    with pytest.raises(GenerationError, match="edit window .* is empty"):
        pipe(prompt="x", duration=2.0, audio=wave, audio_sample_rate=sr, audio_mode="edit", edit_start=1.5,
             edit_end=1.0)
    with pytest.raises(GenerationError, match="silent"):
        pipe(prompt="x", duration=2.0, audio=torch.zeros(1, sr), audio_sample_rate=sr)
    with pytest.raises(GenerationError, match="not found"):
        pipe(prompt="x", duration=2.0, audio=tmp_path / "none.wav")
