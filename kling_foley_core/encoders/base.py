"""Shared pieces of the conditioning encoders: errors, result types, interfaces and frame preprocessing.

Every encoder in this package is swappable behind one of three small interfaces:

* :class:`VisualEncoder` - semantic frame features (8 fps): ``preprocess`` then ``encode`` -> ``[B, N, D]``.
* :class:`TextEncoder` - ``encode(prompts) -> TextFeatures(hidden [B, L, D], mask [B, L])``.
* the Synchformer sync encoder (``synchformer.py``) - 25 fps windows -> ``[B, S*8, 768]``.

Preprocessing is torch-only (no torchvision): bicubic resize with antialiasing, optional centre crop, then
per-channel normalisation. Against PIL/torchvision this differs by < 0.02 in normalised units (STACK.md).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# OpenAI CLIP statistics: MetaCLIP, DFN5B (open_clip preprocess_cfg and MMAudio's Normalize) use these too.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP / SigLIP2 and Synchformer (MotionFormer config DATA.MEAN/STD) map [0, 1] to [-1, 1].
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

ResizeMode = Literal["shortest", "squash"]


class EncoderError(ValueError):
    """Bad encoder input or configuration: the message names the parameter/file, the value and the fix."""


@dataclass
class TextFeatures:
    """Per-token text features and the mask of real (non-padding) tokens."""

    hidden: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool, True = real token

    def to(self, device=None, dtype=None) -> "TextFeatures":
        return TextFeatures(self.hidden.to(device=device, dtype=dtype), self.mask.to(device=device))

    def batch_cat(self, other: "TextFeatures") -> "TextFeatures":
        if self.hidden.shape[1:] != other.hidden.shape[1:]:
            raise EncoderError(
                f"TextFeatures.batch_cat: shapes {tuple(self.hidden.shape)} and {tuple(other.hidden.shape)} differ "
                "after the batch dimension; encode both with padding='max_length'"
            )
        return TextFeatures(torch.cat([self.hidden, other.hidden]), torch.cat([self.mask, other.mask]))


# --------------------------------------------------------------------------------------------------------------
# frame preprocessing
# --------------------------------------------------------------------------------------------------------------


def frames_to_float(frames: torch.Tensor, *, what: str = "frames") -> torch.Tensor:
    """uint8 0..255 or float 0..1 frames ``[..., C, H, W]`` -> float32 0..1 (validated)."""
    if not isinstance(frames, torch.Tensor):
        raise EncoderError(f"{what}: expected a torch.Tensor [N, C, H, W], got {type(frames).__name__}")
    if frames.ndim < 3 or frames.shape[-3] not in (1, 3):
        raise EncoderError(
            f"{what}: expected channels-first frames [..., C, H, W] with C=3, got shape {tuple(frames.shape)}; "
            "ComfyUI IMAGE tensors are [B, H, W, C]: permute(0, 3, 1, 2) first"
        )
    if frames.dtype == torch.uint8:
        x = frames.float() / 255.0
    elif frames.is_floating_point():
        x = frames.float()
    else:
        raise EncoderError(f"{what}: dtype {frames.dtype} is not supported; pass uint8 0..255 or float 0..1")
    if frames.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    return x


def resize_frames(
    x: torch.Tensor, size: int, mode: ResizeMode = "shortest", *, crop: int | None = None
) -> torch.Tensor:
    """Bicubic (antialiased) resize of float frames ``[N, C, H, W]``.

    ``shortest``: scale so the shorter side is ``size`` then centre-crop ``crop or size`` (open_clip's default,
    torchvision ``Resize(size) + CenterCrop``). ``squash``: resize both sides to ``size`` (DFN5B / MMAudio CLIP,
    SigLIP), ignoring the aspect ratio.
    """
    n, c, h, w = x.shape
    if mode == "squash":
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        return x.clamp_(0.0, 1.0)
    if mode != "shortest":
        raise EncoderError(f"resize mode {mode!r} is not known; use 'shortest' or 'squash'")
    crop = crop or size
    # torchvision rounds the long side down (int(size * long / short)).
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    x = x[..., top : top + crop, left : left + crop]
    return x.clamp_(0.0, 1.0)


def normalize_frames(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t


def preprocess_frames(
    frames: torch.Tensor,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    mode: ResizeMode = "shortest",
    what: str = "frames",
) -> torch.Tensor:
    """uint8/float frames ``[N, C, H, W]`` (or ``[B, N, C, H, W]``) -> normalised float32 ``[..., 3, size, size]``."""
    x = frames_to_float(frames, what=what)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])  # (N, C, H, W)
    if x.shape[0] == 0:
        raise EncoderError(f"{what}: got 0 frames; the clip is empty or shorter than one frame at the encoder's fps")
    x = resize_frames(x, size, mode)
    x = normalize_frames(x, mean, std)
    return x.reshape(*lead, *x.shape[-3:])


# --------------------------------------------------------------------------------------------------------------
# building models: from a checkpoint (meta device + strict assign) or with random weights
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def random_init_(module: torch.nn.Module, generator: torch.Generator | None = None) -> torch.nn.Module:
    """Fill every parameter from ``generator`` (never the global RNG): fan-in scaled normals for matrices,
    ``1 + 0.1 r`` for norm weights, ``0.02 r`` for biases and embeddings. For tests and benchmarks: the
    outputs stay O(1) through deep stacks, and LayerNorm affine parameters are not trivially 1/0."""
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        if p.ndim == 1:
            val = 1.0 + 0.1 * r if name.endswith("weight") else 0.02 * r
        elif name.endswith("weight") and "embedding" not in name:
            val = r / math.sqrt(p[0].numel())
        else:
            val = 0.02 * r
        p.copy_(val.to(p.dtype))
    return module


def build_model(cls, config: dict, state_dict: dict[str, torch.Tensor] | None, *, what: str,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None):
    """``cls(**config)`` in eval mode: built on the meta device and given ``state_dict`` (strict; one clear
    error naming missing/unexpected keys), or materialised with random weights when ``state_dict`` is None."""
    from ..compat.checkpoints import init_empty, load_state_dict_strict

    model = init_empty(cls, **config)
    if state_dict is None:
        model = model.to_empty(device="cpu")
        random_init_(model, generator)
    else:
        load_state_dict_strict(model, state_dict, what=what)
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32-kept modules on every dtype move (there are none)
    return torch.nn.Module.to(model, device=device, dtype=dtype).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------------
# interfaces
# --------------------------------------------------------------------------------------------------------------


class VisualEncoder(torch.nn.Module):
    """Semantic visual encoder: frames sampled at ``fps`` -> per-frame features ``[B, N, dim]``.

    Subclasses set ``dim``, ``image_size``, ``mean``/``std``/``resize_mode`` and implement
    :meth:`encode_pixels` (normalised pixels ``[M, 3, S, S]`` -> ``[M, dim]``).
    """

    name: str = "visual"
    dim: int
    image_size: int
    fps: float = 8.0
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resize_mode: ResizeMode = "shortest"

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 / float 0..1 frames ``[N, C, H, W]`` or ``[B, N, C, H, W]`` -> normalised pixels."""
        return preprocess_frames(
            frames, size=self.image_size, mean=self.mean, std=self.std, mode=self.resize_mode, what=f"{self.name} frames"
        )

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor, *, batch_size: int = 16, preprocessed: bool = False) -> torch.Tensor:
        """Frames ``[N, C, H, W]`` (one clip) or ``[B, N, C, H, W]`` -> features ``[B, N, dim]`` (float32).

        ``batch_size`` frames go through the tower at a time so memory stays bounded for long clips.
        """
        if batch_size < 1:
            raise EncoderError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        pixels = frames if preprocessed else self.preprocess(frames)
        if pixels.ndim == 4:
            pixels = pixels.unsqueeze(0)
        if pixels.ndim != 5:
            raise EncoderError(f"{self.name}: expected frames [N, C, H, W] or [B, N, C, H, W], got {tuple(pixels.shape)}")
        b, n = pixels.shape[:2]
        flat = pixels.reshape(b * n, *pixels.shape[2:])  # (B*N, 3, S, S)
        outs = []
        for i in range(0, flat.shape[0], batch_size):
            chunk = flat[i : i + batch_size].to(device=self.device, dtype=self.dtype)
            outs.append(self.encode_pixels(chunk).float())
        feats = torch.cat(outs) if outs else flat.new_zeros(0, self.dim)
        return feats.reshape(b, n, -1)  # (B, N, D)


class TextEncoder(torch.nn.Module):
    """Text encoder: ``encode(prompts) -> TextFeatures(hidden [B, L, dim], mask [B, L])``."""

    name: str = "text"
    dim: int
    max_length: int

    def _check_prompts(self, prompts) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise EncoderError(f"{self.name}: prompts must be a list of str, got {type(prompts).__name__}")
        if len(prompts) == 0:
            raise EncoderError(f"{self.name}: prompts is empty; pass at least one (use '' for no text)")
        return list(prompts)

    def _warn_truncated(self, prompts: list[str], lengths: list[int]) -> None:
        for p, n in zip(prompts, lengths):
            if n > self.max_length:
                log.warning(
                    "%s: prompt truncated from %d to %d tokens: %r", self.name, n, self.max_length, p[:80]
                )

    def encode(self, prompts: list[str]) -> TextFeatures:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
