"""Shared bits of the node layer: custom type names, the category, and error wording.

Nodes are plain ComfyUI V1 classes. Nothing from ComfyUI is imported here or at import time of any node
module: progress, interrupts, folders and outputs go through ``kling_foley_core.runner``, which finds ComfyUI at
call time when it is running inside it.
"""
from __future__ import annotations

import functools

CATEGORY = "audio/Kling-Foley"

MODEL = "KLING_FOLEY_MODEL"  # MM-DiT
VAE = "KLING_FOLEY_VAE"  # Mel-VAE
VOCODER = "KLING_FOLEY_VOCODER"
MONO2STEREO = "KLING_FOLEY_MONO2STEREO"
VISUAL_ENCODER = "KLING_FOLEY_VISUAL_ENCODER"
SYNC_ENCODER = "KLING_FOLEY_SYNC_ENCODER"
TEXT_ENCODER = "KLING_FOLEY_TEXT_ENCODER"
VIDEO = "KLING_FOLEY_VIDEO"  # timestamp-resampled frames + the source path
FEATURES = "KLING_FOLEY_FEATURES"  # encoder features (B, N, D)
TEXT = "KLING_FOLEY_TEXT"  # text features + mask
CONDITIONING = "KLING_FOLEY_CONDITIONING"
SAMPLER = "KLING_FOLEY_SAMPLER"
SCHEDULE = "KLING_FOLEY_SCHEDULE"
LATENT = "KLING_FOLEY_LATENT"
MEL = "KLING_FOLEY_MEL"

TINY = "tiny (random weights, for testing)"
PRECISIONS = ["fp32", "fp16", "bf16"]


class NodeInputError(ValueError):
    """A bad node input; the message starts with the node's display name."""


def node_error(node: str, message: str) -> NodeInputError:
    return NodeInputError(f"{node}: {message}")


@functools.lru_cache(maxsize=2)
def tiny_components(seed: int = 0) -> dict:
    """The tiny random stack, built once per process so every tiny loader hands out matching parts."""
    from kling_foley_core.presets import tiny_components as build

    return build(seed)


def device_and_dtype(precision: str):
    """Execution device and the chosen dtype (fp16/bf16 fall back to fp32 on CPU).

    Inside ComfyUI the device is ComfyUI's (so ``--cpu`` and its memory management are honoured); headless it is
    CUDA, then MPS, then the CPU.
    """
    import sys

    import torch

    from kling_foley_core.compat.checkpoints import dtype_from_name

    mm = sys.modules.get("comfy.model_management")  # present only when running inside ComfyUI
    if mm is not None and hasattr(mm, "get_torch_device"):
        device = torch.device(mm.get_torch_device())
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    dtype = dtype_from_name(precision)
    if device.type == "cpu" and dtype != torch.float32:
        dtype = torch.float32  # half precision is slower than fp32 on CPUs without AMX
    return device, dtype


def model_choices(kind: str, extra: list[str], extensions=(".safetensors", ".pth", ".pt", ".ckpt", ".bin")) -> list[str]:
    """The built-in entries, then the files and model folders of ``models/kling_foley/<kind>/`` (a folder with
    config.json is one entry, never the files inside it)."""
    from kling_foley_core.runner.paths import list_models

    return extra + [f for f in list_models(kind, extensions) if f not in extra]


def check_prefix(filename_prefix) -> bool | str:
    """VALIDATE_INPUTS helper: True, or ComfyUI's error string when the prefix leaves the output folder."""
    from kling_foley_core.runner.errors import OutputPathError
    from kling_foley_core.runner.paths import resolve_output_prefix

    try:
        resolve_output_prefix(filename_prefix)
    except OutputPathError as e:
        return str(e)
    return True


def check_model(kind: str, name, builtins: tuple = ()) -> bool | str:
    """VALIDATE_INPUTS helper: True for a built-in entry or a model that exists; otherwise an error naming the
    folders searched and the file expected (instead of a bare 'value not in list')."""
    from kling_foley_core.runner.errors import ModelNotFoundError
    from kling_foley_core.runner.paths import find_model

    if name is None:
        return True  # linked from another node: known only when it runs
    if not isinstance(name, str):
        return f"expected a model file name, got {name!r}"
    if name in builtins or name.startswith("(none"):
        return True
    try:
        find_model(kind, name)
    except ModelNotFoundError as e:
        return str(e)
    return True


def watermark_input() -> tuple:
    """The optional 'watermark' input of the nodes that make a waveform (Vocode, HunyuanVideo-Foley Decode)."""
    return ("BOOLEAN", {"default": True, "tooltip": "Embed the inaudible provenance watermark (Kling-Foley §8) that "
                                                    "'kling-foley detect FILE' finds; off leaves the audio unmarked."})


def generated_audio(wave, sample_rate: int, upstream: dict, watermark: bool) -> dict:
    """A generated waveform as ComfyUI AUDIO, carrying the provenance (the upstream settings, if any, and whether
    the watermark is in it) that Save Audio and Mux Video write into the file's tags."""
    from kling_foley_core.audio.watermark import provenance_fields

    provenance = {**(upstream.get("provenance") or {}), **provenance_fields(watermark)}
    return {"waveform": wave.float().cpu(), "sample_rate": int(sample_rate), "provenance": provenance}


def core_video(path):
    """ComfyUI's own VIDEO for a file (what core SaveVideo takes), or None headless."""
    try:
        from comfy_api.input_impl import VideoFromFile  # present only inside ComfyUI
    except ImportError:
        return None
    return VideoFromFile(str(path))
