"""Putting Synchformer tokens on the audio latents' time axis.

Synchformer cuts 25 fps video into 16-frame windows every 8 frames and gives 8 tokens per window, one per 2-frame
tubelet. MMAudio (``sync_layout="windows"``) keeps the tokens in window-major order and stretches that sequence to
the latent length with nearest-neighbour interpolation. Because windows overlap by half, token ``8w + j`` describes
frames ``8w + 2j, 8w + 2j + 1`` while its position in the sequence suggests frame ``8w + j``: a token can sit up to
7 frames (280 ms) away from the moment it shows, and the network has to learn to undo that shift. Large models do;
a small model trained for an hour does not.

``sync_layout="time"`` (the default model's choice) removes the shift before the network sees the tokens:

1. the two windows that cover each 2-frame slot are averaged into one token per slot (``overlap_average``), giving
   a monotonic sequence at 12.5 tokens/s;
2. after the stream projection, every latent frame takes the linear interpolation of the slots at its own centre
   time (``resample_to_latents``): slot ``s`` is centred at frame ``2s + 0.5``, latent ``n`` at
   ``(n + 0.5) / latent_rate`` seconds (the mel front-end's frames are centred that way).
"""
from __future__ import annotations

import torch

SYNC_FPS = 25.0
TOKENS_PER_WINDOW = 8
FRAMES_PER_TOKEN = 2


def overlap_average(tokens: torch.Tensor) -> torch.Tensor:
    """Window-major tokens ``(B, 8W, C)`` → one token per 2-frame slot ``(B, 4W + 4, C)``.

    Window ``w``'s first four tokens are slots ``4w … 4w+3`` and its last four are slots ``4w+4 … 4w+7``; a slot
    seen by two windows gets their mean."""
    b, n, c = tokens.shape
    w = n // TOKENS_PER_WINDOW
    halves = tokens.view(b, w, 2, TOKENS_PER_WINDOW // 2, c)  # (B, W, 2, 4, C)
    out = tokens.new_zeros(b, w + 1, TOKENS_PER_WINDOW // 2, c)
    out[:, :w] += halves[:, :, 0]
    out[:, 1:] += halves[:, :, 1]
    count = tokens.new_full((1, w + 1, 1, 1), 2.0)
    count[:, 0] = 1.0
    count[:, -1] = 1.0
    return (out / count).flatten(1, 2)  # (B, 4W + 4, C)


def slot_weights(num_slots: int, num_latents: int, latent_rate: float, *, device=None, dtype=torch.float32):
    """Indices ``(N, 2)`` and weights ``(N, 2)`` of the two slots each latent frame interpolates between."""
    t = (torch.arange(num_latents, device=device, dtype=torch.float64) + 0.5) / latent_rate  # (N,) seconds
    pos = (t * SYNC_FPS - 0.5) / FRAMES_PER_TOKEN  # slot s is centred at frame 2s + 0.5
    pos = pos.clamp(0, num_slots - 1)
    lo = pos.floor().long().clamp(max=num_slots - 1)
    hi = (lo + 1).clamp(max=num_slots - 1)
    frac = (pos - lo).to(dtype)
    return torch.stack([lo, hi], 1), torch.stack([1 - frac, frac], 1)


def resample_to_latents(slots: torch.Tensor, num_latents: int, latent_rate: float) -> torch.Tensor:
    """Slot tokens ``(B, S, D)`` → one token per latent frame ``(B, N, D)``, linear in time."""
    idx, w = slot_weights(slots.shape[1], num_latents, latent_rate, device=slots.device, dtype=slots.dtype)
    return slots[:, idx[:, 0]] * w[:, 0, None] + slots[:, idx[:, 1]] * w[:, 1, None]  # (B, N, D)
