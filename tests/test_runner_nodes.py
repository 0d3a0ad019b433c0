"""Test-only ComfyUI V1 node classes for the runner tests (no tests here; imported by test_runner_*.py/test_cli.py).

They mimic the shape of the real pack (loader → encoder → sampler → save) with trivial arithmetic, count their
calls in ``CALLS`` and write tiny text files, so every runner test runs in milliseconds.
"""
from __future__ import annotations

import collections
import json

from kling_foley_core.runner import check_interrupt, paths
from kling_foley_core.runner.progress import ProgressBar

CALLS: collections.Counter = collections.Counter()


class TLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["tiny", "small"],), "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0})}}

    RETURN_TYPES = ("T_MODEL",)
    FUNCTION = "load"
    CATEGORY = "test"

    def load(self, name, scale):
        CALLS["TLoader"] += 1
        return ({"name": name, "scale": scale},)


class TEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("T_MODEL",), "text": ("STRING", {"multiline": True, "default": ""})}}

    RETURN_TYPES = ("T_COND",)
    FUNCTION = "encode"

    def encode(self, model, text):
        CALLS["TEncode"] += 1
        return (len(text) * model["scale"],)


class TSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("T_MODEL",),
                "cond": ("T_COND",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 100}),
                "sampler": (["euler", "heun"],),
            },
            "optional": {"cfg": ("FLOAT", {"default": 4.5, "min": 1.0, "max": 20.0})},
        }

    RETURN_TYPES = ("T_LATENT",)
    FUNCTION = "sample"

    def sample(self, model, cond, seed, steps, sampler, cfg=4.5):
        CALLS["TSampler"] += 1
        x = float(seed)
        bar = ProgressBar(steps, use_tqdm=False)
        for _ in range(steps):
            check_interrupt()
            x = x + cond * cfg
            bar.update(1)
        return ([x, sampler],)


class TSave:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("T_LATENT",), "filename_prefix": ("STRING", {"default": "test/out"})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    def save(self, latent, filename_prefix, unique_id=None):
        CALLS["TSave"] += 1
        path = paths.next_output_path(filename_prefix, "txt")
        with paths.atomic_write(path) as tmp:
            with open(tmp, "w") as f:
                f.write(json.dumps(latent))
                f.flush()
                check_interrupt()  # a long write that can be interrupted midway
                f.write("\n")
        return {"ui": {"files": [paths.output_ui_entry(path)]}}


class TNoSeedInt:
    """INT named seed with control_after_generate explicitly off: no extra widget value."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "control_after_generate": False}),
                             "count": ("INT", {"default": 1, "control_after_generate": True}),
                             "mode": ("COMBO", {"options": ["a", "b", "c"], "control_after_generate": True}),
                             "label": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("T_LATENT",)
    FUNCTION = "f"

    def f(self, seed, count, mode, label):
        return ([seed, count, mode, label],)


class TUpload:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": (["a.mp4", "b.mp4"], {"video_upload": True}),
                             "fps": ("FLOAT", {"default": 8.0})},
                "optional": {"frames": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("T_MODEL",)
    FUNCTION = "f"

    def f(self, video, fps, frames=None):
        return ({"name": video, "scale": fps},)


class TAny:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"anything": ("*",), "either": ("T_COND,T_LATENT",)}}

    RETURN_TYPES = ("T_LATENT",)
    FUNCTION = "f"

    def f(self, anything, either):
        return ([anything, either],)


class TValidated:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("T_LATENT",), "word": ("STRING", {"default": "ok"}),
                             "level": ("INT", {"default": 1, "min": 0, "max": 3})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "f"

    @classmethod
    def VALIDATE_INPUTS(cls, word, level):
        if word == "bad":
            return "word must not be 'bad'"
        return True

    def f(self, latent, word, level):
        return {"ui": {"text": [word]}}


class TListOut:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"default": 3, "min": 0, "max": 10})}}

    RETURN_TYPES = ("T_COND",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "f"

    def f(self, n):
        CALLS["TListOut"] += 1
        return (list(range(n)),)


class TDouble:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("T_COND",)}}

    RETURN_TYPES = ("T_COND",)
    FUNCTION = "f"

    def f(self, x):
        CALLS["TDouble"] += 1
        return (x * 2,)


class TCollect:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"xs": ("T_COND",), "tag": ("STRING", {"default": "t"})}}

    RETURN_TYPES = ()
    INPUT_IS_LIST = True
    OUTPUT_NODE = True
    FUNCTION = "f"

    def f(self, xs, tag):
        CALLS["TCollect"] += 1
        return {"ui": {"values": [list(xs), tag]}}


class TVolatile:
    """IS_CHANGED returns NaN: must run every time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": "x"})}}

    RETURN_TYPES = ("T_COND",)
    FUNCTION = "f"
    VERSION = 0

    @classmethod
    def IS_CHANGED(cls, path):
        return float("nan") if path == "always" else f"{path}:{cls.VERSION}"

    def f(self, path):
        CALLS["TVolatile"] += 1
        return (float(len(path)),)


class TFail:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("T_COND",), "how": (["value", "runtime"],)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "f"

    def f(self, x, how):
        if how == "value":
            raise ValueError("TFail: 'how' was set to fail with a ValueError")
        raise RuntimeError("boom")


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (TLoader, TEncode, TSampler, TSave, TNoSeedInt, TUpload, TAny,
                                                 TValidated, TListOut, TDouble, TCollect, TVolatile, TFail)}


def api_workflow(prefix: str = "run/out") -> dict:
    """loader(1) → encode(2) → sampler(3) → save(4), plus an unrelated dangling loader (9)."""
    return {
        "1": {"class_type": "TLoader", "inputs": {"name": "tiny", "scale": 2.0}, "_meta": {"title": "Model"}},
        "2": {"class_type": "TEncode", "inputs": {"model": ["1", 0], "text": "dog barks"}},
        "3": {"class_type": "TSampler", "inputs": {"model": ["1", 0], "cond": ["2", 0], "seed": 1, "steps": 3,
                                                   "sampler": "euler", "cfg": 1.5}, "_meta": {"title": "Sampler"}},
        "4": {"class_type": "TSave", "inputs": {"latent": ["3", 0], "filename_prefix": prefix}},
        "9": {"class_type": "TLoader", "inputs": {"name": "small", "scale": 1.0}},
    }
