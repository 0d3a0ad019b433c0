"""Window planner for clips longer than one model run (Foley extension over a whole video).

A model generates at most its trained length in one run (foley-tiny and MMAudio 8 s, Kling-Foley 10 s,
HunyuanVideo-Foley 8 s). A longer clip is cut into windows no longer than that, each overlapping the one before by
at least ``overlap`` seconds. The overlap is the next window's Foley-extension context (FoleyGenEx §3): the
previous window's latents over its first half are *known* frames, so the new window continues the sound instead of
starting afresh; over the second half (``BLEND``) the two windows' latents are cross-faded, so whatever the new
window makes just after its known frames (a click, a doubled hit) enters at low weight. The windows are joined in
latent space (one decode, no waveform crossfade).

Window starts are multiples of the Synchformer stride (8 frames at 25 fps = 0.32 s). The sync tokens of a window
are then exactly the tokens of the whole clip from that window's first sync segment on, and every start is an
absolute time (``k · 0.32 s``), so rounding never accumulates into drift however many windows there are.

    plan = plan_windows(75.0, window=8.0, overlap=2.0)
    for w in plan.windows:   # Window(index, start, end, context): context = seconds shared with the window before
        ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..limits import MIN_SECONDS, SYNC_FPS

SYNC_STRIDE_SECONDS = 8 / SYNC_FPS  # one Synchformer hop (0.32 s): the grid window starts lie on
DEFAULT_OVERLAP = 2.0
BLEND = 0.5  # of each overlap, this fraction is cross-faded in latent space; the rest is held as known context
_EPS = 1e-6

__all__ = ["BLEND", "DEFAULT_OVERLAP", "SYNC_STRIDE_SECONDS", "Window", "WindowError", "WindowPlan", "plan_windows"]


class WindowError(ValueError):
    """A window plan that cannot work (names the parameter, the value and the fix)."""


@dataclass(frozen=True)
class Window:
    """One model run: ``[start, end)`` seconds of the clip; its first ``context`` seconds are the previous
    window's audio (0 for the first window)."""

    index: int
    start: float
    end: float
    context: float
    total: float  # the whole clip's seconds

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def seconds_start(self) -> float:
        """Where the window starts in the clip (Kling-Foley's duration embedding)."""
        return self.start

    @property
    def seconds_total(self) -> float:
        """The window's own length: what the model generates in this run."""
        return self.seconds

    @property
    def join(self) -> float | None:
        """Where the previous window's audio ends (this window's alone from here on); None for the first."""
        return None if self.index == 0 else self.start + self.context

    @property
    def hold(self) -> float:
        """Seconds of the previous window's audio this window is given as known context: the first
        ``1 - BLEND`` of the overlap. Over the rest, up to :attr:`join`, the two windows are cross-faded."""
        return self.context * (1.0 - BLEND)


@dataclass(frozen=True)
class WindowPlan:
    duration: float
    window: float
    overlap: float
    windows: tuple[Window, ...]

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def joins(self) -> list[float]:
        """Seconds where one window's new audio follows the previous window's (len(windows) - 1 of them)."""
        return [w.join for w in self.windows[1:]]

    @property
    def join_zones(self) -> list[tuple[float, float]]:
        """``(start, end)`` of each join: from where the next window generates freely (the end of its held
        context) to where the previous window's audio ends; between them the two are cross-faded."""
        return [(w.start + w.hold, w.join) for w in self.windows[1:]]


def _floor_grid(t: float, q: float) -> float:
    return math.floor(t / q + _EPS) * q


def _ceil_grid(t: float, q: float) -> float:
    return math.ceil(t / q - _EPS) * q


def plan_windows(duration: float, window: float, overlap: float = DEFAULT_OVERLAP, *,
                 grid: float = SYNC_STRIDE_SECONDS) -> WindowPlan:
    """Cover ``[0, duration)`` with windows of at most ``window`` seconds overlapping by at least ``overlap``.

    A clip no longer than ``window`` is one window. Otherwise windows start every ``window - overlap`` seconds
    (rounded down to the ``grid``), and the last one is placed to end at the clip's end (its context, the part
    already generated, is then longer than ``overlap``). Raises :class:`WindowError` for values that cannot work.
    """
    for name, v in (("duration", duration), ("window_seconds", window), ("overlap_seconds", overlap)):
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise WindowError(f"{name}={v!r} must be a finite number of seconds")
    duration, window, overlap = float(duration), float(window), float(overlap)
    if duration < MIN_SECONDS - _EPS:
        raise WindowError(f"duration={duration:g} s is shorter than one sync window ({MIN_SECONDS:g} s = 16 frames "
                          f"at 25 fps); give a clip of at least {MIN_SECONDS:g} s")
    if window < 2 * MIN_SECONDS + grid:
        raise WindowError(f"window_seconds={window:g} is too short; give at least {2 * MIN_SECONDS + grid:g} s "
                          f"(the model's trained length is best)")
    if duration <= window + _EPS:
        return WindowPlan(duration, window, overlap, (Window(0, 0.0, duration, 0.0, duration),))
    if not MIN_SECONDS - _EPS <= overlap <= window / 2 + _EPS:
        raise WindowError(f"overlap_seconds={overlap:g} must be between {MIN_SECONDS:g} s (one sync window) and "
                          f"half of window_seconds ({window / 2:g} s); 2 s is a good default")
    hop = _floor_grid(window - overlap, grid)  # ≥ window / 2 - grid > 0 by the checks above
    starts = [0.0]
    while starts[-1] + window < duration - _EPS:
        nxt = round(starts[-1] + hop, 9)
        last = round(_ceil_grid(duration - window, grid), 9)  # the window that ends at the clip's end
        if nxt >= last - _EPS:
            starts.append(max(last, starts[-1] + grid))
            break
        starts.append(nxt)
    windows = []
    for i, s in enumerate(starts):
        end = min(s + window, duration)
        context = 0.0 if i == 0 else windows[-1].end - s
        windows.append(Window(i, s, end, round(context, 9), duration))
    return WindowPlan(duration, window, overlap, tuple(windows))
