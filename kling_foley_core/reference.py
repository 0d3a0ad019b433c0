"""Audio-controlled V2A (FoleyGenEx §3.2, AC-VTA): a reference recording sets the timbre, the video the timing.

The reference's latents are prepended to the span to generate and marked known; the output drops them again. The
paper's inference setup is followed: the visual and text semantics are zeroed (the model's learned placeholders),
and a *surrogate reference video* is put before the target video so the sync stream covers the whole span. The
surrogate is cut or repeated from the target's own sync tokens, whole Synchformer windows at a time (8 tokens,
one third of a second), which is what encoding the target's frames cut or repeated to the reference's length gives
when the windows line up. A model with the context pathway also masks the video features on the known span, so the
surrogate only has to keep the sync stream's length and rhythm.
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace

import torch

from .audio.encode import MIN_SECONDS

from .models.sync_layout import TOKENS_PER_WINDOW

SYNC_STRIDE_S = 8 / 25  # seconds between two Synchformer windows (8 frames at 25 fps)
from .sampling.context import AudioContext, ContextError

__all__ = ["reference_conditions", "surrogate_sync"]

log = logging.getLogger(__name__)


def surrogate_sync(sync_f: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """``n_tokens`` (a multiple of 8) of sync tokens cut or repeated from ``sync_f`` (B, Ns, C), window by window."""
    windows = sync_f.shape[1] // TOKENS_PER_WINDOW
    if windows == 0:
        raise ContextError("the target video has no complete sync window; the reference mode needs at least 0.64 s")
    idx = torch.arange(n_tokens // TOKENS_PER_WINDOW, device=sync_f.device) % windows
    w = sync_f.view(sync_f.shape[0], windows, TOKENS_PER_WINDOW, -1)[:, idx]
    return w.flatten(1, 2)


def reference_conditions(transformer, cond, ctx: AudioContext):
    """The conditions of the joined span (reference, then target) and the number of latent frames to drop."""
    if hasattr(transformer, "forward_native"):
        raise ContextError("the reference mode (AC-VTA) needs an MM-DiT model (Kling-Foley or MMAudio); "
                           "HunyuanVideo-Foley supports the continue and edit modes")
    max_d = float(getattr(transformer.config, "max_duration", float("inf")))
    room = int(math.floor((max_d - cond.duration) * ctx.latent_rate + 1e-6))  # reference frames that still fit
    if room / ctx.latent_rate < MIN_SECONDS - 1e-6:
        raise ContextError(f"reference mode: the clip is {cond.duration:.2f} s and this model takes at most "
                           f"{max_d:g} s with the reference in front; cut the clip to at most "
                           f"{max_d - MIN_SECONDS:.2f} s (the reference needs {MIN_SECONDS:.2f} s)")
    # The reference spans whole sync strides (0.32 s), so the surrogate's whole windows end exactly where the
    # target starts and its sync tokens stay aligned with its audio (a partial stride would shift them).
    strides = int(math.floor(min(ctx.frames, room) / ctx.latent_rate / SYNC_STRIDE_S + 1e-6))
    n_ref = min(ctx.frames, room, int(round(strides * SYNC_STRIDE_S * ctx.latent_rate)))
    if n_ref < ctx.frames:
        log.info("reference cut from %.2f s to %.2f s (whole 0.32-s sync strides, within the model's %g s)",
                 ctx.seconds, n_ref / ctx.latent_rate, max_d)
        ctx = replace(ctx, latents=ctx.latents[..., :n_ref], known=ctx.known[..., :n_ref])
    n_target = transformer.sequence_lengths(cond.duration).latent
    total = min(cond.duration + strides * SYNC_STRIDE_S, max_d)
    sync_f = cond.sync_f
    if sync_f is not None:
        n_sur = strides * TOKENS_PER_WINDOW
        sync_f = torch.cat([surrogate_sync(sync_f, n_sur), sync_f], dim=1)
    # the reference covers the start of the joined span: every frame of it is known
    known = torch.ones(ctx.latents.shape[0], n_ref, dtype=torch.bool, device=ctx.latents.device)
    joined = replace(cond, duration=total, clip_f=None, text_f=None, text_mask=None, negative_text_f=None,
                     negative_text_mask=None, sync_f=sync_f, latent_frames=n_ref + n_target,
                     context=replace(ctx, known=known))
    return joined, n_ref
