"""Training / evaluation data built from real one-shot recordings.

- :mod:`.recordings` fetches real recordings from Debian packages at build time (never committed), trims them to
  their onset, groups them into sound classes and splits each class into train / held-out recordings.
- :mod:`.synthhits` renders Greatest-Hits-like clips: objects striking a surface at known times, with stereo
  audio mixed from those recordings and an exact event list.

Submodules are imported on first use so ``python -m kling_foley_core.data.synthhits`` runs cleanly.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "SOUND_CLASSES": "recordings", "Recording": "recordings", "RecordingBank": "recordings",
    "RecordingsError": "recordings", "RecordingsUnavailableError": "recordings", "classify_name": "recordings",
    "default_cache_dir": "recordings", "load_bank": "recordings", "prepare_recording": "recordings",
    "resample": "recordings", "split_of": "recordings",
    "HitEvent": "synthhits", "SynthHitsClip": "synthhits", "SynthHitsConfig": "synthhits",
    "SynthHitsError": "synthhits", "generate_clip": "synthhits", "generate_clips": "synthhits",
    "load_clips": "synthhits", "write_mp4": "synthhits", "read_mp4": "synthhits",
    "write_shard": "synthhits", "read_shard": "synthhits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
