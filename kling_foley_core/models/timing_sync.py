"""Sync tokens read for timing only: what TC-VTA gives the MM-DiT in place of the sync stream.

Synchformer-style tokens tell *when* something strikes, but also *what* strikes: the object's look, hence its sound
class. Without the semantic features (TC-VTA: timing from the video, timbre from the text) that class competes with
the text's. :class:`TimingSync` keeps only the timing: a small head reads each token's chance of holding a contact
and where in its span the contact falls, and the token is rebuilt from three learned vectors, the same for every
class::

    token = rest + p · (contact + (2·offset − 1) · late)

The head is fitted to contact labels on frozen sync features (:func:`fit_timing_head`) and gets no gradient from
the flow loss (its outputs are detached), so no class can be routed through it; the three vectors are learned with
the MM-DiT. A model built with ``timing_sync=True`` reads every item without semantic features this way.
"""
from __future__ import annotations

import torch
from torch import nn

from .context_embed import sync_token_starts
from .sync_layout import FRAMES_PER_TOKEN, SYNC_FPS, TOKENS_PER_WINDOW

TOKEN_SECONDS = FRAMES_PER_TOKEN / SYNC_FPS  # a sync token spans two 25 fps frames


class TimingSync(nn.Module):
    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        # fitted by fit_timing_head alone, never by what reads the tokens
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 2)).requires_grad_(False)
        # input standardisation, set by the fit (the head sees features of any scale)
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        self.rest = nn.Parameter(torch.zeros(dim))
        self.contact = nn.Parameter(torch.zeros(dim))
        self.late = nn.Parameter(torch.zeros(dim))

    def read(self, sync_f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token (B, Ns): the logit of a contact in its span and the logit of the contact's place in it."""
        z = self.head((sync_f - self.feature_mean) / self.feature_std)
        return z[..., 0], z[..., 1]

    def forward(self, sync_f: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            contact, place = self.read(sync_f.detach())
            p, offset = torch.sigmoid(contact)[..., None], torch.sigmoid(place)[..., None]
        tokens = self.rest + p * (self.contact + (2.0 * offset - 1.0) * self.late)
        return tokens.to(sync_f.dtype)


def token_timing(events: list[dict], n_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sync token: 1 where a hit falls in its 80 ms span, and where in the span (0-1) the first one falls."""
    starts = sync_token_starts(n_windows * TOKENS_PER_WINDOW)
    hit, place = torch.zeros(len(starts)), torch.full((len(starts),), 0.5)
    for e in sorted(events, key=lambda e: e["time"]):
        inside = (starts <= e["time"]) & (e["time"] < starts + TOKEN_SECONDS) & (hit == 0)
        place = torch.where(inside, (e["time"] - starts) / TOKEN_SECONDS, place)
        hit = torch.where(inside, torch.ones_like(hit), hit)
    return hit, place


def fit_timing_head(module: TimingSync, feats: list[torch.Tensor], hits: list[torch.Tensor],
                    places: list[torch.Tensor], steps: int = 600, lr: float = 1e-2, seed: int = 0) -> dict:
    """Fit the head on tokens (each (Ns, D)) and their labels, and start the vectors at the class-averaged tokens
    with and without a contact; returns the head's balanced accuracy and place error on every fifth clip, held out
    of the fit."""
    if len(feats) < 5:
        raise ValueError(f"fit_timing_head needs at least 5 clips, got {len(feats)}")
    held = set(range(0, len(feats), 5))

    def cat(xs, keep):
        return torch.cat([x for i, x in enumerate(xs) if (i in held) == keep])
    x, h, o = cat(feats, False), cat(hits, False), cat(places, False)
    if not bool((h > 0).any()) or bool((h > 0).all()):
        raise ValueError("fit_timing_head needs tokens with and without a contact")
    with torch.no_grad():  # the vectors start at the class-averaged tokens (the MM-DiT's sync input knows them)
        module.feature_mean.copy_(x.mean(0))
        module.feature_std.copy_(x.std(0) + 1e-4)
        module.rest.copy_(x[h == 0].mean(0))
        module.contact.copy_(x[h > 0].mean(0) - x[h == 0].mean(0))
        module.late.zero_()
    torch.manual_seed(seed)
    for layer in module.head:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    module.head.requires_grad_(True)
    opt = torch.optim.Adam(module.head.parameters(), lr=lr)
    pos_weight = ((h == 0).sum() / (h == 1).sum().clamp_min(1)).clamp(1.0, 50.0)
    for _ in range(steps):
        contact, place = module.read(x)
        loss = nn.functional.binary_cross_entropy_with_logits(contact, h, pos_weight=pos_weight) + \
            nn.functional.mse_loss(torch.sigmoid(place[h > 0]), o[h > 0]) * 10.0
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    module.head.requires_grad_(False)
    with torch.no_grad():
        x, h, o = cat(feats, True), cat(hits, True), cat(places, True)
        contact, place = module.read(x)
        said = contact > 0
        tpr = float((said & (h > 0)).sum() / (h > 0).sum().clamp_min(1))
        tnr = float((~said & (h == 0)).sum() / (h == 0).sum().clamp_min(1))
        err = float((torch.sigmoid(place) - o)[h > 0].abs().mean()) if bool((h > 0).any()) else float("nan")
    return {"balanced_accuracy": 0.5 * (tpr + tnr), "place_error": err, "held_out_tokens": int(len(h))}
