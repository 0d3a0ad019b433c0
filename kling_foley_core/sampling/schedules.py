"""Time grids for flow-matching samplers (t = 0 noise → t = 1 data, ascending)."""
from __future__ import annotations

import math
from typing import Callable

import torch

ScheduleFn = Callable[..., torch.Tensor]
SCHEDULES: dict[str, ScheduleFn] = {}


def register_schedule(name: str):
    def wrap(fn: ScheduleFn) -> ScheduleFn:
        SCHEDULES[name] = fn
        return fn

    return wrap


@register_schedule("uniform")
def uniform(steps: int, **_) -> torch.Tensor:
    """``linspace(0, 1, steps + 1)``: the papers' (and MMAudio's) Euler grid."""
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32)


@register_schedule("shifted")
def shifted(steps: int, shift: float = 3.0, **_) -> torch.Tensor:
    """SD3-style time shift: spend more steps near the noise end when ``shift > 1``.

    With noise level ``s = 1 - t`` on a uniform grid, ``s' = shift·s / (1 + (shift − 1)·s)`` and ``t = 1 − s'``.
    ``shift = 1`` gives the uniform grid.
    """
    s = 1.0 - uniform(steps)
    s = shift * s / (1.0 + (shift - 1.0) * s)
    return (1.0 - s).clamp(0.0, 1.0)


@register_schedule("cosine")
def cosine(steps: int, **_) -> torch.Tensor:
    """``t = (1 − cos(π·u)) / 2``: small steps at both ends of the trajectory."""
    u = uniform(steps).double()
    return ((1.0 - torch.cos(math.pi * u)) / 2.0).float()


def make_schedule(name: str = "uniform", steps: int = 25, shift: float = 1.0) -> torch.Tensor:
    """An ascending grid of ``steps + 1`` times from 0 (noise) to 1 (data)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule '{name}' is unknown; choose one of: {', '.join(sorted(SCHEDULES))}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive integer (the papers use 25)")
    if shift <= 0:
        raise ValueError(f"shift={shift!r} must be > 0 (1 = no shift)")
    return SCHEDULES[name](steps, shift=shift)
