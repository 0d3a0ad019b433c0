"""Where a loaded model lives between uses: the loaders' optional ``memory`` input.

Inside ComfyUI every model goes through ComfyUI's model management: it is wrapped in a ``ModelPatcher`` and
loaded with ``load_models_gpu`` when a node uses it, so ComfyUI offloads it when another model needs the memory
and its free-memory action (``/free``, the *Unload models* button) sends it back to the CPU. ``offload after use``
also unloads the previously used model held that way when the next one loads. Headless the same two modes come
from accelerate hooks (:func:`kling_foley_core.offload.keep_between_uses`). ComfyUI is looked up at call time
and never imported by this module.
"""
from __future__ import annotations

import sys

from kling_foley_core.offload import KEEP, MEMORY_MODES, OFFLOAD, keep_between_uses


def memory_input():
    return (list(MEMORY_MODES), {
        "default": KEEP,
        "tooltip": "keep on device: the model stays on the GPU between uses (inside ComfyUI it is still unloaded "
                   "when memory is needed or on 'Unload models'). offload after use: it waits on the CPU and "
                   "moves to the GPU only while a node uses it (less VRAM, slower)."})


def place(model, memory: str, device):
    """Put a freshly loaded model under the chosen ``memory`` mode; returns the model."""
    mm = sys.modules.get("comfy.model_management")
    if mm is None or "comfy.model_patcher" not in sys.modules:
        return keep_between_uses(model, memory, device)
    return _comfy_managed(model, memory, mm, sys.modules["comfy.model_patcher"])


def _comfy_managed(model, memory: str, mm, model_patcher):
    import torch
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module

    if memory not in MEMORY_MODES:
        raise ValueError(f"memory={memory!r} is not a mode; use one of {', '.join(MEMORY_MODES)}")

    class Held(torch.nn.Module):  # ModelPatcher sets .device on what it wraps; our models derive it
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

    load_device = mm.get_torch_device()
    patcher = model_patcher.ModelPatcher(Held(model.to(mm.unet_offload_device())), load_device=load_device,
                                         offload_device=mm.unet_offload_device())

    class ComfyLoad(ModelHook):
        execution_device = load_device

        def pre_forward(self, module, *args, **kwargs):
            previous = _LAST_OFFLOADED[0]
            if memory == OFFLOAD and previous is not None and previous is not patcher:
                _unload(mm, previous)
            mm.load_models_gpu([patcher], force_full_load=True)
            if memory == OFFLOAD:
                _LAST_OFFLOADED[0] = patcher
            return args, kwargs

    remove_hook_from_module(model)
    add_hook_to_module(model, ComfyLoad())
    model.comfy_patcher = patcher  # ComfyUI's list holds patchers weakly
    return model


_LAST_OFFLOADED: list = [None]


def _unload(mm, patcher) -> None:
    for i, loaded in enumerate(list(mm.current_loaded_models)):
        if loaded.model is patcher:
            if loaded.model_unload():
                mm.current_loaded_models.pop(i)
                mm.soft_empty_cache()
            return
