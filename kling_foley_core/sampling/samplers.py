"""Flow-matching ODE samplers, k-diffusion style: one signature, a name → function registry.

Every sampler is ``fn(velocity_fn, x, timesteps, *, callback=None, generator=None, **opts) -> x``:
``velocity_fn(x, t)`` returns ``v = data − noise`` at time ``t`` (a 0-dim tensor; t = 0 noise, t = 1 data),
``timesteps`` is an ascending 1-D grid from :func:`make_schedule`, ``x`` starts as noise at ``timesteps[0]``.
Samplers never do guidance or parameterisation: the velocity function (e.g. :class:`CFGDenoiser`) owns that.
Adding a sampler is one decorated function.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .flow_matching import data_estimate

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[dict], None]]
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {}


class SamplingError(RuntimeError):
    """The ODE produced NaN/Inf or was misconfigured."""


def register_sampler(name: str):
    def wrap(fn):
        SAMPLERS[name] = fn
        return fn

    return wrap


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"sampler '{name}' is unknown; available samplers: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def sample(name: str, velocity_fn: VelocityFn, x: torch.Tensor, timesteps: torch.Tensor, *,
           callback: Callback = None, generator: torch.Generator | None = None, **opts) -> torch.Tensor:
    """Integrate ``x`` from ``timesteps[0]`` to ``timesteps[-1]`` with the sampler called ``name``."""
    fn = get_sampler(name)
    if timesteps.ndim != 1 or timesteps.numel() < 2:
        raise ValueError(f"timesteps must be a 1-D grid of at least 2 times, got shape {tuple(timesteps.shape)}")
    if bool((timesteps[1:] <= timesteps[:-1]).any()):
        raise ValueError("timesteps must be strictly ascending (t = 0 noise → t = 1 data)")
    return fn(velocity_fn, x, timesteps.to(x.device), callback=callback, generator=generator, **opts)


class _Stepper:
    """Evaluates the velocity with a finiteness check and reports progress; shared by all samplers."""

    def __init__(self, name: str, velocity_fn: VelocityFn, total: int, callback: Callback):
        self.name, self.velocity_fn, self.total, self.callback = name, velocity_fn, total, callback
        self.step = 0
        self.evaluations = 0

    def v(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.velocity_fn(x, t)
        self.evaluations += 1
        if not torch.isfinite(out).all():
            raise SamplingError(f"sampler '{self.name}': velocity has NaN/Inf at step {self.step + 1}/{self.total} "
                                f"(t={float(t):.4f}); try fp32, a lower cfg or fewer/other steps")
        return out

    def done(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> None:
        self.step += 1
        if self.callback is not None:
            # x1 estimate from the velocity at the last evaluated point
            self.callback({"step": self.step, "total": self.total, "t": float(t), "x": x,
                           "denoised": data_estimate(x, t, v)})


@register_sampler("euler")
def sample_euler(velocity_fn, x, timesteps, *, callback=None, generator=None):
    """First order; the papers' default (25 steps): ``x ← x + Δt·v(x, t)``."""
    st = _Stepper("euler", velocity_fn, len(timesteps) - 1, callback)
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        v = st.v(x, t)
        x = x + (t_next - t) * v
        st.done(x, t, v)
    return x


@register_sampler("heun")
def sample_heun(velocity_fn, x, timesteps, *, callback=None, generator=None):
    """Second order trapezoid (two evaluations per step)."""
    st = _Stepper("heun", velocity_fn, len(timesteps) - 1, callback)
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        dt = t_next - t
        v1 = st.v(x, t)
        v2 = st.v(x + dt * v1, t_next)
        x = x + dt * (v1 + v2) / 2
        st.done(x, t_next, v2)
    return x


@register_sampler("midpoint")
def sample_midpoint(velocity_fn, x, timesteps, *, callback=None, generator=None):
    """Second order explicit midpoint."""
    st = _Stepper("midpoint", velocity_fn, len(timesteps) - 1, callback)
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        dt = t_next - t
        v1 = st.v(x, t)
        v_mid = st.v(x + dt / 2 * v1, t + dt / 2)
        x = x + dt * v_mid
        st.done(x, t + dt / 2, v_mid)
    return x


@register_sampler("rk4")
def sample_rk4(velocity_fn, x, timesteps, *, callback=None, generator=None):
    """Classic fourth-order Runge–Kutta (four evaluations per step)."""
    st = _Stepper("rk4", velocity_fn, len(timesteps) - 1, callback)
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        dt = t_next - t
        k1 = st.v(x, t)
        k2 = st.v(x + dt / 2 * k1, t + dt / 2)
        k3 = st.v(x + dt / 2 * k2, t + dt / 2)
        k4 = st.v(x + dt * k3, t_next)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        st.done(x, t_next, k4)
    return x


@register_sampler("dpm_multistep")
def sample_dpm_multistep(velocity_fn, x, timesteps, *, callback=None, generator=None):
    """DPM-Solver++(2M)-style multistep: one evaluation per step, second order from the previous step.

    For the linear path x_t = t·x1 + (1 − t)·x0 the data prediction is ``x1 = x + (1 − t)·v`` and the noise
    prediction ``x0 = x − t·v``. Written in the noise level s = 1 − t with α = t, the exact solution of the
    data-prediction ODE is ``x' = (s'/s)·x + (1 − s'/s)·x1`` (first order, DDIM-like). The second-order step
    extrapolates x1 linearly in λ = log(α/s) from the previous step (Lu et al., 2022, Alg. 2).
    """
    st = _Stepper("dpm_multistep", velocity_fn, len(timesteps) - 1, callback)
    prev_x1, prev_lam = None, None
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        v = st.v(x, t)
        s, s_next = 1.0 - t, 1.0 - t_next
        x1 = x + s * v
        if float(s) <= 0.0:  # already at data (t = 1): nothing left to integrate
            x = x1
        elif float(t) <= 0.0 or float(s_next) <= 0.0:
            # λ is infinite at either end of the path: take the exact first-order (Euler in x1) step there.
            x = x + (t_next - t) * v
        else:
            lam, lam_next = torch.log(t / s), torch.log(t_next / s_next)
            h = lam_next - lam
            d = x1
            if prev_lam is not None:
                r = (lam - prev_lam) / h
                d = x1 + (x1 - prev_x1) / (2 * r)
            x = (s_next / s) * x - t_next * torch.expm1(-h) * d
            prev_lam = lam
        prev_x1 = x1
        st.done(x, t, v)
    return x


# Dormand–Prince 5(4) tableau.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


@register_sampler("adaptive")
def sample_adaptive(velocity_fn, x, timesteps, *, callback=None, generator=None,
                    rtol: float = 1e-4, atol: float = 1e-4, max_evaluations: int = 2000):
    """Adaptive Dormand–Prince 5(4) with error control (what MMAudio's ``adaptive`` mode does via dopri5).

    Only the ends of ``timesteps`` matter; the solver picks its own steps, and every grid time in between is
    hit exactly (used as a checkpoint for the callback).
    """
    st = _Stepper("adaptive", velocity_fn, len(timesteps) - 1, callback)
    for t_start, t_end in zip(timesteps[:-1], timesteps[1:]):
        t, h = t_start.clone(), (t_end - t_start)
        k1 = st.v(x, t)
        while float(t_end - t) > 1e-9:
            h = torch.minimum(h, t_end - t)
            ks = [k1]
            for stage in range(1, 7):
                xi = x + h * sum(a * k for a, k in zip(_DP_A[stage], ks))
                ks.append(st.v(xi, t + _DP_C[stage] * h))
            x5 = x + h * sum(b * k for b, k in zip(_DP_B5, ks))
            x4 = x + h * sum(b * k for b, k in zip(_DP_B4, ks))
            scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
            err = float(((x5 - x4) / scale).pow(2).mean().sqrt())
            if err <= 1.0:
                t, x, k1 = t + h, x5, ks[6]  # FSAL: the last stage is the next step's first
            factor = 0.9 * (1.0 / max(err, 1e-10)) ** 0.2
            h = h * min(5.0, max(0.2, factor))
            if st.evaluations > max_evaluations:
                raise SamplingError(f"sampler 'adaptive': no convergence within {max_evaluations} evaluations "
                                    f"(t={float(t):.4f}); raise rtol/atol or use a fixed-step sampler")
        st.done(x, t_end, k1)
    return x
