"""A level loss for the MM-DiT (issue "The default model's sound"): the frame levels of what the flow predicts.

Flow matching asks for the velocity's conditional mean and says nothing about how loud the hits it renders come
out; the shipped model spreads its hits' peak levels twice as wide as the recordings (7.5 against 3.9 dB s.d.).
Here the clean latent the model predicts at each training step, ``x̂1 = x_t + (1 − t)·v̂``
(``flow_matching.data_estimate``), is decoded by the frozen Mel-VAE decoder, and its frame levels are compared with
those of the decoded true latent (``frame_level_loss``: a shift of a frame forgiven), weighted by ``t`` (a
prediction from near-pure noise is allowed to be vague).
"""
from __future__ import annotations

from typing import Callable

import torch

from .mel_vae_losses import frame_level_loss


def decoded_level_loss(decode: Callable[[torch.Tensor], torch.Tensor], x1_hat: torch.Tensor, x1: torch.Tensor,
                       t: torch.Tensor, max_items: int | None = 4) -> torch.Tensor:
    """``Σ_b t_b · frame_level_loss(decode(x̂1_b), decode(x1_b)) / Σ_b t_b`` over the ``max_items`` items of the
    batch with the largest ``t`` (decoding every item costs more than the MM-DiT step; ``None``: all); ``decode``
    maps the flow's latents (B, N, C) to log-mels (B, M, F)."""
    if max_items is not None and x1.shape[0] > max_items:
        keep = torch.topk(t, max_items).indices
        x1_hat, x1, t = x1_hat[keep], x1[keep], t[keep]
    with torch.no_grad():
        ref = decode(x1)
    pred = decode(x1_hat)
    per = torch.stack([frame_level_loss(pred[i:i + 1], ref[i:i + 1]) for i in range(x1.shape[0])])
    w = t.to(per)
    return (per * w).sum() / w.sum().clamp_min(1e-6)


def latent_decoder(vae, transformer) -> Callable[[torch.Tensor], torch.Tensor]:
    """The flow's normalised latents (B, N, C) → the Mel-VAE's log-mel (B, M, 2N), through a frozen decoder."""
    vae.requires_grad_(False).eval()

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(transformer.unnormalize(z).transpose(1, 2))
    return decode
