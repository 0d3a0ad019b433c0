"""The timing-only reading of the sync stream (TC-VTA): labels, fit, what the tokens can carry, and the MM-DiT's use."""
import torch

from kling_foley_core.models.mmdit import KlingFoleyMMDiT
from kling_foley_core.models.timing_sync import TimingSync, fit_timing_head, token_timing

TINY = dict(latent_dim=8, clip_dim=16, sync_dim=12, text_dim=16, hidden_dim=32, depth=2, fused_depth=1,
            num_heads=2, text_seq_len=6, sample_rate=16000, mel_hop=256, max_duration=4.0, default_duration=2.0)


def test_token_timing_marks_the_span_and_the_place_of_the_first_hit():
    # token j of window w spans frames 8w + 2j, 8w + 2j + 1 (80 ms); 0.50 s falls in token 6 (0.48-0.56 s)
    hit, place = token_timing([{"time": 0.50}, {"time": 0.52}], n_windows=1)
    assert hit.tolist() == [0, 0, 0, 0, 0, 0, 1, 0]
    assert abs(float(place[6]) - 0.25) < 1e-5  # the first hit of the span sets the place
    assert float(place[0]) == 0.5  # no hit: the neutral place


def _clips(n=40, dim=12, gen=None):
    """Tokens whose dim 0 says contact and dims 1-4 say the class (a large, clip-wide shift)."""
    feats, hits, places = [], [], []
    for i in range(n):
        h = (torch.rand(24, generator=gen) < 0.2).float()
        x = torch.randn(24, dim, generator=gen) * 0.3
        x[:, 0] += 3 * h
        x[:, 1 + i % 4] += 5.0
        feats.append(x)
        hits.append(h)
        places.append(torch.rand(24, generator=gen))
    return feats, hits, places


def test_the_fit_finds_contacts_and_the_tokens_carry_nothing_else():
    gen = torch.Generator().manual_seed(0)
    m = TimingSync(12)
    report = fit_timing_head(m, *_clips(gen=gen), steps=300)
    assert report["balanced_accuracy"] > 0.9
    x = _clips(8, gen=gen)[0][0][None]  # (1, 24, 12)
    with torch.no_grad():
        out = m(x) - m.rest
        basis = torch.stack([m.contact, m.late], 1)  # (12, 2)
    # every token is rest + a·contact + b·late: the class dims can only reach it through the two read-outs
    resid = out[0] - out[0] @ basis @ torch.linalg.pinv(basis)
    assert float(resid.abs().max()) < 1e-4 * float(out.abs().max() + 1)
    # the head gets no gradient from what reads the tokens; the vectors do
    m(x).sum().backward()
    assert all(p.grad is None for p in m.head.parameters())
    assert m.contact.grad is not None and float(m.rest.grad.abs().sum()) > 0


def test_mmdit_reads_timing_only_for_items_without_semantics():
    torch.manual_seed(0)
    model = KlingFoleyMMDiT(**TINY, timing_sync=True).eval()
    fit_timing_head(model.sync_timing, *_clips(dim=12), steps=50)
    plain = KlingFoleyMMDiT(**TINY).eval()
    assert not any(k.startswith("sync_timing") for k in plain.state_dict())  # older checkpoints load unchanged
    clip, sync, text = torch.randn(2, 16, 16), torch.randn(2, 16, 12), torch.randn(2, 6, 16)
    mixed = model.prepare_conditions(clip, sync, text, duration=2.0, has_clip=torch.tensor([True, False]))
    full = model.prepare_conditions(clip, sync, text, duration=2.0)
    with torch.no_grad():
        direct = model.prepare_conditions(None, sync, text, duration=2.0)  # TC-VTA: no semantic features at all
    assert torch.allclose(mixed.sync_f[0], full.sync_f[0], atol=1e-6)
    assert not torch.allclose(mixed.sync_f[1], full.sync_f[1], atol=1e-4)
    with torch.no_grad():
        # the item without semantics is read as timing only, as when it is given alone
        timing_only = model.prepare_conditions(clip, model.sync_timing(sync), text, duration=2.0)
    assert torch.allclose(mixed.sync_f[1], timing_only.sync_f[1], atol=1e-5)
    assert torch.allclose(direct.sync_f, timing_only.sync_f, atol=1e-5)
