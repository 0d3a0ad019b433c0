"""``foley-tiny``: the embedded default model, trained on SynthHits by this library's own trainers.

Its parts are the library's classes at small sizes (see :mod:`.components`) plus a learned word-level text
encoder (:mod:`.text_encoder`); :func:`load_default_model` returns them as ``KlingFoleyPipeline(**components)``
takes them. ``TRAINING.md`` records how the shipped weights were made.

Names are resolved on first use, so ``python -m kling_foley_core.default_model.build`` runs cleanly.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DefaultModelError": "build", "default_pipeline": "build", "is_available": "build",
    "load_default_model": "build", "weights_dir": "build", "FOLEY_TINY": "components", "NAME": "components",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
