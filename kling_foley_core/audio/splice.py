"""Editing's last step: the regenerated window put back into the original waveform, nothing else touched.

The latents outside the window were held during sampling, but the VAE decoder's receptive field and a vocoder
with global phase (Griffin-Lim) would still change samples there; so the original's own samples are kept outside
the window and its margins, and the new audio is crossfaded in over ``margin`` seconds on each side, outside the
window (equal-gain linear ramps: the two signals are correlated there, since the latents agree).
"""
from __future__ import annotations

import math

import torch

from .encode import AudioInputError
from .resample import fft_resample

__all__ = ["continuation_gain", "splice_continuation", "splice_window", "splice_windows", "DEFAULT_MARGIN"]

DEFAULT_MARGIN = 0.05  # seconds of crossfade beyond each edge of the window


def splice_window(original: torch.Tensor, original_rate: int, generated: torch.Tensor, generated_rate: int,
                  start: float, end: float, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """``original`` (C, T) with ``[start, end]`` seconds replaced by ``generated`` (C', T') (resampled to the
    original's rate, channels matched). Returns (C, T) at ``original_rate``, within [-1, 1] (band-limited
    resampling of a loud generated part can overshoot full scale)."""
    if not 0 <= start < end:
        raise AudioInputError(f"edit window [{start:g}, {end:g}] s: need 0 <= start < end")
    if not 0 <= margin <= 0.1:
        raise AudioInputError(f"margin={margin:g} s must be in [0, 0.1]")
    c, t = original.shape
    if end > t / original_rate + 1e-6:
        raise AudioInputError(f"edit window ends at {end:g} s but the audio is {t / original_rate:.2f} s long")
    gen = generated.float()
    if generated_rate != original_rate:
        gen = fft_resample(gen, generated_rate, original_rate)
    if gen.shape[0] != c:  # mono ↔ stereo: the downmix on every channel
        gen = gen.mean(0, keepdim=True).expand(c, -1)
    if gen.shape[1] < t:
        gen = torch.nn.functional.pad(gen, (0, t - gen.shape[1]))
    gen = gen[:, :t]
    time = torch.arange(t, dtype=torch.float32) / original_rate
    # weight of the generated audio: 1 inside the window, ramps to 0 over the margins, 0 beyond
    if margin > 0:
        w = torch.minimum((time - (start - margin)) / margin, ((end + margin) - time) / margin).clamp(0, 1)
    else:
        w = ((time >= start) & (time < end)).float()
    return (original.float() * (1 - w) + gen * w).clamp(-1.0, 1.0)


def splice_windows(original: torch.Tensor, original_rate: int, generated: torch.Tensor, generated_rate: int,
                   start: float, end: float, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """:func:`splice_window` over a batch: ``original`` (B|1, C, T), one for every item of ``generated`` (B, C', T')
    or one for all. Returns (B, C, T) at ``original_rate``."""
    b = generated.shape[0]
    if original.shape[0] not in (1, b):
        raise AudioInputError(f"the original audio has {original.shape[0]} items and the generated audio {b}; give "
                              f"one original for all or one per generated item")
    return torch.stack([splice_window(o, original_rate, g, generated_rate, start, end, margin)
                        for o, g in zip(original.expand(b, -1, -1), generated)])


MATCH_LIMIT_DB = 12.0  # the continuation's level correction is at most this (a context silent in one version)


def continuation_gain(given: torch.Tensor, given_rate: int, generated: torch.Tensor, generated_rate: int,
                      seam: float) -> torch.Tensor:
    """(B,) gains that bring ``generated`` to the given audio's level: the ratio of the RMS of the given samples to
    the RMS of the model's own decoded copy of them (its first ``seam`` seconds). The sound path (VAE decoder,
    vocoder) renders levels with a bias of its own; measured on the known audio, it can be taken out of the
    continuation, so the seam does not step. 1 where either is silent; within ±:data:`MATCH_LIMIT_DB`."""
    ref = given[..., : int(seam * given_rate)].double().pow(2).mean(dim=(-2, -1))  # (B|1,)
    own = generated[..., : int(seam * generated_rate)].double().pow(2).mean(dim=(-2, -1))  # (B,)
    gain = torch.sqrt(ref / own.clamp_min(1e-20)).float()
    lim = 10 ** (MATCH_LIMIT_DB / 20)
    ok = (ref > 1e-10) & (own > 1e-10)
    return torch.where(ok, gain.clamp(1 / lim, lim), torch.ones_like(gain)).expand(generated.shape[0])


def splice_continuation(given: torch.Tensor, given_rate: int, generated: torch.Tensor, generated_rate: int,
                        known_seconds: float, duration: float, match_level: bool = True,
                        margin: float = DEFAULT_MARGIN, offset: float = 0.0) -> torch.Tensor:
    """Foley extension's output: the given audio's own samples over the known ``known_seconds`` (crossfaded into
    the generated audio over ``margin`` seconds before the seam), the generated audio after it. ``given``
    (B|1, C, T) holds the known audio from ``offset`` seconds on (a continue context's ``offset``: the part left
    out before it); ``generated`` (B, C', T') covers the span from there (its known part is the model's decoded
    copy of the given audio). ``match_level`` scales the generated audio by :func:`continuation_gain`. Returns
    (B, max(C, C'), ``duration`` seconds) at ``given_rate``."""
    given = given[..., int(round(offset * given_rate)):]
    kept = given.expand(-1, max(given.shape[1], generated.shape[1]), -1)  # mono given audio, stereo result
    total = int(math.floor(duration * given_rate))
    kept = torch.nn.functional.pad(kept, (0, max(0, total - kept.shape[-1])))[..., :total]
    seam = min(known_seconds, given.shape[-1] / given_rate)  # latent frames may round past the given samples
    if seam >= total / given_rate:  # the known audio covers the whole clip: nothing was generated
        return kept.expand(generated.shape[0], -1, -1).clone()
    if match_level:
        generated = generated * continuation_gain(given, given_rate, generated, generated_rate, seam)[:, None, None]
    return splice_windows(kept, given_rate, generated, generated_rate, seam, total / given_rate, margin)
