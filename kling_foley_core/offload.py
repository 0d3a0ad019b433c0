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


# ----------------------------------------------------------------------------------------------------------
# Between uses: the loaders' "memory" setting, headless (inside ComfyUI, nodes/memory.py uses its manager)
# ----------------------------------------------------------------------------------------------------------
KEEP, OFFLOAD = "keep on device", "offload after use"
MEMORY_MODES = (KEEP, OFFLOAD)


def _one_at_a_time_hook(device: torch.device):
    from accelerate.hooks import ModelHook
    from accelerate.utils import send_to_device

    class OneAtATime(ModelHook):
        """accelerate's model offload for a node graph, where the order of use is not known in advance: the
        module waits on the CPU and comes to ``device`` when used; using another module held this way sends the
        previous one back to the CPU, so one of them at a time occupies the device."""

        def __init__(self):
            self.execution_device = device

        def pre_forward(self, module, *args, **kwargs):
            current = _ON_DEVICE[0]
            if current is not module:
                if current is not None:
                    current.to("cpu")
                module.to(device)
                _ON_DEVICE[0] = module
            return send_to_device(args, device), send_to_device(kwargs, device)

    return OneAtATime()


_ON_DEVICE: list[torch.nn.Module | None] = [None]  # the module held "offload after use" now on its device


def keep_between_uses(module: torch.nn.Module, memory: str, device: torch.device | str) -> torch.nn.Module:
    """``keep on device``: move ``module`` to ``device`` for good. ``offload after use``: keep it on the CPU and
    bring it to ``device`` only while used (see :func:`_one_at_a_time_hook`). Calling again switches modes."""
    from accelerate.hooks import add_hook_to_module, remove_hook_from_module

    if memory not in MEMORY_MODES:
        raise ValueError(f"memory={memory!r} is not a mode; use one of {', '.join(MEMORY_MODES)}")
    remove_hook_from_module(module)
    if _ON_DEVICE[0] is module:
        _ON_DEVICE[0] = None
    device = torch.device(device)
    if memory == KEEP or next(module.parameters(), None) is None:  # a weight-free module costs nothing
        return module.to(device)
    add_hook_to_module(module.to("cpu"), _one_at_a_time_hook(device))
    return module
