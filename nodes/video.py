"""Video input nodes: a file, ComfyUI's VIDEO, or an IMAGE batch + fps. Frames are picked by timestamp, never
'first N'.

Inside ComfyUI, Load Video reads only files of ComfyUI's input folder (the server's other files stay private);
headless it takes any path.
"""
from __future__ import annotations

import os
import weakref
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

    @property
    def streams(self) -> bool:
        """A file longer than one encoder chunk: the encoders read it chunk by chunk instead of all at once."""
        from kling_foley_core import longform

        return self.path is not None and self.duration > longform.STREAM_CHUNK_SECONDS

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


LOAD = "Kling-Foley Load Video"
FROM_VIDEO = "Kling-Foley Video From VIDEO"
FROM_IMAGES = "Kling-Foley Video From Images"


def _range_inputs() -> dict:
    return {
        "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                            "tooltip": "Seconds to skip at the start of the video."}),
        "length": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                             "tooltip": "Seconds to use from 'start' (0 = to the end of the video)."}),
    }


def _open_file(node: str, path, start: float, length: float, shown: str) -> tuple:
    """Probe the file and cut [start, start + length); errors name the file as ``shown``."""
    from kling_foley_core.video.probe import VideoInputError, probe_video

    try:
        info = probe_video(path)  # raises a one-line error naming the file and the problem
    except VideoInputError as e:
        if shown == str(path):
            raise
        raise node_error(node, str(e).replace(str(path), shown)) from None
    available = (info.duration or 0.0) - start
    if available <= 0:
        raise node_error(node, f"start={start} s is past the end of '{shown}' ({info.duration or 0.0:.2f} s)")
    duration = min(length, available) if length > 0 else available
    return FoleyVideo(path=str(path), start=float(start), duration=float(duration)), float(duration)


def _frames_video(node: str, images, fps: float, start: float = 0.0, length: float = 0.0) -> tuple:
    """An IMAGE batch as the video, cut to the frames whose times (i / fps) fall in [start, start + length)."""
    import math

    if getattr(images, "ndim", 0) != 4 or images.shape[0] == 0:
        raise node_error(node, "images must be a non-empty IMAGE batch (B, H, W, C)")
    if not fps > 0:
        raise node_error(node, f"frame rate {fps!r} must be a positive number of frames per second")
    n = images.shape[0]
    first = math.ceil(start * fps - 1e-6)
    if first >= n:
        raise node_error(node, f"start={start} s is past the end of the video ({n / fps:.2f} s)")
    last = n if length <= 0 else min(n, max(first + 1, math.ceil((start + length) * fps - 1e-6)))
    images = images[first:last]  # a view: no frame is copied
    duration = images.shape[0] / float(fps)
    return FoleyVideo(path=None, start=0.0, duration=duration, images=images, fps=float(fps)), duration


class KlingFoleyLoadVideo:
    DESCRIPTION = ("Opens a video file (mp4/mov/mkv/webm/avi) and checks it before any model runs. In ComfyUI it "
                   "reads only ComfyUI's input folder (pick a file or upload one); headless any path. Frames are "
                   "later picked by timestamp at each encoder's rate (8 fps semantic, 25 fps sync).")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.VIDEO, "FLOAT")
    RETURN_NAMES = ("video", "duration")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from kling_foley_core.runner.paths import in_comfyui, list_input_videos

        if in_comfyui():
            source = (list_input_videos(), {
                "video_upload": True,
                "tooltip": "A video in ComfyUI's input folder (or a sub-folder); upload one with the button."})
        else:
            # video_upload: in ComfyUI this input is an upload COMBO, so the UI workflows saved there hold the
            # upload button's value after the path; the headless reader skips it.
            source = ("STRING", {"default": "", "video_upload": True,
                                 "tooltip": "Path of the video file to add sound to (absolute, or relative to the "
                                            "working folder)."})
        return {"required": {"video_path": source, **_range_inputs()}}

    @classmethod
    def VALIDATE_INPUTS(cls, video_path=None):
        from kling_foley_core.runner.paths import comfy_input_file, in_comfyui

        if video_path is None or not in_comfyui():
            return True  # linked (known when it runs), or headless: any path, checked when the node runs
        try:
            comfy_input_file(video_path)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, video_path, start=0.0, length=0.0):
        from kling_foley_core.runner.paths import resolve_input_path

        try:
            st = os.stat(resolve_input_path(video_path))
            return f"{video_path}:{st.st_mtime_ns}:{st.st_size}:{start}:{length}"
        except (OSError, ValueError):
            return float("nan")

    def load(self, video_path, start=0.0, length=0.0):
        from kling_foley_core.runner.paths import in_comfyui, resolve_input_path

        if not isinstance(video_path, str) or not video_path.strip():
            raise node_error(LOAD, "video_path is empty; give the path of a video file")
        try:
            path = resolve_input_path(video_path)
        except ValueError as e:  # inside ComfyUI: not a file of its input folder
            raise node_error(LOAD, f"video_path: {e}") from None
        shown = f"input/{video_path}" if in_comfyui() else str(path)
        return _open_file(LOAD, path, start, length, shown)


class KlingFoleyVideoFromVIDEO:
    DESCRIPTION = ("Uses ComfyUI's VIDEO (core Load Video, Create Video, ...) as the video. A file-backed VIDEO is "
                   "streamed from its file, frame by frame (never turned into an IMAGE batch), and its picture is "
                   "stream-copied by the mux; a VIDEO made of frames uses those frames.")
    CATEGORY = C.CATEGORY
    RETURN_TYPES = (C.VIDEO, "FLOAT")
    RETURN_NAMES = ("video", "duration")
    FUNCTION = "wrap"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO", {"tooltip": "ComfyUI's VIDEO, e.g. from core Load Video."}),
                             **_range_inputs()}}

    def wrap(self, video, start=0.0, length=0.0):
        frames = _component_frames(video)
        if frames is not None:
            return _frames_video(FROM_VIDEO, *frames, start, length)
        try:
            source = video.get_stream_source()
        except Exception as e:  # noqa: BLE001 - any VIDEO implementation: say which one could not be read
            raise node_error(FROM_VIDEO, f"cannot read the stream of this VIDEO ({type(video).__name__}): "
                                         f"{e}") from None
        if isinstance(source, (str, os.PathLike)):
            return _open_file(FROM_VIDEO, source, start, length, os.path.basename(os.fspath(source)))
        if not hasattr(source, "read"):
            raise node_error(FROM_VIDEO, f"the VIDEO's stream source is a {type(source).__name__}; expected a file "
                                         "path or a binary stream")
        path = _spill(source)
        try:
            result = _open_file(FROM_VIDEO, path, start, length, "the VIDEO's in-memory file")
        except BaseException:
            _remove(path)
            raise
        weakref.finalize(result[0], _remove, path)  # the copy lives as long as the video on the wire
        return result


def _component_frames(video):
    """(IMAGE batch, fps) of a VIDEO built from frames (core Create Video), which are already in memory;
    None for any other VIDEO."""
    try:
        from comfy_api.input_impl import VideoFromComponents  # present only inside ComfyUI
    except ImportError:
        return None
    if not isinstance(video, VideoFromComponents):
        return None
    parts = video.get_components()
    return parts.images, float(parts.frame_rate)


def _spill(stream) -> str:
    """Copy an in-memory video file (compressed bytes, not frames) to a temporary file the loader and the mux read."""
    import shutil
    import tempfile

    fd, name = tempfile.mkstemp(prefix="kling_foley_video_", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
    except BaseException:
        _remove(name)
        raise
    return name


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
        return _frames_video(FROM_IMAGES, images, fps)


NODES = [KlingFoleyLoadVideo, KlingFoleyVideoFromVIDEO, KlingFoleyVideoFromImages]
