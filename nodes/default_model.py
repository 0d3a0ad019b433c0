"""The embedded default model (``foley-tiny``) as one loader node: every component it needs, matched."""
from __future__ import annotations

from . import common as C
from . import memory as M


class KlingFoleyDefaultModelLoader:
    DESCRIPTION = ("Loads foley-tiny, the small model this library trains on its own SynthHits data and ships "
                   "inside the package: encoders, MM-DiT, Mel-VAE, Mono2Stereo and its trained vocoder (the "
                   "Vocoder Loader's griffin-lim-16k is the weight-free fallback). Runs on a laptop CPU; made for "
                   "hits, knocks and impacts, not general sound.")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.MODEL, C.VAE, C.VOCODER, C.MONO2STEREO, C.VISUAL_ENCODER, C.SYNC_ENCODER, C.TEXT_ENCODER)
    RETURN_NAMES = ("model", "vae", "vocoder", "mono2stereo", "visual_encoder", "sync_encoder", "text_encoder")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (["foley-tiny"], {"tooltip": "The shipped default model."})},
                "optional": {"memory": M.memory_input()}}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        from kling_foley_core.default_model import is_available

        if model != "foley-tiny":
            return f"model {model!r} is unknown; the shipped default model is 'foley-tiny'"
        if not is_available():
            return ("the foley-tiny weights are not in this installation (kling_foley_core/default_model/weights); "
                    "use the tiny workflow or reinstall the package")
        return True

    def load(self, model="foley-tiny", memory=M.KEEP):
        from kling_foley_core.default_model import load_default_model

        device, _ = C.device_and_dtype("fp32")
        parts = {k: M.place(m, memory, device) for k, m in load_default_model("cpu").items()}
        return tuple(parts.get(k) for k in ("transformer", "vae", "vocoder", "mono2stereo", "visual_encoder",
                                            "sync_encoder", "text_encoder"))


NODES = [KlingFoleyDefaultModelLoader]
