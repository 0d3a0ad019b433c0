"""Encoder nodes: video → semantic / sync features, prompt → text features, all → conditioning."""
from __future__ import annotations

from . import common as C
from .common import node_error


class KlingFoleyVisualEncode:
    DESCRIPTION = "Semantic video features: frames picked at the encoder's rate (8 fps) by timestamp, then encoded."
    CATEGORY = C.CATEGORY + "/conditioning"
    RETURN_TYPES = (C.FEATURES,)
    RETURN_NAMES = ("clip_features",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "visual_encoder": (C.VISUAL_ENCODER, {"tooltip": "From Kling-Foley Visual Encoder Loader."}),
            "video": (C.VIDEO, {"tooltip": "From Kling-Foley Load Video or Video From Images."}),
        }}

    def encode(self, visual_encoder, video):
        from kling_foley_core.generation import frame_specs

        if video.streams:  # a long file: read and encoded window by window
            return (_streamed(video, visual_encoder=visual_encoder)[0],)
        semantic, _ = frame_specs(visual_encoder, None)
        frames = video.sampled(semantic, None).semantic.frames
        return (visual_encoder.encode(frames),)  # (1, Nc, D)


class KlingFoleySyncEncode:
    DESCRIPTION = ("Synchformer sync tokens: frames picked at 25 fps by timestamp, 16-frame windows every 8 frames, "
                   "8 tokens per window (24 per second).")
    CATEGORY = C.CATEGORY + "/conditioning"
    RETURN_TYPES = (C.FEATURES,)
    RETURN_NAMES = ("sync_features",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sync_encoder": (C.SYNC_ENCODER, {"tooltip": "From Kling-Foley Sync Encoder Loader."}),
            "video": (C.VIDEO, {"tooltip": "From Kling-Foley Load Video or Video From Images."}),
        }}

    def encode(self, sync_encoder, video):
        from kling_foley_core.generation import frame_specs

        if video.streams:
            return (_streamed(video, sync_encoder=sync_encoder)[1],)
        _, sync = frame_specs(None, sync_encoder)
        frames = video.sampled(None, sync).sync.frames
        return (sync_encoder.encode(frames),)  # (1, Ns, D): uint8 frames, normalised by the encoder


def _streamed(video, **encoder):
    """(clip_f, sync_f) of a long video file, decoded and encoded in chunks (bounded memory, progress per chunk)."""
    from kling_foley_core.longform import encode_video_streamed
    from kling_foley_core.runner.progress import ProgressBar

    with ProgressBar(1, desc="Kling-Foley encoding") as bar:
        feats = encode_video_streamed(video.path, video.start, video.duration, **encoder,
                                      on_chunk=lambda i, n: bar.update_absolute(i, n))
        bar.update_absolute(bar.total)
    return feats


class KlingFoleyTextEncode:
    DESCRIPTION = "Encodes the prompt (what the sound should be) and an optional negative prompt for guidance."
    CATEGORY = C.CATEGORY + "/conditioning"
    RETURN_TYPES = (C.TEXT,)
    RETURN_NAMES = ("text",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (C.TEXT_ENCODER, {"tooltip": "From Kling-Foley Text Encoder Loader."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "Describe the sound, e.g. 'wooden knocks, then a cymbal'. Empty = none."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                           "tooltip": "Sounds to steer away from (replaces the empty text in CFG)."}),
        }}

    def encode(self, text_encoder, prompt, negative_prompt=""):
        pos = text_encoder.encode([prompt])
        neg = text_encoder.encode([negative_prompt]) if negative_prompt.strip() else None
        # models that store no empty-text placeholder (HunyuanVideo-Foley) guide against the encoding of ""
        empty = text_encoder.encode([""]) if neg is None else None
        return ({"prompt": pos, "negative": neg, "empty": empty},)


class KlingFoleyConditioning:
    DESCRIPTION = ("Collects the conditions for the MM-DiT and sets the duration (Kling-Foley's duration "
                   "embeddings). A missing input means that modality is absent: the model's learned placeholder is used.")
    CATEGORY = C.CATEGORY + "/conditioning"
    RETURN_TYPES = (C.CONDITIONING,)
    RETURN_NAMES = ("conditioning",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "duration": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 86400.0, "step": 0.01,
                                   "tooltip": "Seconds of audio. Connect Load Video's duration to match the video."}),
        }, "optional": {
            "clip_features": (C.FEATURES, {"tooltip": "From Kling-Foley Visual Encode."}),
            "sync_features": (C.FEATURES, {"tooltip": "From Kling-Foley Sync Encode."}),
            "text": (C.TEXT, {"tooltip": "From Kling-Foley Text Encode."}),
            "seconds_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                        "tooltip": "Where this clip starts in a longer piece (duration embedding)."}),
        }}

    def combine(self, duration, clip_features=None, sync_features=None, text=None, seconds_start=0.0):
        from kling_foley_core.generation import FoleyConditions

        if duration <= 0:
            raise node_error("Kling-Foley Conditioning", f"duration={duration} must be > 0 seconds")
        pos = text["prompt"] if text else None
        neg = text["negative"] if text else None
        empty = text.get("empty") if text else None
        return (FoleyConditions(duration=float(duration), clip_f=clip_features, sync_f=sync_features,
                                text_f=pos.hidden if pos is not None else None,
                                text_mask=pos.mask if pos is not None else None,
                                negative_text_f=neg.hidden if neg is not None else None,
                                negative_text_mask=neg.mask if neg is not None else None,
                                empty_text_f=empty.hidden if empty is not None else None,
                                seconds_start=float(seconds_start)),)


NODES = [KlingFoleyVisualEncode, KlingFoleySyncEncode, KlingFoleyTextEncode, KlingFoleyConditioning]
