"""FoleyGenEx's conditional injection (§3.1): known audio enters the MM-DiT's audio stream.

The paper concatenates the masked context latent with ``x_t`` on the channel axis, projects the result and adds a
ConvPositionEmbedding before the MM-DiT. A linear projection of a concatenation is the sum of two projections,
``W·[x_t; c] = W_x·x_t + W_c·c``, so the library keeps the existing audio projection for ``x_t`` untouched (every
MMAudio and foley-tiny checkpoint loads and computes exactly what it did) and adds the context's share as a separate
branch, :class:`ContextEmbedding`, whose output layer starts at zero. The branch also sees the known-frame mask as
one extra channel: in the normalised latent space zero is the mean, so "known and zero" and "unknown" must differ.
It does not depend on the flow time, so it is computed once per generation.

The same known/unknown mask is mirrored onto the video features (the paper's "bilinear mapping" of the audio mask
onto the semantic features, and the same on the sync tokens): :func:`known_at_times` gives, for any feature whose
centre time is known, the fraction of it that lies on known audio, by linear interpolation of the latent mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sync_layout import FRAMES_PER_TOKEN, SYNC_FPS, TOKENS_PER_WINDOW

__all__ = ["ContextEmbedding", "ConvPositionEmbedding", "known_at_times", "clip_times", "sync_token_starts",
           "sync_token_times"]


class ConvPositionEmbedding(nn.Module):
    """Two grouped 1-D convolutions with Mish over time (the F5-TTS / E2-TTS convolutional position embedding):
    relative position from local context, so it works at any sequence length."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd")
        groups = max(g for g in range(1, groups + 1) if dim % g == 0)
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.mish(self.conv1(x.transpose(1, 2)))
        return F.mish(self.conv2(h)).transpose(1, 2)  # (B, N, D)


class ContextEmbedding(nn.Module):
    """Masked context latent + known mask ``(B, N, C+1)`` → the context's share of the audio stream ``(B, N, D)``.

    Zero-initialised output: a model given this branch before training computes what it computed without it.

    With ``global_summary`` the branch also returns one vector per item, ``(B, D)``: an attention-pooled summary of
    the known frames, added to the adaLN conditioning of every block (beside the flow time, the pooled text and the
    duration). The per-frame share only reaches the frames it sits on and what attention carries from them; the
    summary tells every block what the known audio sounds like: a direct route for a reference to set the timbre of
    the frames it does not touch (AC-VTA). Its output layer also starts at zero; an item with no known frame gets a zero vector.

    With ``semantic`` the summary has a second zero-initialised output, ``(B, D)``, added to every projected
    semantic-video token: where the reference mode blanks the picture's semantics, the reference can say what the
    picture would have said, through the joint attention the look's timbre takes in V2A."""

    def __init__(self, latent_dim: int, dim: int, global_summary: bool = False, semantic: bool = False):
        super().__init__()
        if semantic and not global_summary:
            raise ValueError("semantic=True needs global_summary=True (it is a second output of the summary)")
        self.proj = nn.Linear(latent_dim + 1, dim)
        self.pos = ConvPositionEmbedding(dim)
        self.out = nn.Linear(dim, dim)
        self.summary_score = nn.Linear(dim, 1) if global_summary else None
        self.summary_out = nn.Linear(dim, dim) if global_summary else None
        self.semantic_out = nn.Linear(dim, dim) if semantic else None
        self.zero_outputs()

    def zero_outputs(self) -> None:
        for m in (self.out, self.summary_out, self.semantic_out):
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, context: torch.Tensor, known: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(per-frame share (B, N, D), summary (B, D) or None, semantic-token share (B, D) or None)."""
        k = known.to(context.dtype)[..., None]  # (B, N, 1)
        h = self.proj(torch.cat([context * k, k], dim=-1))  # (B, N, D)
        h = h + self.pos(h)
        if self.summary_score is None:
            return self.out(h), None, None
        any_known = known.any(dim=1)  # (B,)
        score = self.summary_score(h).squeeze(-1).masked_fill(~known, float("-inf"))
        w = torch.softmax(torch.where(any_known[:, None], score, torch.zeros_like(score)), dim=1)
        pooled = (w[..., None] * h).sum(dim=1)  # (B, D)
        has = any_known[:, None].to(h.dtype)
        semantic = None if self.semantic_out is None else self.semantic_out(pooled) * has
        return self.out(h), self.summary_out(pooled) * has, semantic


def known_at_times(known: torch.Tensor, times: torch.Tensor, latent_rate: float) -> torch.Tensor:
    """Fraction of known audio at each time (seconds): the latent mask ``(B, N)`` read by linear interpolation
    between latent frame centres ``(n + 0.5) / latent_rate``. Returns ``(B, len(times))`` in [0, 1]."""
    b, n = known.shape
    pos = (times.to(torch.float32) * latent_rate - 0.5).clamp(0, n - 1)  # fractional latent index
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.float())[None]
    k = known.to(torch.float32)
    return k[:, lo] * (1 - w) + k[:, hi] * w


def clip_times(n_clip: int, fps: float = 8.0, device=None) -> torch.Tensor:
    """Time of each semantic frame (frame i is picked at i / fps)."""
    return torch.arange(n_clip, device=device, dtype=torch.float32) / fps


def _token_first_frames(n_sync: int, device=None) -> torch.Tensor:
    """First 25 fps frame of each window-major Synchformer token: token j of window w covers frames ``8w + 2j``
    and ``8w + 2j + 1``."""
    w = torch.arange(n_sync // TOKENS_PER_WINDOW, device=device)[:, None]
    j = torch.arange(TOKENS_PER_WINDOW, device=device)[None]
    return (w * 8 + j * FRAMES_PER_TOKEN).flatten().to(torch.float32)


def sync_token_starts(n_sync: int, device=None) -> torch.Tensor:
    """Start time of each window-major Synchformer token (its span is ``FRAMES_PER_TOKEN / SYNC_FPS`` s)."""
    return _token_first_frames(n_sync, device) / SYNC_FPS


def sync_token_times(n_sync: int, device=None) -> torch.Tensor:
    """Centre time of each window-major Synchformer token."""
    return (_token_first_frames(n_sync, device) + 0.5 * FRAMES_PER_TOKEN) / SYNC_FPS
