"""Spectrogram / sync-view preview node: mel spectrogram under a strip of the video frames, as an IMAGE."""
from __future__ import annotations

from . import common as C


class KlingFoleySyncPreview:
    DESCRIPTION = ("Draws the audio's spectrogram under a strip of video frames on one time axis, so you can see "
                   "whether the sound events line up with the picture.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("AUDIO", {"tooltip": "The audio to show."}),
                             "width": ("INT", {"default": 1024, "min": 128, "max": 8192, "step": 8,
                                               "tooltip": "Image width in pixels (the whole clip spans it)."})},
                "optional": {"video": (C.VIDEO, {"tooltip": "Frames to show above the spectrogram."})}}

    def render(self, audio, width=1024, video=None):
        from kling_foley_core.preview import sync_view
        from kling_foley_core.video.resample import FrameSpec

        frames = times = None
        if video is not None:
            spec = FrameSpec(fps=4, size=96, resize="crop", output="unit")
            stream = video.sampled(spec, None).semantic
            frames, times = stream.frames, stream.times
        return (sync_view(audio["waveform"][0], audio["sample_rate"], frames, times, width=width),)


NODES = [KlingFoleySyncPreview]
