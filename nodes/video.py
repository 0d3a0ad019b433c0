"""Video input nodes: a file, or a ComfyUI IMAGE batch + fps. Frames are picked by timestamp, never 'first N'."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import common as C
from .common import node_error


@dataclass
class FoleyVideo:
    """What flows on a KLING_FOLEY_VIDEO wire: the source (for muxing) and its timestamp-resampled frames."""

    path: Optional[str]  # None for an IMAGE batch
    start: float
    duration: float
    images: object = None  # (B, H, W, C) IMAGE batch when the source was one
    fps: Optional[float] = None
    _sampled: dict = None  # (semantic spec, sync spec) → SampledVideo, filled on demand

    def sampled(self, semantic, sync):
        """Frames for these encoder specs (decoded once per spec pair and kept)."""
        from kling_foley_core.video.loader import load_video
        from kling_foley_core.video.resample import sample_image_batch

        key = (semantic, sync)
        if self._sampled is None:
            self._sampled = {}
        if key not in self._sampled:
            if self.path is not None:
                self._sampled[key] = load_video(self.path, semantic=semantic, sync=sync, start=self.start,
                                                duration=self.duration)
            else:
                self._sampled[key] = sample_image_batch(self.images, self.fps, semantic=semantic, sync=sync,
                                                        start=self.start, duration=self.duration)
        return self._sampled[key]


class KlingFoleyLoadVideo:
    DESCRIPTION = ("Opens a video file (mp4/mov/mkv/webm/avi) and checks it before any model runs. Frames are "
                   "later picked by timestamp at each encoder's rate (8 fps semantic, 25 fps sync).")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.VIDEO, "FLOAT")
    RETURN_NAMES = ("video", "duration")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video_path": ("STRING", {"default": "", "tooltip": "Path of the video file to add sound to (absolute, or "
                                                                "relative to ComfyUI's input folder)."}),
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                "tooltip": "Seconds to skip at the start of the video."}),
            "length": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01,
                                 "tooltip": "Seconds to use from 'start' (0 = to the end of the video)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, video_path, start=0.0, length=0.0):
        import os

        from kling_foley_core.runner.paths import resolve_input_path

        try:
            st = os.stat(resolve_input_path(video_path))
            return f"{video_path}:{st.st_mtime_ns}:{st.st_size}:{start}:{length}"
        except OSError:
            return float("nan")

    def load(self, video_path, start=0.0, length=0.0):
        from kling_foley_core.runner.paths import resolve_input_path
        from kling_foley_core.video.probe import probe_video

        if not video_path:
            raise node_error("Kling-Foley Load Video", "video_path is empty; give the path of a video file")
        video_path = str(resolve_input_path(video_path))
        info = probe_video(video_path)  # raises a one-line error naming the file and the problem
        available = (info.duration or 0.0) - start
        if available <= 0:
            raise node_error("Kling-Foley Load Video", f"start={start} s is past the end of '{video_path}' "
                             f"({info.duration:.2f} s)")
        duration = min(length, available) if length > 0 else available
        return (FoleyVideo(path=str(video_path), start=float(start), duration=float(duration)), float(duration))


class KlingFoleyVideoFromImages:
    DESCRIPTION = ("Uses an IMAGE batch (from LoadVideo or VideoHelperSuite) with its frame rate as the video. "
                   "Frames are resampled by time, so any fps works.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.VIDEO, "FLOAT")
    RETURN_NAMES = ("video", "duration")
    FUNCTION = "wrap"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Video frames as an IMAGE batch (B, H, W, C)."}),
            "fps": ("FLOAT", {"default": 25.0, "min": 0.1, "max": 1000.0, "step": 0.001,
                              "tooltip": "Frame rate of the IMAGE batch (e.g. 29.97); used to time each frame."}),
        }}

    def wrap(self, images, fps):
        if getattr(images, "ndim", 0) != 4 or images.shape[0] == 0:
            raise node_error("Kling-Foley Video From Images", "images must be a non-empty IMAGE batch (B, H, W, C)")
        duration = images.shape[0] / float(fps)
        return (FoleyVideo(path=None, start=0.0, duration=duration, images=images, fps=float(fps)), duration)


NODES = [KlingFoleyLoadVideo, KlingFoleyVideoFromImages]
