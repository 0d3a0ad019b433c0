"""AC-VTA training examples: conditioned exactly as the reference mode is at inference, drawn from the right clips."""
import numpy as np
import torch

from kling_foley_core.generation import FoleyConditions, prepare_flow
from kling_foley_core.models.mmdit_presets import build_mmdit
from kling_foley_core.reference import SYNC_STRIDE_S, reference_conditions
from kling_foley_core.sampling.context import AudioContext
from kling_foley_core.training.reference_examples import (check_looks, look_classes, pick_frames,
                                                          reference_batch, reference_clips, reference_example,
                                                          reference_frames)


def _model():
    torch.manual_seed(0)
    model = build_mmdit("tiny", context_input=True).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised outputs would hide a difference
            if float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.05)
    return model


def test_training_examples_are_conditioned_as_the_reference_mode_at_inference():
    model = _model()
    c, g = model.config, torch.Generator().manual_seed(1)
    duration, strides = 2.0, 4
    lens = model.sequence_lengths(duration)
    n_ref = reference_frames(strides, model.latent_rate)
    ref = torch.randn(1, c.latent_dim, n_ref, generator=g)  # VAE space, as the VAE Encode node gives it
    ctx = AudioContext(ref, torch.ones(1, n_ref, dtype=torch.bool), model.latent_rate, mode="reference")
    cond = FoleyConditions(duration=duration, clip_f=torch.randn(1, lens.clip, c.clip_dim, generator=g),
                           sync_f=torch.randn(1, lens.sync, c.sync_dim, generator=g),
                           text_f=torch.randn(1, 4, c.text_dim, generator=g), context=ctx)
    joined, dropped = reference_conditions(model, cond, ctx)
    assert dropped == n_ref
    flow = prepare_flow(model, joined, joined.duration, guided=False,
                        placed=joined.context.placed(joined.latent_frames, 1))
    x1 = torch.randn(1, lens.latent, c.latent_dim, generator=g)  # the clip's own (normalised) latents
    with torch.no_grad():
        tcond, x, known = reference_example(model, model.normalize(ref.transpose(1, 2)), x1, cond.sync_f, duration,
                                            strides)
        assert x.shape[1] == joined.latent_frames and int(known.sum()) == n_ref and bool(known[0, :n_ref].all())
        xt, t = torch.randn(x.shape, generator=g), torch.tensor([0.35])
        want, got = model.predict_flow(xt, t, flow.cond), model.predict_flow(xt, t, tcond)
        assert torch.allclose(want, got, atol=1e-5), float((want - got).abs().max())
        # the semantic features and the text are not seen: other ones give the same training conditions
        other = replace_feats(cond, g)
        tcond2, _, _ = reference_example(model, model.normalize(ref.transpose(1, 2)), x1, other.sync_f, duration,
                                         strides)
        assert not torch.allclose(model.predict_flow(xt, t, tcond2), got)  # the sync stream is seen
        dropped_sync, _, _ = reference_example(model, model.normalize(ref.transpose(1, 2)), x1, cond.sync_f,
                                               duration, strides, torch.tensor([True]))
        uncond = model.get_empty_conditions(1, like=flow.cond)  # what CFG's unconditional branch sees
        assert torch.allclose(model.predict_flow(xt, t, uncond), model.predict_flow(xt, t, dropped_sync), atol=1e-5)
    assert abs(joined.duration - (duration + strides * SYNC_STRIDE_S)) < 1e-9


def replace_feats(cond, g):
    from dataclasses import replace

    return replace(cond, sync_f=torch.randn(cond.sync_f.shape, generator=g))


def test_reference_examples_are_swapped_clips_of_one_class_in_batches_of_near_durations():
    ev = lambda *cls: [{"time": 0.5 + i, "sound_class": k} for i, k in enumerate(cls)]  # noqa: E731
    clips = [{"sound_swapped": True, "events": ev("bell")}, {"sound_swapped": False, "events": ev("bell")},
             {"sound_swapped": True, "events": ev("bell", "drum")}, {"sound_swapped": True, "events": []},
             {"sound_swapped": True, "events": ev("drum", "drum")}, {"events": ev("drum")}]
    assert reference_clips(clips).tolist() == [0, 4]
    durations = np.array([5.0, 2.0, 9.0, 3.0, 4.0, 8.0, 2.5, 7.0])
    pool = np.array([0, 2, 3, 5, 6, 7])
    seen = set()
    for s in range(20):
        idx = reference_batch(durations, pool, 3, torch.Generator().manual_seed(s))
        assert len(set(idx.tolist())) == 3 and set(idx.tolist()) <= set(pool.tolist())
        d = np.sort(durations[pool])
        lo = np.searchsorted(d, durations[idx].min())
        assert sorted(durations[idx].tolist()) == d[lo:lo + 3].tolist()  # neighbours in duration
        seen.add(tuple(sorted(idx.tolist())))
    assert len(seen) > 1


def test_reference_sets_are_kept_out_of_the_ordinary_batches():
    from kling_foley_core.training.train_foley import reference_only

    class Set:
        members = [[0] * 3, [0] * 2, [0] * 4]

        def __len__(self):
            return 9
    assert reference_only(Set(), 0).tolist() == [False] * 9
    assert reference_only(Set(), 1).tolist() == [False] * 5 + [True] * 4
    assert reference_only(Set(), 2).tolist() == [False] * 3 + [True] * 6
    one = [0] * 4  # a single cache has no members: it is its own only set
    assert reference_only(one, 0).tolist() == [False] * 4


def test_masked_loss_learns_a_teachers_velocity_on_the_generated_frames_only():
    """--reference-teacher: the teacher's velocity replaces the one-sample target; known frames never count."""
    from kling_foley_core.sampling.flow_matching import masked_flow_matching_loss

    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 10, 3, generator=g)
    known = torch.zeros(2, 10, dtype=torch.bool)
    known[:, :4] = True
    teacher = lambda xt, t: xt * 0.5 + t[:, None, None]  # noqa: E731
    student = lambda xt, t: xt * 0.5 + t[:, None, None] + known[..., None] * 7.0  # off on known frames only  # noqa
    assert float(masked_flow_matching_loss(student, x1, known, generator=g, teacher=teacher)) == 0.0
    off = lambda xt, t: teacher(xt, t) + 0.1  # noqa: E731
    loss = masked_flow_matching_loss(off, x1, known, generator=torch.Generator().manual_seed(1), teacher=teacher)
    assert abs(float(loss) - 0.01) < 1e-6
    plain = masked_flow_matching_loss(off, x1, known, generator=torch.Generator().manual_seed(1))
    assert abs(float(plain) - 0.01) > 1e-3  # without the teacher the target is the sample's


def test_pick_frames_takes_each_examples_frames_from_the_set_it_is_flagged_for():
    """--reference-contrast swaps frames per example: the teacher's (AC-VTA) or the student's (TC-VTA)."""
    flags = torch.tensor([True, False, False, True])
    a = (torch.ones(4, 2, 3, 4, 4), torch.ones(4, 5, 3, 4, 4))
    z = (torch.zeros(4, 2, 3, 4, 4), torch.zeros(4, 5, 3, 4, 4))
    for f, ref in zip(pick_frames(flags, a, z), a):
        assert f.shape == ref.shape and torch.equal(f.flatten(1).mean(1).bool(), flags)
    assert all(torch.equal(f, o) for f, o in zip(pick_frames(torch.zeros(4, dtype=torch.bool), a, z), z))


def test_look_classes_are_read_from_the_cache_or_ask_for_a_rebuild():
    import pytest

    from kling_foley_core.training.common import TrainingError
    from kling_foley_core.training.dataset import look_class

    assert look_class({"shape": "triangle"}) == "bell" and look_class({"shape": None}) is None
    clips = [{"clip_id": "a", "objects": [{"look_class": "bell"}]},
             {"clip_id": "b", "objects": [{"look_class": "drum"}, {"look_class": "drum"}]},
             {"clip_id": "c", "objects": [{"sound_class": "drum"}]},
             {"clip_id": "d", "objects": [{"look_class": "drum"}, {"look_class": "bell"}]}]
    assert look_classes(clips, np.array([0, 1, 2, 3])) == {0: "bell", 1: "drum"}
    check_looks(clips, [0, 1], look_classes(clips, np.array([0, 1, 2, 3])), "--opt")
    for bad in (2, 3):
        with pytest.raises(TrainingError, match=f"--opt: 1 AC-VTA clips .* {'cd'[bad - 2]} .* rebuild its feature"):
            check_looks(clips, [0, bad], look_classes(clips, np.arange(4)), "--opt")
