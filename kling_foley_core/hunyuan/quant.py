"""fp8 weight-only storage: keep big matrices as ``float8_e4m3fn`` plus an fp32 scale, upcast on the fly.

This halves the resident size of a bf16 model (≈ 5.1 B parameters → ≈ 5 GB for HunyuanVideo-Foley XXL) with no
special kernels: every forward dequantises one layer's weight to the activation dtype right before its matmul,
so the compute itself stays bf16/fp16/fp32 and works on any device (CPU included).

* Scales are per output row by default (``per="row"``), or one per tensor (``per="tensor"``, stored expanded to
  a row vector so both layouts load into the same module). ``q = round(w / scale)`` with ``scale = amax/448``.
* State-dict keys stay the float model's (``…weight``, ``…bias``) plus ``…weight_scale``; a community file
  that stores bare fp8 weights (no scale) loads with scale 1, and ComfyUI-style ``…scale_weight`` keys are read
  as ``…weight_scale``.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import ChannelLastConv1d

log = logging.getLogger(__name__)

FP8_DTYPE = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_SUFFIX = "weight_scale"
SCALE_ALIASES = ("scale_weight",)  # other spellings of the per-weight scale found in community files


class Fp8UnavailableError(ValueError):
    """fp8 storage was requested but this torch build has no float8 dtype."""


def require_fp8() -> torch.dtype:
    if FP8_DTYPE is None:
        raise Fp8UnavailableError(
            f"precision='fp8': torch {torch.__version__} has no torch.float8_e4m3fn; upgrade torch (≥ 2.1) or "
            f"load with precision='bf16'/'fp16'")
    return FP8_DTYPE


def is_fp8(t: torch.Tensor) -> bool:
    return FP8_DTYPE is not None and t.dtype == FP8_DTYPE


def quantize_fp8(w: torch.Tensor, per: str = "row", chunk_rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a weight (out, ...) to (fp8 tensor, fp32 scale of shape (out,)).

    Works ``chunk_rows`` rows at a time into a preallocated fp8 tensor, so the fp32 temporaries stay small (a
    whole-matrix fp32 copy of every weight would fragment the heap and inflate a streamed load's RSS).
    """
    fp8 = require_fp8()
    if per not in ("row", "tensor"):
        raise ValueError(f"fp8 scale granularity per='{per}' is unknown; choose 'row' or 'tensor'")
    w = w.detach()
    rows = w.shape[0]
    flat = w.reshape(rows, -1)
    amax = torch.empty(rows, dtype=torch.float32, device=w.device)
    for i in range(0, rows, chunk_rows):
        amax[i:i + chunk_rows] = flat[i:i + chunk_rows].abs().amax(dim=1).float()
    if per == "tensor":
        amax = amax.amax().expand(rows).contiguous()
    scale = (amax / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.empty(flat.shape, dtype=fp8, device=w.device)
    for i in range(0, rows, chunk_rows):
        block = flat[i:i + chunk_rows].float() / scale[i:i + chunk_rows, None]
        q[i:i + chunk_rows] = block.clamp_(-FP8_MAX, FP8_MAX).to(fp8)
    return q.view(w.shape), scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp8 weight × per-row scale, computed in fp32 and cast once to the compute dtype."""
    return (q.float() * scale.float().view(-1, *([1] * (q.ndim - 1)))).to(dtype)


class _Fp8Base(nn.Module):
    """Holds ``weight`` (fp8), ``weight_scale`` (fp32, per output row) and an optional ``bias`` (compute dtype)."""

    def _init_storage(self, weight_shape, bias: bool, compute_dtype, device):
        fp8 = require_fp8()
        self.weight = nn.Parameter(torch.empty(weight_shape, dtype=fp8, device=device), requires_grad=False)
        self.register_buffer(SCALE_SUFFIX, torch.ones(weight_shape[0], dtype=torch.float32, device=device))
        self.bias = (nn.Parameter(torch.empty(weight_shape[0], dtype=compute_dtype, device=device), requires_grad=False)
                     if bias else None)

    def _w_b(self, dtype):
        w = dequantize_fp8(self.weight, self.weight_scale, dtype)
        b = self.bias.to(dtype) if self.bias is not None else None
        return w, b


class Fp8Linear(_Fp8Base):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 compute_dtype: torch.dtype = torch.bfloat16, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_storage((out_features, in_features), bias, compute_dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._w_b(x.dtype)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8"


class Fp8Conv1d(_Fp8Base):
    """fp8 Conv1d; ``channel_last`` reproduces :class:`ChannelLastConv1d` (tokens (B, N, C) in and out)."""

    def __init__(self, conv: nn.Conv1d, compute_dtype: torch.dtype, device=None, channel_last: bool = False):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.channel_last = channel_last
        self._init_storage(tuple(conv.weight.shape), conv.bias is not None, compute_dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._w_b(x.dtype)
        if self.channel_last:
            x = x.transpose(1, 2)  # (B, C, N)
        y = F.conv1d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return y.transpose(1, 2) if self.channel_last else y

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, channel_last={self.channel_last}, fp8"


def default_fp8_filter(name: str, module: nn.Module) -> bool:
    """Quantise the matrices inside the transformer blocks (≈ 99 % of the weights); keep embedders/final layer."""
    return name.startswith(("triple_blocks.", "single_blocks.")) and type(module) in (nn.Linear, nn.Conv1d,
                                                                                        ChannelLastConv1d)


def convert_to_fp8(model: nn.Module, *, compute_dtype: torch.dtype = torch.bfloat16, per: str = "row",
                   predicate: Callable[[str, nn.Module], bool] = default_fp8_filter) -> list[str]:
    """Swap matching Linear/Conv1d modules for fp8 ones, in place. Returns the names of the swapped modules.

    Modules on the meta device become empty fp8 modules (fill them with :func:`fp8_state_dict`-converted
    tensors via ``load_state_dict(assign=True)``); real modules are quantised now.
    """
    require_fp8()
    swapped = []
    for name, module in list(model.named_modules()):
        if not name or not predicate(name, module):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        device = module.weight.device
        if isinstance(module, nn.Linear):
            new = Fp8Linear(module.in_features, module.out_features, module.bias is not None, compute_dtype, device)
        else:
            new = Fp8Conv1d(module, compute_dtype, device, channel_last=isinstance(module, ChannelLastConv1d))
        if not module.weight.is_meta:
            q, scale = quantize_fp8(module.weight, per)
            new.weight.data, new.weight_scale.data = q, scale
            if module.bias is not None:
                new.bias.data = module.bias.detach().to(compute_dtype)
        setattr(parent, child, new)
        swapped.append(name)
    return swapped


def fp8_state_dict(sd: dict[str, torch.Tensor], fp8_weight_keys: Iterable[str], *, per: str = "row",
                   compute_dtype: torch.dtype = torch.bfloat16, consume: bool = True) -> dict[str, torch.Tensor]:
    """Turn a float (or already-fp8) state dict into the fp8 layout for the given weight keys.

    Float weights are quantised; fp8 weights keep their scale (``weight_scale`` / ``scale_weight``, expanded to
    one value per row) or get scale 1. Other floating tensors are cast to ``compute_dtype``. With ``consume``
    each source tensor is dropped from ``sd`` as soon as it is converted, so a streaming caller never holds two
    full copies.
    """
    targets = set(fp8_weight_keys)
    all_keys = set(sd)
    out: dict[str, torch.Tensor] = {}

    def take(key):
        return sd.pop(key) if consume else sd[key]

    def take_scale(stem: str, rows: int) -> torch.Tensor:
        for leaf_name in (SCALE_SUFFIX, *SCALE_ALIASES):
            if f"{stem}.{leaf_name}" in sd:
                return take(f"{stem}.{leaf_name}").float().reshape(-1).expand(rows).contiguous()
        return torch.ones(rows)  # bare fp8 cast, no scale stored

    for key in list(sd.keys()):
        stem, _, leaf = key.rpartition(".")
        if leaf in (SCALE_SUFFIX, *SCALE_ALIASES) and f"{stem}.weight" in all_keys:
            continue  # consumed together with its weight
        if key not in sd:
            continue
        t = take(key)
        if key in targets:
            if is_fp8(t):
                out[key], out[f"{stem}.{SCALE_SUFFIX}"] = t, take_scale(stem, t.shape[0])
            else:
                out[key], out[f"{stem}.{SCALE_SUFFIX}"] = quantize_fp8(t, per)
        elif is_fp8(t):  # fp8 outside the quantised set (a fully fp8 community file): dequantise it
            out[key] = dequantize_fp8(t, take_scale(stem, t.shape[0]) if t.ndim else torch.ones(1), compute_dtype)
        elif t.is_floating_point():
            out[key] = t.to(compute_dtype)
        else:
            out[key] = t
        del t
    return out
