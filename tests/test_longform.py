"""Video of any length: windows joined by Foley extension in latent space, for each model family (tiny stacks)."""
import pytest
import torch

import kling_foley_core.longform as longform
from kling_foley_core.generation import FoleyConditions, GenerationError, SamplerSettings, generate_latents
from kling_foley_core.longform import (encode_video_streamed, generate_long_latents, plan_for, total_latent_frames,
                                       trained_seconds)
from kling_foley_core.models.duration import sequence_lengths
from kling_foley_core.sampling.context import AudioContext
from kling_foley_core.sampling.windows import BLEND

STEPS = SamplerSettings(steps=2)


@pytest.fixture(scope="module")
def tiny():
    from kling_foley_core.presets import tiny_components

    return tiny_components()


def _cond(duration, dim=32, seed=0):
    lens = sequence_lengths(duration)
    g = torch.Generator().manual_seed(seed)
    return FoleyConditions(duration=duration, clip_f=torch.randn(1, lens.clip, dim, generator=g),
                           sync_f=torch.randn(1, lens.sync, dim, generator=g),
                           text_f=torch.randn(1, 3, dim, generator=g))


def test_window_defaults_come_from_the_model_config(tiny):
    from kling_foley_core.default_model import is_available
    from kling_foley_core.hunyuan import HunyuanFoleyDiT
    from kling_foley_core.models.mmdit_presets import MMDIT_PRESETS

    assert trained_seconds(tiny["transformer"]) == tiny["transformer"].config.default_duration == 10.0
    assert MMDIT_PRESETS["mmaudio_small_16k"]["default_duration"] == 8.0  # MMAudio checkpoints: 8-s windows
    assert trained_seconds(HunyuanFoleyDiT.from_preset("tiny")) == 8.0
    if is_available():
        from kling_foley_core.default_model import default_pipeline

        assert trained_seconds(default_pipeline().transformer) == 8.0
    with pytest.raises(GenerationError, match="window_seconds=40 is longer"):
        plan_for(tiny["transformer"], 100.0, window=40.0)


def test_one_window_is_exactly_the_plain_run(tiny):
    cond = _cond(1.5)
    plain = generate_latents(tiny["transformer"], cond, STEPS, seed=3)
    long = generate_long_latents(tiny["transformer"], cond, STEPS, seed=3, window=2.0, overlap=0.64)
    assert len(long.plan) == 1 and long.context_path is None
    assert torch.equal(plain, long.latents)


def test_windows_continue_the_previous_audio_and_see_their_own_features(tiny, monkeypatch):
    tr = tiny["transformer"]
    cond = _cond(5.0)
    seen = []
    real = longform.generate_latents

    def spy(transformer, sub, settings, **kw):
        seen.append(sub)
        return real(transformer, sub, settings, **kw)

    monkeypatch.setattr(longform, "generate_latents", spy)
    steps = []
    out = generate_long_latents(tr, cond, STEPS, seed=3, window=2.0, overlap=0.64, callback=steps.append)
    plan = out.plan
    assert len(plan) == len(seen) > 2 and out.context_path == "training-free"
    assert out.latents.shape[-1] == total_latent_frames(tr, 5.0)
    assert [s["window"] for s in steps] == [k for k in range(len(plan)) for _ in range(2)]
    rate = tr.latent_rate
    for w, sub in zip(plan.windows, seen):
        i0, t0 = round(w.start * 8), round(w.start / 0.32) * 8
        assert torch.equal(sub.clip_f, cond.clip_f[:, i0:i0 + sub.clip_f.shape[1]])
        assert torch.equal(sub.sync_f, cond.sync_f[:, t0:t0 + sub.sync_f.shape[1]])
        assert sub.sync_f.shape[1] == sequence_lengths(w.seconds).sync or w.index == len(plan) - 1
        if w.index:  # the first half of the overlap is held, the second cross-faded
            assert sub.context.mode == "continue" and sub.context.seconds == pytest.approx(w.hold, abs=1 / rate)
            assert w.hold == pytest.approx(w.context * (1 - BLEND))
    # the first window's audio is what a plain run of that window makes, and the next window keeps it up to the end
    # of its held context (known frames), then fades from it into its own frames by the end of the overlap
    g = torch.Generator().manual_seed(3)
    first = real(tr, seen[0], STEPS, generator=g)
    w1 = plan.windows[1]
    a1, hold, end0 = round(w1.start * rate), round(w1.start * rate) + seen[1].context.frames, first.shape[-1]
    assert torch.allclose(out.latents[..., :hold], first[..., :hold], atol=1e-5)
    assert not torch.allclose(out.latents[..., hold:end0], first[..., hold:end0], atol=1e-3)
    # each window's context is exactly the frames the windows before it generated
    assert torch.allclose(seen[1].context.latents, out.latents[..., a1:hold], atol=1e-5)
    # past the overlap the latents are the second window's own: rerun it with the generator where it stood
    g2 = torch.Generator().manual_seed(3)
    real(tr, seen[0], STEPS, generator=g2)
    second = real(tr, seen[1], STEPS, generator=g2)
    assert torch.allclose(out.latents[..., end0:end0 + 3], second[..., end0 - a1:end0 - a1 + 3], atol=1e-5)
    ramp_mid = (hold + end0) // 2  # half way through the fade: between the two windows
    mix = out.latents[..., ramp_mid]
    lo = torch.minimum(first[..., ramp_mid], second[..., ramp_mid - a1]) - 1e-5
    hi = torch.maximum(first[..., ramp_mid], second[..., ramp_mid - a1]) + 1e-5
    assert ((mix >= lo) & (mix <= hi)).all()


def test_pathway_models_join_windows_through_their_context_branch(tiny):
    from kling_foley_core.models.mmdit_presets import build_mmdit

    torch.manual_seed(0)
    model = build_mmdit("tiny", clip_dim=32, sync_dim=32, text_dim=32, text_seq_len=77, latent_dim=8,
                        context_input=True).eval()
    out = generate_long_latents(model, _cond(4.0), STEPS, seed=0, window=2.0, overlap=0.64)
    assert out.context_path == "pathway" and out.latents.shape[-1] == total_latent_frames(model, 4.0)
    assert torch.isfinite(out.latents).all()


def test_hunyuan_family_generates_a_long_clip_in_windows():
    from kling_foley_core.hunyuan import HunyuanFoleyDiT

    torch.manual_seed(0)
    model = HunyuanFoleyDiT.from_preset("tiny").eval()
    c = model.config
    lens = sequence_lengths(3.0)
    g = torch.Generator().manual_seed(0)
    cond = FoleyConditions(duration=3.0, clip_f=torch.randn(1, lens.clip, c.clip_dim, generator=g),
                           sync_f=torch.randn(1, lens.sync, c.sync_feat_dim, generator=g),
                           text_f=torch.randn(1, 4, c.condition_dim, generator=g),
                           empty_text_f=torch.randn(1, 4, c.condition_dim, generator=g))
    out = generate_long_latents(model, cond, STEPS, seed=0, window=1.6, overlap=0.64)
    assert len(out.plan) >= 3 and out.latents.shape == (1, c.audio_vae_latent_dim, model.latent_length(3.0))


def test_only_a_continue_context_spans_windows(tiny):
    cond = _cond(5.0)
    cond.context = AudioContext(torch.zeros(1, 8, 40), torch.ones(1, 40, dtype=torch.bool), 31.25, mode="reference")
    with pytest.raises(GenerationError, match="'reference' audio context works on clips up to one window"):
        generate_long_latents(tiny["transformer"], cond, STEPS, window=2.0, overlap=0.64)


def test_streamed_encoders_give_the_features_of_one_pass(tiny, tmp_path):
    from video_clips import write_clip

    from kling_foley_core.generation import frame_specs
    from kling_foley_core.video.loader import load_video

    path = write_clip(tmp_path / "long.mp4", n=25 * 19, rate=25, size=(32, 24), gop=50)  # 19 s
    vis, syn = tiny["visual_encoder"], tiny["sync_encoder"]
    chunks = []
    clip_f, sync_f = encode_video_streamed(path, 1.0, 17.5, visual_encoder=vis, sync_encoder=syn, chunk=8.0,
                                           on_chunk=lambda i, n: chunks.append((i, n)))
    assert chunks == [(0, 2), (1, 2)]
    semantic, sync = frame_specs(vis, syn)
    whole = load_video(path, semantic=semantic, sync=sync, start=1.0, duration=17.5)
    assert torch.allclose(clip_f, vis.encode(whole.semantic.frames), atol=1e-5)
    assert torch.allclose(sync_f, syn.encode(whole.sync.frames), atol=1e-5)
    assert sync_f.shape[1] == sequence_lengths(17.5).sync


def test_pipeline_generates_a_clip_longer_than_the_model_in_windows(tiny):
    from kling_foley_core.pipeline import KlingFoleyPipeline

    pipe = KlingFoleyPipeline(**tiny)
    pipe.set_progress_bar_config(disable=True)
    steps = []
    frames = torch.rand(12 * 5, 16, 16, 3)  # 12 s at 5 fps; the tiny MM-DiT's trained length is 10 s
    out = pipe(frames=frames, fps=5.0, num_inference_steps=2, callback=steps.append)
    assert out.waveform.shape[-1] == 12 * out.sample_rate and out.duration == 12.0
    assert {s["window"] for s in steps} == {0, 1} and all(s["windows"] == 2 for s in steps)
