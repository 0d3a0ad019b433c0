"""Video input for Kling-Foley: probe a file, then sample frames by timestamp for each encoder in one decode pass.

    from kling_foley_core.video import load_video, probe_video, sample_image_batch, FrameSpec, SEMANTIC, SYNC

    info = probe_video("clip.mp4")                 # raises VideoInputError (a ValueError) for unusable files
    v = load_video("clip.mp4", duration=8.0)       # v.semantic.frames (64, 3, 224, 224) in [0, 1]
                                                   # v.sync.frames (200, 3, 224, 224) in [-1, 1]
    v.sync.source_indices                          # which decoded frame each 25 fps timestamp used

    # what the pipeline does: uint8 frames (a quarter of the memory, and cheaper to produce); each encoder's
    # encode() normalises uint8 batches itself in one fused pass  (replace = dataclasses.replace)
    v = load_video("clip.mp4", semantic=replace(SEMANTIC, output="uint8"), sync=replace(SYNC, output="uint8"))

The sampling rule (last frame whose time <= k/fps) is documented in ``resample``.
"""

from .loader import load_video
from .probe import VideoInfo, VideoInputError, probe_video
from .resample import (
    SEMANTIC,
    SYNC,
    FrameSet,
    FrameSpec,
    SampledVideo,
    TimestampPicker,
    VideoParamError,
    sample_image_batch,
)

__all__ = [
    "SEMANTIC",
    "SYNC",
    "FrameSet",
    "FrameSpec",
    "SampledVideo",
    "TimestampPicker",
    "VideoInfo",
    "VideoInputError",
    "VideoParamError",
    "load_video",
    "probe_video",
    "sample_image_batch",
]
