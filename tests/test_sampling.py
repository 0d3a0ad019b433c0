import math

import pytest
import torch

from kling_foley_core.sampling import (SAMPLERS, CFGDenoiser, SamplingError, flow_matching_loss, logit_normal_t,
                                       make_batch, make_schedule, sample)

ALL = sorted(SAMPLERS)


def test_registry_has_the_required_samplers():
    assert {"euler", "heun", "midpoint", "rk4", "dpm_multistep", "adaptive"} <= set(SAMPLERS)


@pytest.mark.parametrize("name", ALL)
def test_sign_convention_constant_velocity_moves_noise_to_data(name):
    # v = x1 − x0 is constant along a straight path: every sampler must land exactly on x0 + v.
    x0 = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    c = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))
    out = sample(name, lambda x, t: c, x0, make_schedule("uniform", 7))
    torch.testing.assert_close(out, x0 + c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_gaussian_data_reaches_the_exact_transport_map(name):
    # Data N(mu, sigma^2) per dim: the exact marginal velocity is E[x1|xt] − E[x0|xt] and the ODE maps noise
    # x0 to mu + sigma·x0. Every sampler must follow it; fewer steps for the higher-order ones.
    mu, sigma = 1.5, 0.4

    def v(x, t):
        var = t * t * sigma**2 + (1 - t) ** 2
        e_x1 = mu + t * sigma**2 / var * (x - t * mu)
        e_x0 = (1 - t) / var * (x - t * mu)
        return e_x1 - e_x0

    x0 = torch.randn(2, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    steps = {"euler": 400, "dpm_multistep": 40}.get(name, 20)
    out = sample(name, v, x0, make_schedule("uniform", steps).double())
    torch.testing.assert_close(out, mu + sigma * x0, atol=5e-3, rtol=0)


def _linear_ode_error(name, steps, a=-1.3, **opts):
    x0 = torch.ones(1, 1, dtype=torch.float64)
    out = sample(name, lambda x, t: a * x, x0, torch.linspace(0, 1, steps + 1, dtype=torch.float64), **opts)
    return abs(float(out) - math.exp(a))


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)])
def test_convergence_order_on_a_linear_ode(name, order):
    ratio = _linear_ode_error(name, 8) / _linear_ode_error(name, 16)
    assert 2 ** order * 0.7 < ratio < 2 ** order * 1.4


def test_adaptive_meets_its_tolerance():
    assert _linear_ode_error("adaptive", 1, rtol=1e-4, atol=1e-4) < 1e-3
    assert _linear_ode_error("adaptive", 1, rtol=1e-8, atol=1e-8) < 1e-7


def test_euler_equals_the_reference_loop():
    # MMAudio's loop: steps = linspace(0, 1, N+1); x += (t_next − t)·fn(t, x)
    torch.manual_seed(0)
    w = torch.randn(3, 3)

    def fn(x, t):
        return torch.tanh(x @ w) * (1 + t)

    x0 = torch.randn(2, 3)
    ref = x0.clone()
    steps = torch.linspace(0, 1, 26)
    for i, t in enumerate(steps[:-1]):
        ref = ref + (steps[i + 1] - t) * fn(ref, t)
    assert torch.equal(sample("euler", fn, x0, make_schedule("uniform", 25)), ref)


def test_nan_raises_naming_the_step():
    def v(x, t):
        return x * float("nan") if float(t) > 0.5 else x

    with pytest.raises(SamplingError, match=r"step \d+/10"):
        sample("euler", v, torch.zeros(1, 2), make_schedule("uniform", 10))


def test_unknown_sampler_lists_available():
    with pytest.raises(ValueError, match="available samplers: .*euler"):
        sample("nope", lambda x, t: x, torch.zeros(1), make_schedule("uniform", 2))


def test_schedules():
    u = make_schedule("uniform", 4)
    assert torch.equal(u, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(make_schedule("shifted", 4, shift=1.0), u)
    s = make_schedule("shifted", 10, shift=3.0)
    assert s[0] == 0 and s[-1] == 1 and bool((s[1:] > s[:-1]).all())
    assert s[1] < u[1] * 0.5  # shift > 1 takes smaller steps near the noise end (t = 0)
    with pytest.raises(ValueError, match="steps=0"):
        make_schedule("uniform", 0)
    with pytest.raises(ValueError, match="schedule 'x' is unknown"):
        make_schedule("x", 3)


def test_callback_reports_every_step():
    seen = []
    sample("heun", lambda x, t: torch.ones_like(x), torch.zeros(1, 2), make_schedule("uniform", 5),
           callback=lambda d: seen.append((d["step"], d["total"])))
    assert seen == [(i, 5) for i in range(1, 6)]


class _Cond:
    def __init__(self, c):
        self.c = c

    def batch_cat(self, other):
        return _Cond(torch.cat([self.c, other.c], 0))


class _Model:
    def __init__(self):
        self.calls = []

    def predict_flow(self, x, t, cond):
        self.calls.append(x.shape[0])
        return x * cond.c + t[:, None]


def test_cfg_formula_batched_and_sequential():
    x = torch.randn(3, 4)
    cond, uncond = _Cond(torch.randn(3, 4)), _Cond(torch.randn(3, 4))
    t = torch.tensor(0.3)
    m = _Model()
    batched = CFGDenoiser(m, cond, uncond, 4.5)(x, t)
    assert m.calls == [6]
    seq = CFGDenoiser(m, cond, uncond, 4.5, batched=False)(x, t)
    expected = 4.5 * (x * cond.c + 0.3) + (1 - 4.5) * (x * uncond.c + 0.3)
    torch.testing.assert_close(batched, expected)
    torch.testing.assert_close(seq, expected)


def test_cfg_below_one_is_skipped():
    m = _Model()
    x = torch.randn(2, 4)
    cond = _Cond(torch.randn(2, 4))
    out = CFGDenoiser(m, cond, _Cond(torch.randn(2, 4)), 0.5)(x, torch.tensor(0.1))
    assert m.calls == [2]
    torch.testing.assert_close(out, x * cond.c + 0.1)


def test_flow_matching_objective():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, 6, 2, generator=g)
    b = make_batch(x1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b.xt, b.t[:, None, None] * x1 + (1 - b.t[:, None, None]) * b.x0)
    torch.testing.assert_close(b.target, x1 - b.x0)
    # an oracle that knows x0 has zero loss; the same seed gives the same batch
    oracle = lambda xt, t: b.target  # noqa: E731
    assert float(flow_matching_loss(oracle, x1, generator=torch.Generator().manual_seed(1))) == 0.0
    assert float(flow_matching_loss(lambda xt, t: torch.zeros_like(xt), x1, generator=g)) > 0.1
    t = logit_normal_t(10000, generator=torch.Generator().manual_seed(2))
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.median()) - 0.5) < 0.02


def test_guidance_rescale_pulls_the_guided_spread_to_the_conditional_one():
    from kling_foley_core.sampling.guidance import CFGDenoiser

    class Toy:  # cond and uncond velocities of different spread
        def predict_flow(self, x, t, c):
            return x * c

    x = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(0))
    plain = CFGDenoiser(Toy(), 1.0, 0.2, 4.5, batched=False)(x, torch.tensor(0.3))
    full = CFGDenoiser(Toy(), 1.0, 0.2, 4.5, batched=False, rescale=1.0)(x, torch.tensor(0.3))
    half = CFGDenoiser(Toy(), 1.0, 0.2, 4.5, batched=False, rescale=0.5)(x, torch.tensor(0.3))
    assert torch.allclose(plain, 3.8 * x)  # 4.5·1 + (1 − 4.5)·0.2
    assert torch.allclose(full.std(dim=(1, 2)), x.std(dim=(1, 2)), rtol=1e-5)  # the conditional spread, per sample
    assert torch.allclose(half, 0.5 * (full + plain))
    with pytest.raises(ValueError, match="guidance_rescale"):
        CFGDenoiser(Toy(), 1.0, 0.2, 4.5, batched=False, rescale=1.5)


def test_apg_keeps_eta_of_the_push_along_the_data_estimate():
    from kling_foley_core.sampling.guidance import CFGDenoiser

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 3, generator=g)
    v_c, v_u = torch.randn(2, 8, 3, generator=g), torch.randn(2, 8, 3, generator=g)

    class Toy:  # fixed velocities: c is 1 for the conditional branch, 0 for the unconditional one
        def predict_flow(self, x_in, t, c):
            return v_c if c == 1 else v_u

    t = torch.tensor(0.4)
    run = lambda eta: CFGDenoiser(Toy(), 1, 0, 4.5, batched=False, apg_eta=eta)(x, t)  # noqa: E731
    plain = CFGDenoiser(Toy(), 1, 0, 4.5, batched=False)(x, t)
    torch.testing.assert_close(plain, 4.5 * v_c - 3.5 * v_u)
    torch.testing.assert_close(run(1.0), plain)  # η = 1 is plain CFG
    x1 = x + 0.6 * v_c  # the conditional data estimate x + (1 − t)·v(cond)
    push = (run(0.0) - v_c) / 3.5  # what guidance adds, per unit of (cfg − 1)
    along = (push * x1).sum(dim=(1, 2))
    assert torch.allclose(along, torch.zeros(2), atol=1e-5)  # nothing left along x̂₁: the level is not pushed
    torch.testing.assert_close(push + ((v_c - v_u) * x1).sum(dim=(1, 2), keepdim=True)
                               / (x1 * x1).sum(dim=(1, 2), keepdim=True) * x1, v_c - v_u)  # only that part removed
    torch.testing.assert_close(run(0.5), 0.5 * (run(0.0) + plain))  # η blends linearly
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="apg_eta"):
            CFGDenoiser(Toy(), 1, 0, 4.5, batched=False, apg_eta=bad)
