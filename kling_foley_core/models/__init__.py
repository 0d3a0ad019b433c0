"""Model classes. Submodules are imported lazily so that importing one model never loads the others."""
from __future__ import annotations

import importlib

# public name → submodule that defines it (other model files register theirs here too)
_EXPORTS = {
    "KlingFoleyMMDiT": "mmdit",
    "PreparedConditions": "mmdit",
    "MMDiTInputError": "mmdit",
    "MMDIT_PRESETS": "mmdit_presets",
    "mmdit_config": "mmdit_presets",
    "build_mmdit": "mmdit_presets",
    "DurationEmbedding": "duration",
    "DurationError": "duration",
    "SequenceLengths": "duration",
    "sequence_lengths": "duration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
