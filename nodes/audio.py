"""Audio nodes: latents → mono mel → stereo mel → waveform (native AUDIO), save, mux into the video."""
from __future__ import annotations

import logging

from . import common as C
from .common import node_error


class KlingFoleyVAEDecode:
    DESCRIPTION = "Decodes audio latents into a mono mel spectrogram with the Mel-VAE."
    CATEGORY = C.CATEGORY + "/audio"
    RETURN_TYPES = (C.MEL,)
    RETURN_NAMES = ("mel",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (C.VAE, {"tooltip": "From Kling-Foley VAE Loader (the one the model was trained with)."}),
            "latent": (C.LATENT, {"tooltip": "From Kling-Foley Sampler."}),
        }}

    def decode(self, vae, latent):
        from kling_foley_core.generation import decode_latents

        return ({**latent, "mel": decode_latents(vae, latent["latents"])},)


class KlingFoleyMono2Stereo:
    DESCRIPTION = ("Turns the mono mel into left/right mels by predicted ratio masks (Kling-Foley §4.6). Without "
                   "a module both channels stay the mono mel.")
    CATEGORY = C.CATEGORY + "/audio"
    RETURN_TYPES = (C.MEL,)
    RETURN_NAMES = ("mel",)
    FUNCTION = "stereo"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mel": (C.MEL, {"tooltip": "From Kling-Foley VAE Decode."})},
                "optional": {"mono2stereo": (C.MONO2STEREO, {
                    "tooltip": "From Kling-Foley Mono2Stereo Loader; leave empty for centred (dual-mono) sound."})}}

    def stereo(self, mel, mono2stereo=None):
        from kling_foley_core.generation import mel_to_stereo, stereo_video_features

        video = stereo_video_features(mono2stereo, mel.get("clip_features"), mel.get("sync_features"))
        return ({**mel, "mel": mel_to_stereo(mono2stereo, mel["mel"], video)},)


class KlingFoleyVocode:
    DESCRIPTION = ("Vocodes each mel channel into a waveform (native AUDIO), trimmed to the generated duration, with "
                   "an inaudible provenance watermark (on by default; 'kling-foley detect FILE' finds it).")
    CATEGORY = C.CATEGORY + "/audio"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "vocode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vocoder": (C.VOCODER, {"tooltip": "From Kling-Foley Vocoder Loader (same sample rate as the VAE)."}),
            "mel": (C.MEL, {"tooltip": "From Kling-Foley VAE Decode or Mono2Stereo."}),
        }, "optional": {"watermark": C.watermark_input()}}

    def vocode(self, vocoder, mel, watermark=True):
        from kling_foley_core.generation import vocode
        from kling_foley_core.runner.progress import ProgressBar

        sr = int(vocoder.sample_rate)
        with ProgressBar(1, desc="Kling-Foley vocoding") as bar:  # a long clip's chunks, interruptible between them
            wave = vocode(vocoder, mel["mel"], num_samples=int(mel["duration"] * sr), watermark=bool(watermark),
                          callback=lambda done, total: bar.update_absolute(done, total))
        return (C.generated_audio(wave, sr, mel, bool(watermark)),)


def _check_audio(node: str, audio):
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise node_error(node, "audio must be a ComfyUI AUDIO ({'waveform': [B, C, T], 'sample_rate': int})")
    if audio["waveform"].ndim != 3 or audio["waveform"].shape[-1] == 0:
        raise node_error(node, f"audio waveform must be [B, C, T] with T > 0, got {tuple(audio['waveform'].shape)}")


class KlingFoleySaveAudio:
    DESCRIPTION = "Saves the audio as FLAC or WAV in the output folder; never overwrites (counter suffix)."
    CATEGORY = C.CATEGORY + "/audio"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        return C.check_prefix(filename_prefix)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The audio to save."}),
            "filename_prefix": ("STRING", {"default": "kling_foley/audio",
                                           "tooltip": "Name (and sub-folder) inside the output folder."}),
            "format": (["flac", "wav"], {"default": "flac", "tooltip": "FLAC (lossless, small) or WAV (24-bit)."}),
        }}

    def save(self, audio, filename_prefix="kling_foley/audio", format="flac"):
        from kling_foley_core.mux import MuxError, provenance_tags, save_audio
        from kling_foley_core.runner.paths import output_ui_entry, save_output

        _check_audio("Kling-Foley Save Audio", audio)
        try:
            tags = provenance_tags(audio.get("provenance"))  # the generation settings, as a "comment" tag
        except MuxError as e:
            raise node_error("Kling-Foley Save Audio", str(e)) from None
        results = []
        for wave in audio["waveform"]:
            path = save_output(filename_prefix, format, lambda tmp: save_audio(
                tmp, wave, audio["sample_rate"], metadata=tags, overwrite=True))
            results.append(output_ui_entry(path))
        return {"ui": {"audio": results}}


class KlingFoleyMuxVideo:
    DESCRIPTION = ("Puts the generated audio into the original video, cut to the span the audio was made for. The "
                   "picture is stream-copied (whole video, or a span a copy can cut frame-exactly), else that span is "
                   "re-encoded (H.264); an IMAGE batch is encoded once. Writes a new file; never overwrites (counter "
                   "suffix).")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("STRING", "VIDEO")
    RETURN_NAMES = ("path", "video")  # video: ComfyUI's VIDEO of the new file, for core Save Video (None headless)
    OUTPUT_NODE = True
    FUNCTION = "mux"

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        return C.check_prefix(filename_prefix)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (C.VIDEO, {"tooltip": "From Kling-Foley Load Video (picture stream-copied) or Video From Images "
                                           "(frames encoded once as H.264)."}),
            "audio": ("AUDIO", {"tooltip": "The generated soundtrack."}),
            "filename_prefix": ("STRING", {"default": "kling_foley/video",
                                           "tooltip": "Name (and sub-folder) inside the output folder."}),
            "container": (["mp4", "mov", "mkv", "auto"], {
                "default": "auto", "tooltip": "mp4/mov: AAC audio; mkv: FLAC audio (lossless); auto: mp4, or mkv/mov "
                                              "when mp4 cannot hold the video's picture codec without re-encoding."}),
            "keep_original_audio": ("BOOLEAN", {"default": False,
                                                "tooltip": "Also keep the video's own soundtrack as a second track."}),
        }, "optional": {
            "reencode_picture": ("BOOLEAN", {"default": False, "tooltip": "Re-encode the picture (H.264) even when "
                                             "it could be stream-copied, e.g. for a codec players do not know."}),
        }}

    def mux(self, video, audio, filename_prefix="kling_foley/video", container="auto", keep_original_audio=False,
            reencode_picture=False):
        import tempfile
        from pathlib import Path

        from kling_foley_core.mux import MuxError, choose_container, mux_audio, provenance_tags
        from kling_foley_core.runner.paths import output_ui_entry, save_output
        from kling_foley_core.video.encode import write_frames

        _check_audio("Kling-Foley Mux Video", audio)
        wave = audio["waveform"][0]
        with tempfile.TemporaryDirectory() as scratch:
            source, start = video.path, video.start
            if source is None:  # an IMAGE batch has no stream to copy: encode its frames once (H.264)
                source, start = str(Path(scratch) / "frames.mp4"), 0.0
                write_frames(source, video.images, video.fps)
            try:
                ext = choose_container(source, container, reencode_picture=reencode_picture)
                tags = provenance_tags(audio.get("provenance"))  # the generation settings, as a "comment" tag
            except MuxError as e:
                raise node_error("Kling-Foley Mux Video", str(e)) from None
            done = []  # the MuxResult, to report under the final name rather than the temporary one
            path = save_output(filename_prefix, ext[1:], lambda tmp: done.append(mux_audio(
                source, wave, audio["sample_rate"], tmp, keep_original_audio=keep_original_audio and video.path
                is not None, start=start, duration=video.duration, reencode_picture=reencode_picture,
                metadata=tags, overwrite=True)))
        r = done[0]
        logging.getLogger("kling_foley").info(
            "Kling-Foley Mux Video: wrote %s (%.3f s video %s, %s audio %d Hz%s)", path, r.video_duration,
            r.picture, r.audio_codec, r.sample_rate, ", original audio kept" if r.kept_original_audio else "")
        entry = output_ui_entry(path)
        # the frontend previews saved videos from the "images" list with "animated" set (as core SaveVideo does)
        return {"ui": {"images": [entry], "animated": [True]}, "result": (str(path), C.core_video(path))}


class KlingFoleyAudioMono2Stereo:
    DESCRIPTION = ("Pans mono audio (e.g. HunyuanVideo-Foley's 48 kHz output) into stereo with Mono2Stereo's "
                   "masks, applied to the audio's own spectrum: the sound is unchanged, only its left/right "
                   "balance. Stereo input passes through.")
    CATEGORY = C.CATEGORY + "/audio"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "stereo"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "Mono audio to pan."}),
            "mono2stereo": (C.MONO2STEREO, {"tooltip": "From Kling-Foley Mono2Stereo Loader."}),
        }, "optional": {
            "clip_features": (C.FEATURES, {"tooltip": "Visual features (where the sound source is on screen); "
                                                      "for modules trained on them."}),
            "sync_features": (C.FEATURES, {"tooltip": "Synchformer features (which object touches something when); "
                                                      "for modules trained on them, such as foley-tiny's."}),
        }}

    def stereo(self, audio, mono2stereo, clip_features=None, sync_features=None):
        from kling_foley_core.generation import stereo_video_features
        from kling_foley_core.stereo import pan_waveform

        _check_audio("Kling-Foley Audio Mono2Stereo", audio)
        wave = audio["waveform"]
        if wave.shape[1] == 2:
            return (audio,)
        if wave.shape[1] != 1:
            raise node_error("Kling-Foley Audio Mono2Stereo", f"audio has {wave.shape[1]} channels; give mono audio")
        return ({"waveform": pan_waveform(mono2stereo, wave, audio["sample_rate"],
                                             stereo_video_features(mono2stereo, clip_features, sync_features)),
                 "sample_rate": audio["sample_rate"]},)


NODES = [KlingFoleyVAEDecode, KlingFoleyMono2Stereo, KlingFoleyAudioMono2Stereo, KlingFoleyVocode, KlingFoleySaveAudio, KlingFoleyMuxVideo]
