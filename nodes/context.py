"""Known audio (FoleyGenEx): load it, encode it with the VAE, say which part is known, splice an edit back."""
from __future__ import annotations

from . import common as C
from .common import node_error

CONTEXT = "KLING_FOLEY_AUDIO_CONTEXT"


class KlingFoleyLoadAudio:
    DESCRIPTION = ("Reads an audio file (wav, flac, mp3, m4a, ogg) or a video's soundtrack as AUDIO: a reference, "
                   "a track to continue or a soundtrack to edit.")
    CATEGORY = C.CATEGORY + "/context"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio_path": ("STRING", {"default": "", "tooltip": (
            "Audio or video file (inside ComfyUI: a file of its input/ folder; headless: any path).")})}}

    def load(self, audio_path):
        from kling_foley_core.audio.encode import AudioInputError
        from kling_foley_core.audio.io import read_audio
        from kling_foley_core.runner.paths import resolve_input_path

        name = "Kling-Foley Load Audio"
        if not str(audio_path or "").strip():
            raise node_error(name, "audio_path is empty; give the path of an audio file")
        try:
            wave, sr = read_audio(resolve_input_path(audio_path), what="audio_path")
        except (AudioInputError, ValueError) as e:
            raise node_error(name, str(e)) from None
        return ({"waveform": wave[None], "sample_rate": sr},)


class KlingFoleyVAEEncode:
    DESCRIPTION = ("AUDIO → latents with the VAE the model was trained with (Mel-VAE 16/44.1 kHz or DAC-VAE): any "
                   "rate, mono or stereo (downmixed; resampled to the VAE's rate).")
    CATEGORY = C.CATEGORY + "/context"
    RETURN_TYPES = (C.LATENT,)
    RETURN_NAMES = ("latent",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": (C.VAE, {"tooltip": "From a VAE loader (the model's own VAE)."}),
                             "audio": ("AUDIO", {"tooltip": "The known audio."})}}

    def encode(self, vae, audio):
        from kling_foley_core.audio.encode import AudioInputError, encode_audio

        name = "Kling-Foley VAE Encode"
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise node_error(name, "audio must be an AUDIO input (waveform + sample_rate)")
        try:
            enc = encode_audio(vae, audio["waveform"], int(audio["sample_rate"]), what="audio")
        except AudioInputError as e:
            raise node_error(name, str(e)) from None
        return ({"latents": enc.latents, "duration": enc.seconds, "latent_rate": enc.latent_rate},)


class KlingFoleyAudioContext:
    DESCRIPTION = ("Which part of the audio is known. continue: the audio's last seconds start the span to "
                   "generate (Foley extension); edit: everything but [edit_start, edit_end] is kept (the window is "
                   "regenerated from the inverted latent); reference: a recording whose timbre the Sampler copies "
                   "(AC-VTA; the video's semantics and the text are zeroed, timing comes from the video).")
    CATEGORY = C.CATEGORY + "/context"
    RETURN_TYPES = (CONTEXT,)
    RETURN_NAMES = ("context",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": (C.LATENT, {"tooltip": "From Kling-Foley VAE Encode."}),
            "mode": (["continue", "edit", "reference"], {"default": "continue", "tooltip": (
                "continue: extend a track; edit: regenerate a window; reference: copy a recording's timbre.")}),
        }, "optional": {
            "context_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 600.0, "step": 0.1, "tooltip": (
                "continue: seconds at the end of the audio to keep as context; reference: seconds from its "
                "start to use (0 = all).")}),
            "edit_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                     "tooltip": "edit: start of the window to regenerate (s)."}),
            "edit_end": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                   "tooltip": "edit: end of the window to regenerate (s)."}),
        }}

    def make(self, latent, mode, context_seconds=0.0, edit_start=0.0, edit_end=0.0):
        from kling_foley_core.sampling.context import ContextError, make_context

        try:
            return (make_context(latent["latents"], latent.get("latent_rate"), mode, context_seconds=context_seconds,
                                 edit_start=edit_start, edit_end=edit_end),)
        except (ContextError, KeyError, TypeError) as e:
            raise node_error("Kling-Foley Audio Context", str(e)) from None


class KlingFoleyEditJoin:
    DESCRIPTION = ("Puts generated audio back with the known audio. Edit: the original's own samples outside the "
                   "window, the new audio inside, 50 ms crossfades just outside its edges. Foley extension: the "
                   "given audio's own samples up to the seam (the crossfade before it), then the continuation, "
                   "brought to the given audio's level.")
    CATEGORY = C.CATEGORY + "/context"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "original": ("AUDIO", {"tooltip": "The soundtrack that was edited or continued."}),
            "generated": ("AUDIO", {"tooltip": "The Vocode output of the edit or continuation."}),
            "context": (CONTEXT, {"tooltip": "The Audio Context (edit: its window; continue: the seam)."}),
        }, "optional": {
            "margin_ms": ("FLOAT", {"default": 50.0, "min": 0.0, "max": 100.0, "step": 1.0,
                                    "tooltip": "Crossfade length beyond each edge of the window."}),
        }}

    def join(self, original, generated, context, margin_ms=50.0):
        from kling_foley_core.audio.encode import AudioInputError
        from kling_foley_core.audio.splice import splice_continuation, splice_windows

        name = "Kling-Foley Edit Join"
        if context.mode == "reference":
            raise node_error(name, "the context is a 'reference' context (its audio is not part of the output); "
                                   "Edit Join takes an edit or continue context")
        rate, gen_rate = int(original["sample_rate"]), int(generated["sample_rate"])
        try:
            if context.mode == "continue":
                gen = generated["waveform"]
                out = splice_continuation(original["waveform"], rate, gen, gen_rate, context.seconds,
                                          gen.shape[-1] / gen_rate, margin=float(margin_ms) / 1e3,
                                          offset=context.offset)
            else:
                out = splice_windows(original["waveform"], rate, generated["waveform"], gen_rate, *context.window,
                                     margin=float(margin_ms) / 1e3)
        except AudioInputError as e:
            raise node_error(name, str(e)) from None
        result = {"waveform": out, "sample_rate": rate}
        if "provenance" in generated:
            result["provenance"] = generated["provenance"]
        return (result,)


NODES = [KlingFoleyLoadAudio, KlingFoleyVAEEncode, KlingFoleyAudioContext, KlingFoleyEditJoin]
