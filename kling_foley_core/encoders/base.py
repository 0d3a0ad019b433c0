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

import numpy as np
import torch
import torch.nn.functional as F

from ..offload import execution_device, onloads

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


def check_frames(frames: torch.Tensor, *, what: str = "frames") -> None:
    """Raise :class:`EncoderError` unless ``frames`` is a channels-first uint8/float tensor ``[..., C, H, W]``."""
    if not isinstance(frames, torch.Tensor):
        raise EncoderError(f"{what}: expected a torch.Tensor [N, C, H, W], got {type(frames).__name__}")
    if frames.ndim < 3 or frames.shape[-3] not in (1, 3):
        raise EncoderError(
            f"{what}: expected channels-first frames [..., C, H, W] with C=3, got shape {tuple(frames.shape)}; "
            "ComfyUI IMAGE tensors are [B, H, W, C]: permute(0, 3, 1, 2) first"
        )
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise EncoderError(f"{what}: dtype {frames.dtype} is not supported; pass uint8 0..255 or float 0..1")


def frames_to_float(frames: torch.Tensor, *, what: str = "frames") -> torch.Tensor:
    """uint8 0..255 or float 0..1 frames ``[..., C, H, W]`` -> float32 0..1 (validated)."""
    check_frames(frames, what=what)
    x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    if frames.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    return x


def resize_geometry(h: int, w: int, size: int, mode: ResizeMode = "shortest",
                    crop: int | None = None) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """``((resized_h, resized_w), (top, left, out_h, out_w))`` of :func:`resize_frames` for an ``h x w`` input."""
    if mode == "squash":
        return (size, size), (0, 0, size, size)
    if mode != "shortest":
        raise EncoderError(f"resize mode {mode!r} is not known; use 'shortest' or 'squash'")
    crop = crop or size
    # torchvision rounds the long side down (int(size * long / short)).
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return (nh, nw), (int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0)), crop, crop)


def resize_frames(
    x: torch.Tensor, size: int, mode: ResizeMode = "shortest", *, crop: int | None = None
) -> torch.Tensor:
    """Bicubic (antialiased) resize of float frames ``[N, C, H, W]``.

    ``shortest``: scale so the shorter side is ``size`` then centre-crop ``crop or size`` (open_clip's default,
    torchvision ``Resize(size) + CenterCrop``). ``squash``: resize both sides to ``size`` (DFN5B / MMAudio CLIP,
    SigLIP), ignoring the aspect ratio.
    """
    n, c, h, w = x.shape
    (nh, nw), (top, left, ch, cw) = resize_geometry(h, w, size, mode, crop)
    if (nh, nw) == (h, w):  # nothing to interpolate; clamp out of place so the caller's tensor is never modified
        return x[..., top : top + ch, left : left + cw].clamp(0.0, 1.0)
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    return x[..., top : top + ch, left : left + cw].clamp_(0.0, 1.0)


def _scale_bias(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel a, b with ``(x / 255 - mean) / std == a * x + b`` (computed in float64, stored as float32)."""
    m = torch.tensor(mean, dtype=torch.float64)
    sd = torch.tensor(std, dtype=torch.float64)
    return (1.0 / (255.0 * sd)).float().view(3, 1, 1), (-m / sd).float().view(3, 1, 1)


def normalize_frames(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of float 0..1 frames ``[..., 3, H, W]``.

    uint8 frames (0..255, ``[..., 1|3, H, W]``) are converted and normalised in one fused pass,
    ``x * (1 / (255 std)) - mean / std``, instead of the four full passes of ``float``, ``/ 255``, ``- mean`` and
    ``/ std``: the same numbers (to float32 rounding, < 1e-6) at a quarter of the input memory traffic. Returns
    float32 for uint8 input and the input's dtype otherwise.
    """
    if x.dtype == torch.uint8:
        return _normalize_uint8(x, mean, std)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t


def _normalize_uint8(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    scale, bias = _scale_bias(mean, std)  # (3, 1, 1) each
    if x.shape[-3] == 1:  # grey: the three channels normalise differently
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if x.device.type != "cpu":
        return x.to(torch.float32).mul_(scale.to(x.device)).add_(bias.to(x.device))
    # numpy's uint8 * float32 -> float32 loop is ~2x faster than torch's on CPU for this shape (and reads
    # strided views such as a centre crop directly)
    out = np.empty(tuple(x.shape), np.float32)
    np.multiply(x.numpy(), scale.numpy(), out=out)  # (..., 3, H, W)
    out += bias.numpy()
    return torch.from_numpy(out)


def preprocess_frames(
    frames: torch.Tensor,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    mode: ResizeMode = "shortest",
    what: str = "frames",
) -> torch.Tensor:
    """uint8/float frames ``[N, C, H, W]`` (or ``[B, N, C, H, W]``) -> normalised float32 ``[..., 3, size, size]``.

    uint8 frames that need no interpolation (the video loader already delivers each encoder's size) are only
    cropped (a view) and normalised in one fused pass; everything else goes float -> bicubic resize -> clamp ->
    normalise. Both give the same values to float32 rounding.
    """
    check_frames(frames, what=what)
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:])  # (N, C, H, W)
    if x.shape[0] == 0:
        raise EncoderError(f"{what}: got 0 frames; the clip is empty or shorter than one frame at the encoder's fps")
    h, w = x.shape[-2:]
    (nh, nw), (top, left, ch, cw) = resize_geometry(h, w, size, mode)
    if x.dtype == torch.uint8 and (nh, nw) == (h, w):
        x = normalize_frames(x[..., top : top + ch, left : left + cw], mean, std)  # (N, 3, size, size)
    else:
        x = normalize_frames(resize_frames(frames_to_float(x, what=what), size, mode), mean, std)
    return x.reshape(*lead, *x.shape[-3:])


def needs_resize(frames: torch.Tensor, size: int, mode: ResizeMode = "shortest") -> bool:
    """True if :func:`preprocess_frames` would interpolate these frames (not just crop and normalise them)."""
    h, w = frames.shape[-2:]
    return resize_geometry(h, w, size, mode)[0] != (h, w)


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
        return execution_device(self)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @onloads
    @torch.inference_mode()
    def encode(self, frames: torch.Tensor, *, batch_size: int = 16, preprocessed: bool = False) -> torch.Tensor:
        """Frames ``[N, C, H, W]`` (one clip) or ``[B, N, C, H, W]`` -> features ``[B, N, dim]`` (float32).

        ``frames`` are uint8 0..255 (what the video loader gives) or float 0..1 (ComfyUI IMAGE batches), or
        already normalised pixels with ``preprocessed=True``. ``batch_size`` frames are moved to the encoder's
        device, preprocessed there and run through the tower at a time, so a long clip never exists as one
        normalised float tensor (uint8 frames also travel to the device at a quarter of the float size).
        """
        if batch_size < 1:
            raise EncoderError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        what = f"{self.name} frames"
        if not preprocessed:
            check_frames(frames, what=what)
        if frames.ndim == 4:
            frames = frames.unsqueeze(0)
        if frames.ndim != 5:
            raise EncoderError(f"{self.name}: expected frames [N, C, H, W] or [B, N, C, H, W], got {tuple(frames.shape)}")
        b, n = frames.shape[:2]
        if n == 0 and not preprocessed:
            raise EncoderError(f"{what}: got 0 frames; the clip is empty or shorter than one frame at the encoder's fps")
        flat = frames.reshape(b * n, *frames.shape[2:])  # (B*N, C, H, W)
        outs = []
        for i in range(0, flat.shape[0], batch_size):
            chunk = flat[i : i + batch_size].to(device=self.device)
            if not preprocessed:
                chunk = self.preprocess(chunk)  # (M, 3, S, S) float32
            outs.append(self.encode_pixels(chunk.to(dtype=self.dtype)).float())
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
        return execution_device(self)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
