"""``foley-tiny``: the embedded default model, trained on SynthHits by this library's own trainers.

Its parts are the library's classes at small sizes (see :mod:`.components`) plus a learned word-level text
encoder (:mod:`.text_encoder`); :func:`load_default_model` returns them as ``KlingFoleyPipeline(**components)``
takes them. ``TRAINING.md`` records how the shipped weights were made.
"""
from .build import DefaultModelError, default_pipeline, is_available, load_default_model, weights_dir
from .components import FOLEY_TINY, NAME

load_default_pipeline = default_pipeline  # the name the CLI's `eval --model default` imports

__all__ = ["DefaultModelError", "FOLEY_TINY", "NAME", "default_pipeline", "is_available", "load_default_model",
           "load_default_pipeline",
           "weights_dir"]
