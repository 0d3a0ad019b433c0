"""Offloaded models: bring a module to its execution device when a call other than ``forward`` uses it.

accelerate's offload hooks (``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``, ``cpu_offload_with_hook``
and the loaders' *offload after use* mode) watch ``forward`` only. The library's models are also used through
``encode``, ``decode`` or ``prepare_conditions``; those calls run :func:`onload` first, as diffusers' own
``apply_forward_hook`` does for ``AutoencoderKL.encode``:

    class MyEncoder(nn.Module):
        @onloads
        def encode(self, x): ...

Without a hook both are no-ops. Inputs go to :func:`execution_device`, which is where the module computes even
while its weights wait elsewhere (on the CPU, or on the meta device under sequential offload).
"""
from __future__ import annotations

import functools

import torch


def onload(module: torch.nn.Module | None) -> None:
    """Run ``module``'s accelerate hook as if its forward were about to run (moves it / its top-level weights to
    the execution device, and offloads the previous model of an offload chain)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


def onloads(method):
    """Decorator for a module's non-``forward`` entry points: :func:`onload` the module, then call the method."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        onload(self)
        return method(self, *args, **kwargs)

    return wrapper


def _hook_device(hook) -> torch.device | None:
    for h in getattr(hook, "hooks", None) or (hook,):  # accelerate's SequentialHook holds several
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev)
    return None


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device ``module`` computes on: an offload hook's execution device (on the module or any submodule),
    else where its first weight is, else the CPU (a weight-free module)."""
    for m in module.modules():
        dev = _hook_device(getattr(m, "_hf_hook", None))
        if dev is not None:
            return dev
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def align_weights(module: torch.nn.Module, alignment: int = 64) -> torch.nn.Module:
    """Give each CPU weight that sits at an unaligned address (tensors read from a safetensors file are views at
    arbitrary offsets) its own aligned copy. CPU kernels pick their code path by alignment, so without this a
    reloaded model can round differently from the one that was saved (~1e-6) and give other audio."""
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type == "cpu" and t.data_ptr() % alignment:
            t.data = t.data.clone()
    return module
