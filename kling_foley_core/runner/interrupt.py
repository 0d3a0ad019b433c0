"""Cooperative interruption shared by the runner and node code.

Node code calls ``check_interrupt()`` between sampler steps (cheap: one Event lookup). Inside ComfyUI the same
call defers to ComfyUI's own flag (``comfy.model_management``), so the *Cancel* button works; headless, the
runner's ``interrupt()`` (e.g. from a signal handler or another thread) sets a process-wide ``threading.Event``.
ComfyUI is detected at call time through ``sys.modules`` so this module never imports it (and never triggers
its import-time device setup when ComfyUI is not running).
"""
from __future__ import annotations

import sys
import threading

from .errors import ProcessingInterrupted

_EVENT = threading.Event()


def interrupt() -> None:
    """Ask running work to stop at its next ``check_interrupt()``."""
    _EVENT.set()


def clear_interrupt() -> None:
    """Reset the flag (the runner does this at the start of every run)."""
    _EVENT.clear()


def is_interrupted() -> bool:
    return _EVENT.is_set()


def check_interrupt() -> None:
    """Raise if an interrupt was requested: ComfyUI's exception inside ComfyUI, ``ProcessingInterrupted`` otherwise."""
    mm = sys.modules.get("comfy.model_management")
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()
    if _EVENT.is_set():
        raise ProcessingInterrupted()
