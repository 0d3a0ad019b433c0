"""MM-DiT: presets, shapes, condition caching, duration → lengths, placeholders, masks, aligned RoPE."""
import math

import pytest
import torch

from kling_foley_core.layers import rope_rotations
from kling_foley_core.models.duration import DurationError, sequence_lengths
from kling_foley_core.models.mmdit import KlingFoleyMMDiT, MMDiTInputError
from kling_foley_core.models.mmdit_presets import MMDIT_PRESETS, build_mmdit, count_parameters, mmdit_config
from kling_foley_core.sampling import CFGDenoiser

TINY_DIMS = dict(clip_dim=24, sync_dim=16, text_dim=20, text_seq_len=5, hidden_dim=32, num_heads=2, depth=3,
                 fused_depth=1, duration_fourier_dim=16)


def tiny_of(preset: str) -> KlingFoleyMMDiT:
    """The preset's design (projection style, timestep features, duration, placeholders) at toy size."""
    config = mmdit_config(preset, **TINY_DIMS)
    if config["t_frequency_dim"] is not None:
        config["t_frequency_dim"] = 32
    return randomized(KlingFoleyMMDiT(**config))


def randomized(model: KlingFoleyMMDiT, seed: int = 0) -> KlingFoleyMMDiT:
    """Random weights everywhere: the real init zeroes adaLN and the output layer, which would hide bugs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # fan-in scaled so activations stay O(1) through the blocks
            fan_in = p[0].numel() if p.ndim >= 2 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (0.8 / math.sqrt(fan_in) if p.ndim >= 2 else 0.3))
        model.latent_std.uniform_(0.5, 1.5, generator=g)
        model.latent_mean.normal_(generator=g)
    return model.eval()


def features(model: KlingFoleyMMDiT, batch: int, duration: float, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lens = model.sequence_lengths(duration)
    c = model.config
    return dict(clip_f=torch.randn(batch, lens.clip, c.clip_dim, generator=g),
                sync_f=torch.randn(batch, lens.sync, c.sync_dim, generator=g),
                text_f=torch.randn(batch, 6, c.text_dim, generator=g)), lens


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", list(MMDIT_PRESETS))
def test_every_preset_design_runs_at_tiny_size(preset):
    model = tiny_of(preset)
    feats, lens = features(model, 2, 2.0)
    x = torch.randn(2, lens.latent, model.config.latent_dim)
    with torch.no_grad():
        v = model(x, torch.tensor([0.1, 0.7]), **feats)
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert v.abs().max() > 0


def test_mmaudio_parameter_counts_match_the_released_sizes():
    # MMAudio's README: small 157M, medium 621M, large 1.03B (counted on the meta device: no memory used)
    assert round(count_parameters("mmaudio_small_16k") / 1e6) == 157
    assert round(count_parameters("mmaudio_medium_44k") / 1e6) == 622
    assert round(count_parameters("mmaudio_large_44k") / 1e7) == 103


def test_kling_presets_follow_the_paper_scaling_rule():
    for name, heads, depth, lo, hi in [("kling_foley_1.5b", 17, 23, 1.4e9, 1.9e9),
                                       ("kling_foley_3b", 23, 27, 2.8e9, 3.8e9)]:
        cfg = MMDIT_PRESETS[name]
        assert cfg["num_heads"] == heads and cfg["depth"] == depth and cfg["hidden_dim"] == 64 * heads
        assert lo < count_parameters(name) < hi
    assert MMDIT_PRESETS["kling_foley_6b"]["num_heads"] == 32


def test_meta_build_allocates_nothing():
    model = build_mmdit("kling_foley_1.5b", device="meta")
    assert all(p.is_meta for p in model.parameters())


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown; choose one of"):
        mmdit_config("huge")


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["mmaudio_small_16k", "mmaudio_large_44k_v2", "tiny"])
def test_forward_equals_prepare_plus_predict(preset):
    model = tiny_of(preset)
    feats, lens = features(model, 2, 1.5)
    x = torch.randn(2, lens.latent, model.config.latent_dim)
    t = torch.tensor([0.25, 0.8])
    with torch.no_grad():
        one_shot = model(x, t, **feats)
        cond = model.prepare_conditions(**feats, latent_seq_len=lens.latent)
        cached = [model.predict_flow(x, t, cond) for _ in range(2)]  # reused across steps
    torch.testing.assert_close(cached[0], one_shot, rtol=0, atol=1e-6)
    torch.testing.assert_close(cached[1], one_shot, rtol=0, atol=0)


def test_batched_cfg_equals_two_calls():
    model = tiny_of("tiny")
    feats, lens = features(model, 2, 1.0)
    cond = model.prepare_conditions(**feats, duration=1.0)
    uncond = model.get_empty_conditions(2, like=cond)
    x = torch.randn(2, lens.latent, model.config.latent_dim)
    with torch.no_grad():
        a = CFGDenoiser(model, cond, uncond, 4.5, batched=True)(x, torch.tensor(0.3))
        b = CFGDenoiser(model, cond, uncond, 4.5, batched=False)(x, torch.tensor(0.3))
        manual = 4.5 * model.predict_flow(x, 0.3, cond) - 3.5 * model.predict_flow(x, 0.3, uncond)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, manual, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
def test_duration_to_sequence_lengths():
    l16 = sequence_lengths(8.0, sample_rate=16000, mel_hop=256)
    assert (l16.latent, l16.clip, l16.sync) == (250, 64, 192)
    l44 = sequence_lengths(8.0, sample_rate=44100, mel_hop=512)
    assert (l44.latent, l44.clip, l44.sync) == (345, 64, 192)
    l10 = sequence_lengths(10.0)
    assert (l10.latent, l10.clip, l10.sync) == (math.ceil(10 * 44100 / 512 / 2), 80, ((250 - 16) // 8 + 1) * 8)
    odd = sequence_lengths(3.3)
    assert (odd.latent, odd.clip, odd.sync) == (math.ceil(3.3 * 44100 / 1024), 26, ((82.5 - 16) // 8 + 1) * 8)


@pytest.mark.parametrize("bad,match", [(0, "positive"), (-2.0, "positive"), (float("nan"), "positive"),
                                       (0.5, "shorter than one sync window"), ("abc", "not a number"),
                                       (31.0, "exceeds this model's limit")])
def test_bad_durations_are_clear_errors(bad, match):
    with pytest.raises(DurationError, match=match):
        sequence_lengths(bad, max_duration=30.0)


def test_model_generates_variable_lengths():
    model = tiny_of("tiny")
    with torch.no_grad():
        for duration in (1.0, 2.56, 4.0):
            feats, lens = features(model, 1, duration)
            cond = model.prepare_conditions(**feats, duration=duration)
            assert cond.latent_seq_len == lens.latent
            v = model.predict_flow(torch.randn(1, lens.latent, model.config.latent_dim), 0.5, cond)
            assert v.shape == (1, lens.latent, model.config.latent_dim)
    with pytest.raises(DurationError):
        model.prepare_conditions(duration=model.config.max_duration + 1)


def test_latent_length_mismatch_is_a_clear_error():
    model = tiny_of("tiny")
    feats, lens = features(model, 1, 1.0)
    cond = model.prepare_conditions(**feats, duration=1.0)
    with pytest.raises(MMDiTInputError, match="does not match the prepared conditions"):
        model.predict_flow(torch.randn(1, lens.latent + 1, model.config.latent_dim), 0.5, cond)


@pytest.mark.parametrize("key,shape,match", [("clip_f", (1, 8, 7), "channels"), ("sync_f", (1, 12, 16), "multiple of 8"),
                                             ("text_f", (2, 3, 20), "batch"), ("text_f", (3, 20), "must be")])
def test_bad_feature_shapes_are_clear_errors(key, shape, match):
    model = tiny_of("tiny")
    feats, _ = features(model, 1, 1.0)
    feats[key] = torch.randn(*shape)
    with pytest.raises(MMDiTInputError, match=match):
        model.prepare_conditions(**feats, duration=1.0)


# ---------------------------------------------------------------------------------------------------------------
def test_missing_modalities_use_the_learned_placeholders():
    model = tiny_of("tiny")
    feats, lens = features(model, 2, 1.0)
    x = torch.randn(2, lens.latent, model.config.latent_dim)
    with torch.no_grad():
        none = model.prepare_conditions(text_f=feats["text_f"], duration=1.0)
        explicit = model.prepare_conditions(
            clip_f=model.empty_clip_feat[None].expand(2, lens.clip, -1),
            sync_f=model.empty_sync_feat[None].expand(2, lens.sync, -1), text_f=feats["text_f"], duration=1.0)
        torch.testing.assert_close(model.predict_flow(x, 0.4, none), model.predict_flow(x, 0.4, explicit))
        before = model.predict_flow(x, 0.4, model.prepare_conditions(duration=1.0, batch_size=2))
        model.empty_string_feat.add_(1.0)  # the text placeholder is a parameter, and it is what gets used
        after = model.predict_flow(x, 0.4, model.prepare_conditions(duration=1.0, batch_size=2))
    assert (before - after).abs().max() > 1e-3
    assert model.empty_string_feat.requires_grad  # learned in the Kling-Foley design
    assert not tiny_of("mmaudio_small_44k").empty_string_feat.requires_grad  # stored encoder output in MMAudio


def test_per_item_modality_masks_pick_placeholders_for_some_items():
    model = tiny_of("tiny")
    feats, lens = features(model, 2, 1.0)
    x = torch.randn(2, lens.latent, model.config.latent_dim)
    with torch.no_grad():
        mixed = model.prepare_conditions(**feats, duration=1.0, has_video=torch.tensor([True, False]),
                                         has_text=torch.tensor([False, True]))
        v = model.predict_flow(x, 0.6, mixed)
        first = model.prepare_conditions(clip_f=feats["clip_f"][:1], sync_f=feats["sync_f"][:1], duration=1.0)
        second = model.prepare_conditions(text_f=feats["text_f"][1:], duration=1.0)
        torch.testing.assert_close(v[:1], model.predict_flow(x[:1], 0.6, first), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v[1:], model.predict_flow(x[1:], 0.6, second), rtol=1e-5, atol=1e-5)
    with pytest.raises(MMDiTInputError, match="has_video has 3 values"):
        model.prepare_conditions(**feats, duration=1.0, has_video=torch.tensor([True, False, True]))


def test_empty_conditions_match_prepared_placeholders():
    model = tiny_of("tiny")
    feats, lens = features(model, 3, 2.0)
    cond = model.prepare_conditions(**feats, duration=2.0, seconds_total=[2.0, 5.0, 9.0])
    uncond = model.get_empty_conditions(3, like=cond)
    ref = model.prepare_conditions(duration=2.0, batch_size=3, seconds_total=[2.0, 5.0, 9.0])
    for name in ("clip_f", "sync_f", "text_f", "global_c"):
        torch.testing.assert_close(getattr(uncond, name), getattr(ref, name))


def test_duration_embedding_changes_the_velocity_only_in_the_kling_design():
    for preset, should_change in (("tiny", True), ("mmaudio_small_44k", False)):
        model = tiny_of(preset)
        feats, lens = features(model, 1, 1.0)
        x = torch.randn(1, lens.latent, model.config.latent_dim)
        with torch.no_grad():
            a = model.predict_flow(x, 0.5, model.prepare_conditions(**feats, duration=1.0, seconds_total=1.0))
            b = model.predict_flow(x, 0.5, model.prepare_conditions(**feats, duration=1.0, seconds_total=12.0))
        assert bool((a - b).abs().max() > 1e-4) == should_change, preset


def test_padded_text_with_mask_equals_unpadded_and_batch_cat_pads():
    model = tiny_of("tiny")
    feats, lens = features(model, 1, 1.0)
    x = torch.randn(1, lens.latent, model.config.latent_dim)
    text = feats.pop("text_f")
    padded = torch.cat([text, torch.randn(1, 4, text.shape[-1])], dim=1)
    mask = torch.tensor([[True] * text.shape[1] + [False] * 4])
    with torch.no_grad():
        plain = model.prepare_conditions(**feats, text_f=text, duration=1.0)
        masked = model.prepare_conditions(**feats, text_f=padded, text_mask=mask, duration=1.0)
        torch.testing.assert_close(model.predict_flow(x, 0.3, masked), model.predict_flow(x, 0.3, plain),
                                   rtol=1e-5, atol=1e-5)
        # a negative prompt shorter than the prompt: batched CFG pads and masks it
        uncond = model.get_empty_conditions(1, like=plain, negative_text_f=text[:, :2])
        joint = plain.batch_cat(uncond)
        v = model.predict_flow(torch.cat([x, x]), 0.3, joint)
        torch.testing.assert_close(v[1:], model.predict_flow(x, 0.3, uncond), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
def test_aligned_rope_puts_video_frames_at_audio_positions():
    n_audio, n_video, head_dim = 40, 8, 16
    audio = rope_rotations(n_audio, head_dim)
    video = rope_rotations(n_video, head_dim, freq_scaling=n_audio / n_video)
    for i in range(n_video):
        torch.testing.assert_close(video[0, i], audio[0, i * n_audio // n_video], rtol=0, atol=2e-5)


def test_no_rope_on_text_and_rope_cache_is_per_length():
    model = tiny_of("tiny")
    with torch.no_grad():
        for duration in (1.0, 2.0, 1.0):
            feats, lens = features(model, 1, duration)
            cond = model.prepare_conditions(**feats, duration=duration)
            model.predict_flow(torch.randn(1, lens.latent, model.config.latent_dim), 0.5, cond)
    lengths = {k[0] for k in model._rope._cache}
    assert lengths == {sequence_lengths(d, sample_rate=16000, mel_hop=256).latent for d in (1.0, 2.0)} | {8, 16}
    # text tokens are permutation-equivariant (no positions): permuting text leaves the velocity unchanged
    feats, lens = features(model, 1, 1.0)
    x = torch.randn(1, lens.latent, model.config.latent_dim)
    perm = torch.randperm(feats["text_f"].shape[1])
    with torch.no_grad():
        a = model.predict_flow(x, 0.5, model.prepare_conditions(**feats, duration=1.0))
        feats["text_f"] = feats["text_f"][:, perm]
        b = model.predict_flow(x, 0.5, model.prepare_conditions(**feats, duration=1.0))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# -- sync layout ---------------------------------------------------------------------------------------------------
def test_time_sync_layout_puts_each_token_at_the_frames_it_shows():
    from kling_foley_core.models.sync_layout import overlap_average, resample_to_latents

    n_windows = 5
    # every token carries the first frame of its 2-frame tubelet: window w, token j shows frames 8w + 2j, +1
    first = torch.tensor([8 * w + 2 * j for w in range(n_windows) for j in range(8)], dtype=torch.float32)
    slots = overlap_average(first.view(1, -1, 1).repeat(2, 1, 3))  # (2, 4W + 4, 3)
    assert slots.shape == (2, 4 * n_windows + 4, 3)
    assert torch.equal(slots[0, :, 0], torch.arange(0, 8 * n_windows + 8, 2, dtype=torch.float32))
    rate = 16000 / 256 / 2
    lat = resample_to_latents(slots, 40, rate)[0, :, 0]  # (40,)
    frame_at_centre = (torch.arange(40) + 0.5) / rate * 25  # the frame instant at each latent's centre
    # slot 2s is centred at frame 2s + 0.5; the first latent's centre lies before slot 0's and takes slot 0
    assert torch.allclose(lat[1:], frame_at_centre[1:] - 0.5, atol=1e-4) and lat[0] == 0


def test_time_sync_layout_model_runs_and_differs_from_windows():
    config = mmdit_config("kling_foley_1.5b", **TINY_DIMS)
    a = randomized(KlingFoleyMMDiT(**{**config, "sync_layout": "time"}))
    b = KlingFoleyMMDiT(**{**config, "sync_layout": "windows"}).eval()
    b.load_state_dict(a.state_dict())
    feats, lens = features(a, 1, 2.0)
    with torch.no_grad():
        ca = a.prepare_conditions(**feats, duration=2.0)
        cb = b.prepare_conditions(**feats, duration=2.0)
        x = torch.randn(1, lens.latent, a.config.latent_dim)
        v = a.predict_flow(x, torch.full((1,), 0.5), ca)
    assert ca.sync_f.shape == cb.sync_f.shape == (1, lens.latent, a.config.hidden_dim)
    assert not torch.allclose(ca.sync_f, cb.sync_f) and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="sync_layout"):
        KlingFoleyMMDiT(**{**config, "sync_layout": "random"})
