"""How long a clip one generation may cover: the one place both bounds are decided.

The shortest is one Synchformer window (16 frames at 25 fps = 0.64 s; every model family reads sync features).
The longest is the model's: its config's ``max_duration`` (the range of its duration embedding and its positional
tables). The Sampler enforces it and the headless runner checks it before any model loads, both through
:func:`max_seconds`; windowed generation of longer clips relaxes the limit here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SYNC_WINDOW_FRAMES = 16
SYNC_FPS = 25
MIN_SECONDS = SYNC_WINDOW_FRAMES / SYNC_FPS
DEFAULT_MAX_SECONDS = 30.0  # a config that does not say (MMAudio's policy value)


def max_seconds(config: Any) -> float:
    """The longest clip a model with this config (an object or a dict) generates in one run."""
    value = config.get("max_duration") if isinstance(config, Mapping) else getattr(config, "max_duration", None)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DEFAULT_MAX_SECONDS
    return value if math.isfinite(value) and value > 0 else DEFAULT_MAX_SECONDS
