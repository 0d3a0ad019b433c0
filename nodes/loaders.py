"""Model loader nodes: one per component, files from ``models/kling_foley/<kind>/`` (a path headless)."""
from __future__ import annotations

from . import common as C
from . import memory as M
from .common import TINY, node_error


def _precision():
    return (C.PRECISIONS, {"default": "fp32",
                           "tooltip": "Weight precision. fp16/bf16 halve memory on GPUs; CPUs always run fp32."})


def _resolve(kind: str, name: str):
    from kling_foley_core.runner.paths import find_model

    return find_model(kind, name)


class KlingFoleyModelLoader:
    """MM-DiT: MMAudio checkpoints (mmaudio_*.pth / .safetensors) or a library folder (config.json + safetensors)."""

    DESCRIPTION = ("Loads the MM-DiT flow-matching transformer from models/kling_foley/transformer/: MMAudio "
                   "checkpoints (variant detected from the weights) or a Kling-Foley model folder.")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint):
        return C.check_model("transformer", checkpoint, (TINY,))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (C.model_choices("transformer", [TINY]), {
                "tooltip": "MM-DiT weights in models/kling_foley/transformer/ (e.g. mmaudio_large_44k_v2.pth)."}),
            "precision": _precision(),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, checkpoint, precision="fp32", memory=M.KEEP):
        if checkpoint == TINY:
            return (C.tiny_components()["transformer"],)
        from kling_foley_core.compat.convert_mmaudio import load_mmdit

        device, dtype = C.device_and_dtype(precision)
        model = load_mmdit(_resolve("transformer", checkpoint), dtype=dtype, device="cpu").eval()
        return (M.place(model, memory, device),)


class KlingFoleyVAELoader:
    DESCRIPTION = ("Loads the Mel-VAE that turns latents into a mel spectrogram: MMAudio's v1-16.pth / v1-44.pth "
                   "(weight norm removed at load) or a library folder.")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.VAE,)
    RETURN_NAMES = ("vae",)
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint):
        ok = C.check_model("vae", checkpoint, (TINY,))
        if ok is not True or checkpoint == TINY or checkpoint is None:
            return ok
        try:
            _vae_folder_class(_resolve("vae", checkpoint))
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (C.model_choices("vae", [TINY]), {
                "tooltip": "Mel-VAE weights in models/kling_foley/vae/ (v1-44.pth for 44.1 kHz models, "
                           "v1-16.pth for 16 kHz)."}),
            "precision": _precision(),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, checkpoint, precision="fp32", memory=M.KEEP):
        if checkpoint == TINY:
            return (C.tiny_components()["vae"],)
        from kling_foley_core.models.mel_vae_mmaudio import load_mmaudio_mel_vae

        device, dtype = C.device_and_dtype(precision)
        path = _resolve("vae", checkpoint)
        try:
            vae = (_vae_folder_class(path).from_pretrained(path, torch_dtype=dtype) if path.is_dir()
                   else load_mmaudio_mel_vae(path, dtype=dtype, device=device))
        except ValueError as e:
            raise node_error("Kling-Foley VAE Loader", f"checkpoint {checkpoint!r}: {e}") from None
        return (M.place(vae.eval(), memory, device),)


def _vae_folder_class(path):
    """The Mel-VAE class a model folder's config.json names (a Kling Mel-VAE such as foley-tiny's, or MMAudio's
    converted one); a file is MMAudio's checkpoint format. Raises ValueError naming the folder and the fix."""
    import json

    if not path.is_dir():
        return None
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE
    from kling_foley_core.models.mel_vae_mmaudio import MMAudioMelVAE

    classes = {c.__name__: c for c in (KlingMelVAE, MMAudioMelVAE)}
    try:
        name = json.loads((path / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        name = None
    if name not in classes:
        raise ValueError(f"the folder '{path.name}' is not a Mel-VAE: its config.json names {name!r}, expected "
                         f"{' or '.join(map(repr, classes))} (a folder saved with save_pretrained)")
    return classes[name]


def _folder_class(path) -> str | None:
    """The ``_class_name`` a model folder's config.json names (None for a file or another config)."""
    import json
    from pathlib import Path

    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("_class_name") if cfg.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


class KlingFoleyVocoderLoader:
    DESCRIPTION = ("Loads the vocoder (mel → waveform): BigVGAN checkpoints (NVIDIA v2 folders or MMAudio's 16 kHz "
                   "file), a vocoder trained by the library (a VocosVocoder folder), or the weight-free Griffin-Lim "
                   "fallback.")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.VOCODER,)
    RETURN_NAMES = ("vocoder",)
    FUNCTION = "load"
    BUILTIN = ["griffin-lim 16k (no weights)", "griffin-lim 44k (no weights)"]

    @classmethod
    def VALIDATE_INPUTS(cls, vocoder):
        return C.check_model("vocoder", vocoder, (*cls.BUILTIN,))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vocoder": (C.model_choices("vocoder", list(cls.BUILTIN), (".pt", ".pth", ".safetensors")), {
                "tooltip": "A vocoder in models/kling_foley/vocoder/: BigVGAN (a folder with config.json and "
                           "bigvgan_generator.pt) or one trained by train_vocoder (config.json and "
                           "diffusion_pytorch_model.safetensors); or Griffin-Lim: no weights, lower quality."}),
            "griffin_lim_iters": ("INT", {"default": 32, "min": 1, "max": 512,
                                          "tooltip": "Griffin-Lim iterations (more = cleaner phase, slower)."}),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, vocoder, griffin_lim_iters=32, memory=M.KEEP):
        from kling_foley_core.models.vocoder_griffinlim import GriffinLimVocoder

        if vocoder in self.BUILTIN:
            return (GriffinLimVocoder("16k" if "16k" in vocoder else "44k", n_iter=griffin_lim_iters).eval(),)
        from kling_foley_core.default_model.components import load_vocoder
        from kling_foley_core.models.vocoder_bigvgan import load_bigvgan

        device, _ = C.device_and_dtype("fp32")
        path = _resolve("vocoder", vocoder)
        if _folder_class(path) == "VocosVocoder":  # a vocoder trained by the library (train_vocoder)
            return (M.place(load_vocoder(path), memory, device),)
        return (M.place(load_bigvgan(path, device="cpu").eval(), memory, device),)


class KlingFoleyMono2StereoLoader:
    DESCRIPTION = "Loads the Mono2Stereo module (left/right ratio masks over the mono mel, Kling-Foley §4.6)."
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.MONO2STEREO,)
    RETURN_NAMES = ("mono2stereo",)
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint):
        return C.check_model("mono2stereo", checkpoint, (TINY,))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (C.model_choices("mono2stereo", [TINY]), {
                "tooltip": "A Mono2Stereo model folder in models/kling_foley/mono2stereo/."}),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, checkpoint, memory=M.KEEP):
        from kling_foley_core.models.mono2stereo import Mono2Stereo

        if checkpoint == TINY:
            return (C.tiny_components()["mono2stereo"],)
        device, _ = C.device_and_dtype("fp32")
        return (M.place(Mono2Stereo.from_pretrained(_resolve("mono2stereo", checkpoint)).eval(), memory, device),)


class KlingFoleyVisualEncoderLoader:
    DESCRIPTION = ("Loads a semantic visual encoder (frames at 8 fps → features): MetaCLIP ViT-bigG-14 "
                   "(Kling-Foley), DFN5B CLIP ViT-H-14-384 (MMAudio) or SigLIP2 (HunyuanVideo-Foley).")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.VISUAL_ENCODER,)
    RETURN_NAMES = ("visual_encoder",)
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        return C.check_model("clip", weights, ())

    @classmethod
    def INPUT_TYPES(cls):
        from kling_foley_core.encoders import VISUAL_ENCODERS

        return {"required": {
            "encoder": ([TINY] + [n for n in VISUAL_ENCODERS if not n.startswith("tiny")], {
                "tooltip": "Which encoder family the weights belong to."}),
            "weights": (C.model_choices("clip", ["(none: tiny only)"]), {
                "tooltip": "Weights in models/kling_foley/clip/: an open_clip checkpoint file or a folder."}),
            "precision": _precision(),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, encoder, weights, precision="fp32", memory=M.KEEP):
        if encoder == TINY:
            return (C.tiny_components()["visual_encoder"],)
        if weights.startswith("(none"):
            raise node_error("Kling-Foley Visual Encoder Loader", f"encoder '{encoder}' needs weights: put its "
                             "checkpoint in models/kling_foley/clip/ and pick it in 'weights'")
        from kling_foley_core.encoders import get_visual_encoder

        device, dtype = C.device_and_dtype(precision)
        return (M.place(get_visual_encoder(encoder, _resolve("clip", weights), dtype=dtype), memory, device),)


class KlingFoleySyncEncoderLoader:
    DESCRIPTION = ("Loads the Synchformer visual branch (frames at 25 fps → 24 sync tokens per second) from "
                   "synchformer_state_dict.pth (the audio branch is dropped).")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.SYNC_ENCODER,)
    RETURN_NAMES = ("sync_encoder",)
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint):
        return C.check_model("synchformer", checkpoint, (TINY,))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoint": (C.model_choices("synchformer", [TINY]), {
                "tooltip": "synchformer_state_dict.pth in models/kling_foley/synchformer/."}),
            "precision": _precision(),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, checkpoint, precision="fp32", memory=M.KEEP):
        if checkpoint == TINY:
            return (C.tiny_components()["sync_encoder"],)
        from kling_foley_core.encoders import get_sync_encoder

        device, dtype = C.device_and_dtype(precision)
        encoder = get_sync_encoder("synchformer", _resolve("synchformer", checkpoint), dtype=dtype)
        return (M.place(encoder, memory, device),)


class KlingFoleyTextEncoderLoader:
    DESCRIPTION = ("Loads a text encoder: T5-base (Kling-Foley), CLIP text (MMAudio) or CLAP (HunyuanVideo-Foley), "
                   "from a folder in models/kling_foley/text_encoders/.")
    CATEGORY = C.CATEGORY + "/loaders"
    RETURN_TYPES = (C.TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    FUNCTION = "load"

    @classmethod
    def VALIDATE_INPUTS(cls, weights):
        return C.check_model("text_encoders", weights, ())

    @classmethod
    def INPUT_TYPES(cls):
        from kling_foley_core.encoders import TEXT_ENCODERS

        return {"required": {
            "encoder": ([TINY] + [n for n in TEXT_ENCODERS if not n.startswith("tiny")], {
                "tooltip": "Which text encoder family the weights belong to."}),
            "weights": (C.model_choices("text_encoders", ["(none: tiny only)"]), {
                "tooltip": "A folder (config.json + weights + tokenizer) or file in models/kling_foley/text_encoders/."}),
            "precision": _precision(),
        }, "optional": {"memory": M.memory_input()}}

    def load(self, encoder, weights, precision="fp32", memory=M.KEEP):
        if encoder == TINY:
            return (C.tiny_components()["text_encoder"],)
        if weights.startswith("(none"):
            raise node_error("Kling-Foley Text Encoder Loader", f"encoder '{encoder}' needs weights: put them in "
                             "models/kling_foley/text_encoders/ and pick them in 'weights'")
        from kling_foley_core.encoders import get_text_encoder

        device, dtype = C.device_and_dtype(precision)
        return (M.place(get_text_encoder(encoder, _resolve("text_encoders", weights), dtype=dtype), memory, device),)


NODES = [KlingFoleyModelLoader, KlingFoleyVAELoader, KlingFoleyVocoderLoader, KlingFoleyMono2StereoLoader,
         KlingFoleyVisualEncoderLoader, KlingFoleySyncEncoderLoader, KlingFoleyTextEncoderLoader]
