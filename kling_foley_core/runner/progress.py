"""Progress reporting for long node work (sampler steps, batched decoding).

``ProgressBar(total)`` is what node code uses. Inside ComfyUI (``comfy.utils`` importable when the bar is
created) it forwards to ``comfy.utils.ProgressBar`` so the node shows its green progress bar in the UI;
headless it draws a tqdm bar on stderr. Either way every update also:

* calls the runner's hook (``set_progress_hook``), so the CLI or a test can observe ``(node_id, value, total)``;
* calls ``check_interrupt()``, exactly like ComfyUI's own progress hook does, so a sampler loop that reports
  progress every step is also interruptible every step.
"""
from __future__ import annotations

import contextvars
import logging
from typing import Callable

from .interrupt import check_interrupt

logger = logging.getLogger(__name__)

ProgressHook = Callable[[str | None, int, int], None]

_HOOK: contextvars.ContextVar[ProgressHook | None] = contextvars.ContextVar("kling_foley_progress_hook", default=None)
_NODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("kling_foley_current_node", default=None)


def set_progress_hook(hook: ProgressHook | None) -> contextvars.Token:
    """Install ``hook(node_id, value, total)``; returns a token for ``reset_progress_hook``."""
    return _HOOK.set(hook)


def reset_progress_hook(token: contextvars.Token) -> None:
    _HOOK.reset(token)


def set_current_node(node_id: str | None) -> contextvars.Token:
    """The runner tells progress reports which node they belong to."""
    return _NODE.set(node_id)


def reset_current_node(token: contextvars.Token) -> None:
    _NODE.reset(token)


def current_node() -> str | None:
    return _NODE.get()


def _comfy_progress_bar_cls():
    try:  # at call time: the same node class runs inside ComfyUI and headless
        import comfy.utils  # type: ignore[import-not-found]

        return getattr(comfy.utils, "ProgressBar", None)
    except Exception:  # noqa: BLE001 - any failure to import ComfyUI means "not inside ComfyUI"
        return None


class ProgressBar:
    """``ProgressBar(total, desc=None)`` with ``update(n)``, ``update_absolute(value, total=None)`` and ``close()``.

    Usable as a context manager. ``use_tqdm=False`` silences the terminal bar (the hook still fires).
    """

    def __init__(self, total: int, desc: str | None = None, *, use_tqdm: bool = True):
        if total < 0:
            raise ValueError(f"ProgressBar total must be >= 0, got {total}")
        self.total = int(total)
        self.current = 0
        self.node_id = _NODE.get()
        self._comfy = None
        self._tqdm = None
        comfy_cls = _comfy_progress_bar_cls()
        if comfy_cls is not None:
            self._comfy = comfy_cls(self.total)
        elif use_tqdm:
            from tqdm.auto import tqdm

            label = desc if desc is not None else (f"node {self.node_id}" if self.node_id else None)
            self._tqdm = tqdm(total=self.total, desc=label, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.update_absolute(self.current + n)

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        if total is not None:
            self.total = int(total)
            if self._tqdm is not None:
                self._tqdm.total = self.total
        value = max(0, min(int(value), self.total)) if self.total else int(value)
        delta = value - self.current
        self.current = value
        if self._comfy is not None:
            self._comfy.update_absolute(value, self.total, preview)
        elif self._tqdm is not None and delta:
            self._tqdm.update(delta)
        hook = _HOOK.get()
        if hook is not None:
            hook(self.node_id, self.current, self.total)
        check_interrupt()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # tqdm bars left open garble the terminal
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
