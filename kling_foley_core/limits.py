"""How long a clip one generation may cover: the one place both bounds are decided.

The shortest is one Synchformer window (16 frames at 25 fps = 0.64 s; every model family reads sync features).
The longest *one run* covers is the model's: its config's ``max_duration`` (the range of its duration embedding and
its positional tables). A clip is never refused for length: longer clips are generated in windows of the model's
trained length (:func:`trained_seconds`, ``longform``), and the window may not exceed :func:`max_seconds`. The
Sampler and the headless runner's up-front checks (``preflight``) both read the values here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SYNC_WINDOW_FRAMES = 16
SYNC_FPS = 25
MIN_SECONDS = SYNC_WINDOW_FRAMES / SYNC_FPS
DEFAULT_MAX_SECONDS = 30.0  # a config that does not say (MMAudio's policy value)
DEFAULT_TRAINED_SECONDS = 8.0  # a config without default_duration: HunyuanVideo-Foley's 8-s training clips


def max_seconds(config: Any) -> float:
    """The longest clip a model with this config (an object or a dict) generates in one run."""
    value = _get(config, "max_duration")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DEFAULT_MAX_SECONDS
    return value if math.isfinite(value) and value > 0 else DEFAULT_MAX_SECONDS


def _get(config: Any, key: str):
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def trained_seconds(config: Any) -> float:
    """The clip length a model was trained on (its default window): ``default_duration`` (MMAudio and foley-tiny
    8 s, Kling-Foley 10 s), else 8 s (HunyuanVideo-Foley); never above :func:`max_seconds`."""
    try:
        value = float(_get(config, "default_duration"))
    except (TypeError, ValueError):
        value = DEFAULT_TRAINED_SECONDS
    if not (math.isfinite(value) and value > 0):
        value = DEFAULT_TRAINED_SECONDS
    return min(value, max_seconds(config))
