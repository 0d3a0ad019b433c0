"""Known audio during sampling: Foley extension, editing and reference audio on any sampler and any model.

An :class:`AudioContext` holds VAE-space latents of known audio and a mask of the frames that are known. During
sampling the known frames follow a fixed straight line from their starting point ``z`` to the known latent ``c``,
``x_t = (1 − t)·z + t·c``; :class:`ContextVelocity` wraps any velocity function so that the network sees that line
on the known frames and the sampler integrates exactly along it there (its velocity is the constant ``c − z``), while
the unknown frames are generated. Because only the velocity function changes, every sampler of the registry works
with a context, and the known frames end exactly at ``c``.

Two paths, chosen by the model (logs and the Sampler node say which ran):

* **pathway** (FoleyGenEx §3.1, models with ``context_input``): the known latents also enter the network through
  its context branch, and, as the paper does at inference, the context is summed with the initial noise on the
  known frames, ``z = ε + c``; training used the same line (``train_foley --context-prob``).
* **training-free** (MMAudio, HunyuanVideo-Foley and older checkpoints): the known frames of ``x_t`` are replaced
  at every step by the forward-noised known latent, ``z = ε`` (the "replacement" method of inpainting with
  diffusion models, e.g. RePaint, Lugmayr et al. 2022, here on the flow-matching line).

Editing starts the unknown frames from the *inverted* latent of the existing soundtrack instead of fresh noise
(:func:`invert`: the probability-flow ODE integrated backwards, DDIM inversion in flow-matching form, FoleyGenEx
§3.2 and its reference 31), so the regenerated window keeps the structure the new condition does not change.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)

__all__ = ["AudioContext", "ContextError", "ContextVelocity", "PlacedContext", "invert", "make_context", "CONTEXT_MODES"]

CONTEXT_MODES = ("continue", "edit", "reference")


class ContextError(ValueError):
    """An audio context that cannot be used (named, with the value and the fix)."""


@dataclass
class AudioContext:
    """Known audio for one generation, at the VAE's latent rate.

    ``latents`` (B|1, C, Nk) VAE-space latents covering ``[0, Nk / latent_rate)`` seconds of the generated span
    (or, in ``reference`` mode, the reference placed *before* it); ``known`` (B|1, Nk) bool marks the frames to
    keep. Frames of the span beyond Nk are generated. ``mode``: ``continue`` (Foley extension: known audio at the
    start of the span), ``edit`` (everything but a window is known; start from the inverted latent) or
    ``reference`` (AC-VTA: the reference is prepended and dropped from the output).
    """

    latents: torch.Tensor
    known: torch.Tensor
    latent_rate: float
    mode: str = "continue"
    window: tuple[float, float] | None = None  # edit: the regenerated seconds (for splicing and reports)
    offset: float = 0.0  # continue: seconds of the encoded audio before the context's first frame (left out)

    def __post_init__(self):
        if self.mode not in CONTEXT_MODES:
            raise ContextError(f"context mode={self.mode!r} must be one of {', '.join(CONTEXT_MODES)}")
        if self.latents.ndim != 3 or self.known.ndim != 2 or self.known.shape[-1] != self.latents.shape[-1]:
            raise ContextError(f"context latents must be (batch, channels, frames) with a (batch, frames) mask, got "
                               f"{tuple(self.latents.shape)} and {tuple(self.known.shape)}")
        self.known = self.known.to(torch.bool)

    @property
    def frames(self) -> int:
        return self.latents.shape[-1]

    @property
    def seconds(self) -> float:
        return self.frames / self.latent_rate

    @property
    def invert(self) -> bool:
        return self.mode == "edit"

    def placed(self, n_frames: int, batch: int) -> "PlacedContext":
        """The context laid on a span of ``n_frames`` latent frames: (B, C, N) latents and (B, N) mask."""
        if self.frames > n_frames:
            raise ContextError(f"the audio context is {self.seconds:.2f} s ({self.frames} latent frames) but the span "
                               f"to generate has {n_frames} frames; give a context no longer than the target")
        if self.latents.shape[0] not in (1, batch):
            raise ContextError(f"the audio context has batch {self.latents.shape[0]}; give 1 or {batch}")
        c, k = self.latents.shape[1], self.frames
        lat = self.latents.new_zeros(batch, c, n_frames)
        known = torch.zeros(batch, n_frames, dtype=torch.bool, device=self.latents.device)
        lat[..., :k] = self.latents
        known[:, :k] = self.known
        if not bool(known.any()):
            raise ContextError("the audio context marks no frame as known; give audio to keep (or drop the context)")
        return PlacedContext(lat, known)


@dataclass
class PlacedContext:
    latents: torch.Tensor  # (B, C, N) VAE space
    known: torch.Tensor  # (B, N) bool


def make_context(latents: torch.Tensor, latent_rate: float | None, mode: str, *, context_seconds: float = 0.0,
                 edit_start: float = 0.0, edit_end: float = 0.0) -> AudioContext:
    """An :class:`AudioContext` from encoded audio ``latents`` (B, C, N) at ``latent_rate`` frames/s.

    continue: the last ``context_seconds`` (0 = all) start the span; reference: the first ``context_seconds``
    (0 = all); edit: all but ``[edit_start, edit_end]`` seconds is known."""
    if mode not in CONTEXT_MODES:
        raise ContextError(f"mode={mode!r} must be one of {', '.join(CONTEXT_MODES)}")
    if not latent_rate or latents.ndim != 3:
        raise ContextError("latent must come from Kling-Foley VAE Encode (latents with their frame rate)")
    for name, v in (("context_seconds", context_seconds), ("edit_start", edit_start), ("edit_end", edit_end)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ContextError(f"{name}={v!r} must be a finite number of seconds >= 0")
    n = latents.shape[-1]
    seconds = n / latent_rate
    b = latents.shape[0]
    if mode == "edit":
        if not edit_start < edit_end:
            raise ContextError(f"edit window [{edit_start:g}, {edit_end:g}] s is empty: need edit_start < edit_end")
        if edit_end > seconds + 1.0 / latent_rate:
            raise ContextError(f"edit window ends at {edit_end:g} s, past the end of the audio ({seconds:.2f} s); "
                               f"give a window inside the clip")
        i0, i1 = int(math.floor(edit_start * latent_rate)), min(n, int(math.ceil(edit_end * latent_rate)))
        if i0 == 0 and i1 >= n:
            raise ContextError(f"edit window [{edit_start:g}, {edit_end:g}] s covers the whole {seconds:.2f} s audio; "
                               f"nothing would be kept (generate it without a context instead)")
        known = torch.ones(b, n, dtype=torch.bool)
        known[:, i0:i1] = False
        return AudioContext(latents, known, latent_rate, mode="edit", window=(float(edit_start), float(edit_end)))
    k = n if context_seconds == 0 else int(round(context_seconds * latent_rate))
    if k > n:
        raise ContextError(f"context_seconds={context_seconds:g} exceeds the audio's {seconds:.2f} s; give at most "
                           f"{seconds:.2f} (or 0 for all of it)")
    if k / latent_rate < 16 / 25 - 1e-6:
        raise ContextError(f"context_seconds={context_seconds:g} keeps {k / latent_rate:.2f} s; give at least 0.64 s "
                           f"(one sync window)")
    part = latents[..., n - k:] if mode == "continue" else latents[..., :k]
    return AudioContext(part, torch.ones(b, k, dtype=torch.bool), latent_rate, mode=mode,
                        offset=(n - k) / latent_rate if mode == "continue" else 0.0)


class ContextVelocity:
    """Wraps ``velocity_fn(x, t)`` so the known frames follow ``x_t = (1 − t)·z + t·c``.

    ``c`` and ``z`` are in the sampler's layout; ``known`` is broadcastable to it (e.g. (B, N, 1) or (B, 1, N)).
    Unknown frames of the inputs are left to the sampler."""

    def __init__(self, velocity_fn: Callable, c: torch.Tensor, z: torch.Tensor, known: torch.Tensor):
        self.velocity_fn, self.c, self.z, self.known = velocity_fn, c, z, known
        self.line_v = c - z

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        on_line = self.z + float(t) * self.line_v
        v = self.velocity_fn(torch.where(self.known, on_line, x), t)
        return torch.where(self.known, self.line_v, v)

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """The sampler's starting point: ``z`` on known frames, the noise elsewhere."""
        return torch.where(self.known, self.z, noise)


def invert(velocity_fn: Callable, x1: torch.Tensor, timesteps: torch.Tensor, *,
           callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """The noise that the ODE maps to ``x1``: Euler from t = 1 back to t = 0 on the reversed grid."""
    x = x1
    ts = timesteps.flip(0)
    total = len(ts) - 1
    for i, (t, t_prev) in enumerate(zip(ts[:-1], ts[1:])):
        x = x + (t_prev - t) * velocity_fn(x, t)
        if callback is not None:
            callback({"step": i + 1, "total": total, "t": float(t_prev), "x": x, "phase": "inversion"})
    return x
