"""Conditional flow matching (rectified flow) training objective, in the library's convention.

x_t = t·x1 + (1 − t)·x0 with x0 ~ N(0, I) noise and x1 data; the network regresses v = x1 − x0.
Training times follow a logit-normal distribution (Esser et al., 2024), as in Kling-Foley and MMAudio.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def logit_normal_t(batch: int, *, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """t = sigmoid(n), n ~ N(mean, std²): concentrates training on mid-trajectory times."""
    n = torch.randn(batch, generator=generator, device=device) * std + mean
    return torch.sigmoid(n)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·x1 + (1 − t)·x0, with t of shape [B] broadcast over the remaining dims."""
    t = t.reshape(-1, *([1] * (x1.ndim - 1)))
    return t * x1 + (1.0 - t) * x0


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    return x1 - x0


def data_estimate(xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The data a velocity points at, ``x̂1 = x_t + (1 − t)·v`` (t a scalar or one value per batch item)."""
    t = torch.as_tensor(t, device=xt.device, dtype=xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))
    return xt + (1.0 - t) * v


@dataclass
class FlowMatchingBatch:
    x0: torch.Tensor  # noise        (B, ...)
    x1: torch.Tensor  # data         (B, ...)
    t: torch.Tensor  # times         (B,)
    xt: torch.Tensor  # interpolant  (B, ...)
    target: torch.Tensor  # x1 − x0  (B, ...)


def make_batch(x1: torch.Tensor, *, generator: torch.Generator | None = None, t: torch.Tensor | None = None,
               mean: float = 0.0, std: float = 1.0) -> FlowMatchingBatch:
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    if t is None:
        t = logit_normal_t(x1.shape[0], mean=mean, std=std, generator=generator, device=x1.device).to(x1.dtype)
    return FlowMatchingBatch(x0=x0, x1=x1, t=t, xt=interpolate(x0, x1, t), target=target_velocity(x0, x1))


def flow_matching_loss(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x1: torch.Tensor, *,
                       generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
                       reduce: bool = True) -> torch.Tensor:
    """MSE between ``predict(x_t, t)`` and ``x1 − x0``; per-sample when ``reduce=False``.

    ``mask`` (B, N) marks valid sequence positions (variable-length batches): padded positions do not count.
    """
    batch = make_batch(x1, generator=generator)
    err = (predict(batch.xt, batch.t) - batch.target).pow(2)
    if mask is not None:
        m = mask.to(err.dtype).reshape(*mask.shape, *([1] * (err.ndim - mask.ndim)))
        per = (err * m).flatten(1).sum(1) / (m.expand_as(err).flatten(1).sum(1)).clamp_min(1.0)
    else:
        per = err.flatten(1).mean(1)
    return per.mean() if reduce else per


def context_masks(batch: int, frames: int, *, prob: float, span: tuple[float, float],
                  generator: torch.Generator | None = None, prefix: float = 0.0) -> torch.Tensor:
    """FoleyGenEx's random span masks: each item gets a context with probability ``prob``; then one contiguous
    span of ``span[0]``–``span[1]`` of its frames is generated and the rest is known. With probability ``prefix``
    the span runs to the end, so only a prefix is known (what Foley extension and a reference give at inference).
    Returns known (B, N) bool (all False for an item without context, which is then plain generation)."""
    u = torch.rand(batch, 3, generator=generator)
    if prefix > 0:  # drawn only when asked, so runs without it keep their random stream
        u[:, 2] = torch.where(torch.rand(batch, generator=generator) < prefix, torch.ones(()), u[:, 2])
    known = torch.zeros(batch, frames, dtype=torch.bool)
    pos = torch.arange(frames)
    for i in range(batch):
        if float(u[i, 0]) >= prob:
            continue
        length = min(frames, max(1, round((span[0] + float(u[i, 1]) * (span[1] - span[0])) * frames)))
        start = min(frames - length, int(float(u[i, 2]) * (frames - length + 1)))
        known[i] = (pos < start) | (pos >= start + length)
    return known


def masked_flow_matching_loss(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x1: torch.Tensor,
                              known: torch.Tensor, *, generator: torch.Generator | None = None,
                              teacher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                              ) -> torch.Tensor:
    """FoleyGenEx Eq. 3–4: the per-frame MSE summed over the generated frames of the batch and divided by their
    number. On known frames the path starts from noise + data (the context summed with the noise, as at
    inference; see ``sampling/context.py``), so ``x_t`` there carries the context at every t. ``teacher(x_t, t)``,
    if given, is the velocity to learn in place of the one-sample target ``x1 − x0`` (distillation)."""
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    t = logit_normal_t(x1.shape[0], generator=generator, device=x1.device).to(x1.dtype)
    k = known.to(x1.device, x1.dtype)[..., None]  # (B, N, 1)
    z = x0 + k * x1
    xt = interpolate(z, x1, t)
    target = x1 - z if teacher is None else teacher(xt, t)
    per_frame = (predict(xt, t) - target).pow(2).mean(-1)  # (B, N)
    generated = 1.0 - k[..., 0]
    return (per_frame * generated).sum() / generated.sum().clamp_min(1.0)
