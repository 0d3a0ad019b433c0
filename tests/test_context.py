"""Known audio in sampling (FoleyGenEx): the context pathway, the training-free path, reference and editing."""
import pytest
import torch

from kling_foley_core.generation import FoleyConditions, SamplerSettings, context_path, generate_latents
from kling_foley_core.models.mmdit_presets import build_mmdit
from kling_foley_core.sampling import SAMPLERS, sample
from kling_foley_core.sampling.context import AudioContext, ContextError, ContextVelocity

DUR = 2.0


def _models():
    torch.manual_seed(0)
    plain = build_mmdit("tiny").eval()
    with torch.no_grad():
        for p in plain.parameters():  # adaLN-zero / zero output: give the tiny model a signal
            if float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.05)
    ctx_model = build_mmdit("tiny", context_input=True).eval()
    missing, unexpected = ctx_model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("context_embed.") for k in missing)
    return plain, ctx_model


def _cond(model, seed=1, context=None, duration=DUR):
    g = torch.Generator().manual_seed(seed)
    lens = model.sequence_lengths(duration)
    c = model.config
    return FoleyConditions(duration=duration, clip_f=torch.randn(1, lens.clip, c.clip_dim, generator=g),
                           sync_f=torch.randn(1, lens.sync, c.sync_dim, generator=g),
                           text_f=torch.randn(1, 4, c.text_dim, generator=g), context=context)


def _context(model, mode="continue", seconds=1.0, window=None, seed=2):
    rate = model.latent_rate
    n = int(round(seconds * rate))
    lat = torch.randn(1, model.config.latent_dim, n, generator=torch.Generator().manual_seed(seed))
    known = torch.ones(1, n, dtype=torch.bool)
    if window is not None:
        known[:, int(window[0] * rate):int(window[1] * rate)] = False
    return AudioContext(lat, known, rate, mode=mode, window=window)


def test_zero_initialised_pathway_computes_what_the_plain_model_does():
    plain, ctx_model = _models()
    cond = _cond(plain)
    a = generate_latents(plain, cond, SamplerSettings(steps=3), seed=5)
    b = generate_latents(ctx_model, cond, SamplerSettings(steps=3), seed=5)
    assert torch.equal(a, b)
    # with a context, the zero-initialised branch adds nothing to the network's input either
    n = plain.sequence_lengths(DUR).latent
    known = torch.zeros(1, n, dtype=torch.bool)
    known[:, : n // 2] = True
    pc = ctx_model.prepare_conditions(cond.clip_f, cond.sync_f, cond.text_f, duration=DUR,
                                      context=torch.randn(1, n, 8), context_known=known)
    assert pc.context_emb is not None and float(pc.context_emb.detach().abs().max()) == 0.0


def _summary_model(**options):
    """A pathway model with the summary (and ``options``) on the plain model's weights, checked to sample exactly as
    the plain model does; with a batch of two whose second item knows nothing, a context for it and
    ``prepared(context)``, its conditions."""
    plain, _ = _models()
    model = build_mmdit("tiny", context_input=True, context_global=True, **options).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("context_embed.") for k in missing)
    cond = _cond(plain)
    a = generate_latents(plain, cond, SamplerSettings(steps=3), seed=5)
    assert torch.equal(a, generate_latents(model, cond, SamplerSettings(steps=3), seed=5))
    n = plain.sequence_lengths(DUR).latent
    known = torch.zeros(2, n, dtype=torch.bool)
    known[0, : n // 4] = True  # item 1 knows nothing
    g = torch.Generator().manual_seed(7)
    ctx = torch.randn(2, n, 8, generator=g)

    @torch.no_grad()
    def prepared(context):
        return model.prepare_conditions(cond.clip_f.expand(2, -1, -1), cond.sync_f.expand(2, -1, -1),
                                        cond.text_f.expand(2, -1, -1), duration=DUR, context=context,
                                        context_known=known)

    return model, prepared, ctx, n, g


def test_context_summary_starts_as_a_no_op_and_then_reaches_every_frame():
    model, prepared, ctx, n, g = _summary_model()
    assert float(prepared(ctx).context_global.abs().max()) == 0.0  # zero-initialised
    with torch.no_grad():
        for p in (model.context_embed.summary_out.weight, model.context_embed.summary_score.weight):
            p.normal_(0, 0.1)
    pc, other = prepared(ctx), prepared(torch.randn(2, n, 8, generator=g))
    assert float(pc.context_global[1].abs().max()) == 0.0  # no known frame: no summary
    assert not torch.allclose(pc.context_global[0], other.context_global[0])
    # the summary moves frames the known span does not touch, through every block's conditioning
    x = torch.randn(2, n, 8, generator=g)
    far = slice(3 * n // 4, n)
    with torch.no_grad():
        assert not torch.allclose(model.predict_flow(x, 0.5, pc)[0, far], model.predict_flow(x, 0.5, other)[0, far])
    empty = model.get_empty_conditions(2, like=pc)
    assert torch.equal(empty.context_global, pc.context_global)  # like the known frames, not a guided condition
    assert torch.equal(pc.batch_cat(empty).context_global, torch.cat([pc.context_global] * 2))


def test_context_summary_needs_the_context_pathway():
    with pytest.raises(ValueError, match="context_global=True needs context_input=True"):
        build_mmdit("tiny", context_global=True)
    with pytest.raises(ValueError, match="context_semantic=True needs context_global=True"):
        build_mmdit("tiny", context_input=True, context_semantic=True)


def test_context_semantic_share_starts_as_a_no_op_and_then_moves_the_semantic_stream():
    """context_semantic: the summary's second output is added to every semantic-video token; zero at first, and it
    rides with the known audio into CFG's unconditional branch, as the summary does."""
    model, prepared, ctx, n, g = _summary_model(context_semantic=True)

    def flow():
        c = prepared(ctx)
        with torch.no_grad():
            return c, model.predict_flow(x, 0.5, c)

    x = torch.randn(2, n, 8, generator=g)
    pc, before = flow()
    assert float(pc.context_semantic.abs().max()) == 0.0
    with torch.no_grad():
        for p in (model.context_embed.semantic_out.weight, model.context_embed.summary_score.weight):
            p.normal_(0, 0.1)
    pc, after = flow()
    assert float(pc.context_semantic[1].abs().max()) == 0.0  # no known frame: no share
    assert float(pc.context_global.abs().max()) == 0.0  # the adaLN summary is another output, still zero
    far = slice(3 * n // 4, n)
    assert not torch.allclose(before[0, far], after[0, far])  # through the semantic stream's attention
    assert torch.equal(before[1], after[1])
    empty = model.get_empty_conditions(2, like=pc)
    assert torch.equal(empty.context_semantic, pc.context_semantic)
    assert torch.equal(pc.batch_cat(empty).context_semantic, torch.cat([pc.context_semantic] * 2))


@pytest.mark.parametrize("which", ["training-free", "pathway"])
@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"adaptive"}))
def test_known_frames_are_kept_by_every_sampler(which, sampler):
    plain, ctx_model = _models()
    model = plain if which == "training-free" else ctx_model
    if which == "pathway":
        with torch.no_grad():
            model.context_embed.out.weight.normal_(0, 0.05)  # a trained branch is not zero
    assert context_path(model) == which
    ctx = _context(model, seconds=1.0)
    out = generate_latents(model, _cond(model, context=ctx), SamplerSettings(sampler=sampler, steps=4), seed=3)
    k = ctx.frames
    assert out.shape[-1] == model.sequence_lengths(DUR).latent
    torch.testing.assert_close(out[..., :k], ctx.latents, atol=1e-5, rtol=1e-5)
    free = generate_latents(model, _cond(model), SamplerSettings(sampler=sampler, steps=4), seed=3)
    assert not torch.allclose(out[..., k:], free[..., k:])  # the context changes what follows


def test_adaptive_sampler_follows_the_known_line():
    """The adaptive solver on a toy flow (a random tiny network is too stiff for a fast test)."""
    g = torch.Generator().manual_seed(0)
    c, z, target = (torch.randn(1, 6, 3, generator=g) for _ in range(3))
    known = torch.zeros(1, 6, 1, dtype=torch.bool)
    known[:, :2] = True
    vel = ContextVelocity(lambda x, t: target - x, c, z, known)
    out = sample("adaptive", vel, vel.start(torch.randn(1, 6, 3, generator=g)), torch.linspace(0, 1, 5))
    torch.testing.assert_close(out[:, :2], c[:, :2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, 2:], c[:, 2:])


def test_pathway_masks_video_features_on_known_frames():
    _, model = _models()
    cond = _cond(model)
    n = model.sequence_lengths(DUR).latent
    all_known = model.prepare_conditions(cond.clip_f, cond.sync_f, cond.text_f, duration=DUR,
                                         context=torch.zeros(1, n, 8), context_known=torch.ones(1, n, dtype=torch.bool))
    empty = model.prepare_conditions(None, None, cond.text_f, duration=DUR, batch_size=1)
    torch.testing.assert_close(all_known.clip_f, empty.clip_f)
    torch.testing.assert_close(all_known.sync_f, empty.sync_f)


def test_reference_mode_returns_the_target_length_and_drops_the_reference():
    _, model = _models()
    ctx = _context(model, mode="reference", seconds=1.5)
    out = generate_latents(model, _cond(model, context=ctx), SamplerSettings(steps=3), seed=1)
    assert out.shape == (1, 8, model.sequence_lengths(DUR).latent)


def test_a_reference_is_cut_to_the_room_the_model_has_left():
    _, model = _models()
    max_d = model.config.max_duration
    ctx = _context(model, mode="reference", seconds=2.0)
    dur = max_d - 1.0  # one second of room: the reference is cut to it, the output keeps the target's length
    out = generate_latents(model, _cond(model, context=ctx, duration=dur), SamplerSettings(steps=2), seed=1)
    assert out.shape[-1] == model.sequence_lengths(dur).latent
    with pytest.raises(ContextError, match="cut the clip to at most"):
        generate_latents(model, _cond(model, context=ctx, duration=max_d - 0.3), SamplerSettings(steps=2))


def test_edit_keeps_everything_outside_the_window():
    plain, _ = _models()
    ctx = _context(plain, mode="edit", seconds=DUR, window=(0.5, 1.2))
    out = generate_latents(plain, _cond(plain, context=ctx), SamplerSettings(steps=4), seed=1)
    keep = ctx.known[0]
    n = ctx.frames
    torch.testing.assert_close(out[..., :n][..., keep], ctx.latents[..., keep], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[..., :n][..., ~keep], ctx.latents[..., ~keep])


def test_context_errors_are_clear():
    plain, _ = _models()
    long_ctx = _context(plain, seconds=3.0)
    with pytest.raises(ContextError, match="no longer than the target"):
        generate_latents(plain, _cond(plain, context=long_ctx), SamplerSettings(steps=2))
    with pytest.raises(ContextError, match="mode"):
        AudioContext(torch.zeros(1, 8, 4), torch.ones(1, 4), 31.25, mode="sideways")


def test_text_guidance_drops_only_the_prompt():
    """guidance='text': CFG's unconditional branch keeps video and sync, so with the empty prompt it is no guidance
    at all, and with a prompt it differs from guiding against every condition."""
    from kling_foley_core.generation import GenerationError

    plain, _ = _models()
    empty = FoleyConditions(**{**_cond(plain).__dict__, "text_f": plain.empty_string_feat[None].clone()})
    run = lambda cond, **kw: generate_latents(plain, cond, SamplerSettings(steps=3, **kw), seed=0)  # noqa: E731
    unguided = run(empty, cfg=1.0)
    assert torch.allclose(run(empty, cfg=4.5, guidance="text"), unguided, atol=1e-4)
    assert not torch.allclose(run(empty, cfg=4.5), unguided, atol=1e-2)  # "all" also pushes away from no video
    prompted = _cond(plain)
    assert not torch.allclose(run(prompted, cfg=4.5, guidance="text"), run(prompted, cfg=4.5), atol=1e-3)
    with pytest.raises(GenerationError, match="guidance='video'"):
        run(prompted, cfg=4.5, guidance="video")


def test_reference_guidance_scales_only_the_context_summary():
    """guidance='reference': CFG's unconditional branch is the conditional one without the context summary's shares,
    so with a zero summary it is no guidance at all, and with a trained one cfg scales the summary's effect. Without
    the summary or without known audio it is a one-line error before sampling."""
    from kling_foley_core.generation import GenerationError

    plain, ctx_model = _models()
    model = build_mmdit("tiny", context_input=True, context_global=True, context_semantic=True).eval()
    model.load_state_dict(ctx_model.state_dict(), strict=False)
    with torch.no_grad():
        model.context_embed.out.weight.normal_(0, 0.05)
    ctx = _context(model, mode="continue", seconds=0.6)
    cond = _cond(model, context=ctx)
    run = lambda m, **kw: generate_latents(m, cond, SamplerSettings(steps=3, **kw), seed=0)  # noqa: E731
    unguided = run(model, cfg=1.0)
    assert torch.allclose(run(model, cfg=4.5, guidance="reference"), unguided, atol=1e-5)  # zero summary
    with torch.no_grad():
        for p in (model.context_embed.summary_out.weight, model.context_embed.semantic_out.weight):
            p.normal_(0, 0.05)
    unguided = run(model, cfg=1.0)
    guided = run(model, cfg=4.5, guidance="reference")
    assert not torch.allclose(guided, unguided, atol=1e-3)
    assert not torch.allclose(guided, run(model, cfg=4.5), atol=1e-3)
    with pytest.raises(GenerationError, match="guidance='reference'"):
        run(ctx_model, cfg=4.5, guidance="reference")  # a pathway without the summary
    with pytest.raises(GenerationError, match="guidance='reference'"):
        generate_latents(model, _cond(model), SamplerSettings(steps=3, cfg=4.5, guidance="reference"))
