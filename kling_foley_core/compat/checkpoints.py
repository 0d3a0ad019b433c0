"""Reading checkpoints safely and loading them into models without materialising weights twice.

* safetensors are opened memory-mapped (``safe_open``), so tensors are paged in from the file rather than copied;
* pickles (``.pth``/``.pt``/``.ckpt``/``.bin``) are only ever read with ``torch.load(weights_only=True)``: a file that
  needs arbitrary code to unpickle is refused;
* :func:`init_empty` builds a model on the meta device, and :func:`load_state_dict_strict` then assigns the
  checkpoint's tensors to it (``assign=True``), so peak memory is about one copy of the weights.
"""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open

log = logging.getLogger(__name__)

SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".pth", ".pt", ".ckpt", ".bin")
# Wrappers that training code puts around a state dict; unwrapped when they are the only tensor container.
CONTAINER_KEYS = ("state_dict", "model", "module", "generator", "ema", "ema_model", "weights", "net")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model it was given to."""


def _read_safetensors(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    out = {}
    with safe_open(str(path), framework="pt", device=str(map_location)) as f:
        for key in f.keys():
            out[key] = f.get_tensor(key)
    return out


def _read_pickle(path: Path, map_location: str) -> dict:
    try:
        try:
            return torch.load(str(path), map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # legacy (non-zip) serialisation cannot be memory-mapped: read it whole, still weights-only
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = detail[-1] if detail else type(exc).__name__
        raise CheckpointError(
            f"checkpoint '{path.name}' needs unsafe unpickling (arbitrary code), which this library never does "
            f"({reason}); convert it to .safetensors with the tool that made it") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"checkpoint '{path.name}' cannot be read (truncated or corrupt?): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        inner = [k for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], dict)]
        if not inner:
            break
        obj = obj[inner[0]]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise CheckpointError(f"checkpoint '{path.name}' holds no state dict of tensors "
                              f"(top-level type {type(obj).__name__})")
    return tensors


def read_state_dict(path: str | Path, *, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors or (safely) pickled file, unwrapping one training container."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_EXT:
        try:
            return _read_safetensors(path, map_location)
        except Exception as exc:  # safetensors raises its own error types for truncated/garbled headers
            raise CheckpointError(f"checkpoint '{path.name}' is not a valid safetensors file "
                                  f"(truncated or corrupt?): {exc}") from None
    if suffix in PICKLE_EXT:
        return _unwrap(_read_pickle(path, map_location), path)
    raise CheckpointError(f"checkpoint '{path.name}' has an unknown extension '{suffix}'; expected one of "
                          f"{', '.join(SAFETENSORS_EXT + PICKLE_EXT)}")


def strip_prefix(sd: dict[str, torch.Tensor], prefixes: Iterable[str] = ("module.", "model.", "_orig_mod.")
                 ) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (DataParallel, torch.compile, ...) shared by every key."""
    for prefix in prefixes:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _preview(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}{', …' if len(keys) > n else ''} ({len(keys)})"


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], *, what: str,
                     looks_like: str | None = None) -> None:
    """Raise one CheckpointError naming missing/unexpected keys and shape mismatches, if there are any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_preview(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {_preview(shapes, 3)}")
    hint = f"; this checkpoint looks like {looks_like}" if looks_like else ""
    raise CheckpointError(f"{what}: checkpoint does not fit the model — {'; '.join(parts)}{hint}")


def load_state_dict_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], *, what: str,
                           looks_like: str | None = None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Check the keys, then load. A model on the meta device receives the tensors themselves (``assign``).

    ``dtype`` casts floating tensors on the way in (fp32/fp16/bf16 choice at load); buffers that must stay fp32
    should be restored by the model itself.
    """
    check_state_dict(model, sd, what=what, looks_like=looks_like)
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    on_meta = any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers())
    # assign: a meta model takes the tensors themselves; a dtype choice replaces the parameters' dtype too
    model.load_state_dict(sd, strict=True, assign=on_meta or dtype is not None)
    return model


def init_empty(cls, *args, **kwargs):
    """Build ``cls(*args, **kwargs)`` with parameters on the meta device (no memory, no init cost)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return cls(*args, **kwargs)


def dtype_from_name(name: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32'/'fp16'/'bf16' (and torch names) → torch dtype; None stays None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name.lower() not in table:
        raise ValueError(f"precision '{name}' is unknown; choose fp32, fp16 or bf16")
    return table[name.lower()]


_WEIGHT_NORM_KEY = re.compile(r"^(?:(.*)\.)?(weight_g|weight_v|parametrizations\.weight\.original[01])$")


def fold_weight_norm(sd: dict[str, torch.Tensor], *, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Replace each weight-norm pair by its plain weight ``w = g · v / ‖v‖`` (norm over every dim but 0, in fp32).

    Dim 0 is what ``torch.nn.utils.weight_norm`` normalises over by default: the output channels of a Conv1d,
    the *input* channels of a ConvTranspose1d (its weight is ``(in, out, k)``). Keys ``X.weight_g``/``X.weight_v``
    (old API) and ``X.parametrizations.weight.original0``/``original1`` (parametrisation API) are understood;
    a state dict without weight norm passes through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        m = _WEIGHT_NORM_KEY.match(key)
        if m is None:
            out[key] = t
            continue
        role = "g" if m.group(2) in ("weight_g", "parametrizations.weight.original0") else "v"
        pairs.setdefault(m.group(1) or "", {})[role] = t
    for stem, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            missing = "weight_v" if "g" in pair else "weight_g"
            raise CheckpointError(f"{what}: weight-norm layer '{stem or '(top level)'}' lacks its {missing} tensor "
                                  "(truncated checkpoint?)")
        g, v = pair["g"].float(), pair["v"].float()
        norm = v.reshape(v.shape[0], -1).norm(dim=1).view(-1, *([1] * (v.ndim - 1)))  # (C0, 1, ...)
        out[f"{stem}.weight" if stem else "weight"] = (v * (g / norm)).to(pair["v"].dtype)
    return out
