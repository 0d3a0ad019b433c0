"""The window planner: any duration → windows no longer than the model's, overlapping, on the sync grid."""
import math

import pytest

from kling_foley_core.sampling.windows import SYNC_STRIDE_SECONDS, WindowError, plan_windows


def _on_grid(t: float) -> bool:
    k = t / SYNC_STRIDE_SECONDS
    return abs(k - round(k)) < 1e-6


@pytest.mark.parametrize("duration", [8.0, 8.01, 10.5, 14.0, 60.0, 61.37, 300.0, 36000.0])
@pytest.mark.parametrize("window,overlap", [(8.0, 2.0), (10.0, 2.0), (8.0, 0.64), (15.0, 4.0)])
def test_windows_cover_the_clip_within_the_model_length(duration, window, overlap):
    plan = plan_windows(duration, window, overlap)
    ws = plan.windows
    assert ws[0].start == 0.0 and ws[0].context == 0.0
    assert ws[-1].end == pytest.approx(duration)
    for prev, w in zip(ws, ws[1:]):
        assert w.seconds <= window + 1e-6
        assert _on_grid(w.start)
        assert prev.start < w.start < prev.end  # overlapping, moving forward
        assert w.context == pytest.approx(prev.end - w.start)
        assert w.context >= overlap - 1e-6
        assert w.join == pytest.approx(prev.end)
        assert w.end > prev.end  # every window adds new audio
    assert len(plan.joins) == len(ws) - 1
    # windows start every (window - overlap) seconds on the grid: the count grows linearly with the duration
    hop = math.floor((window - overlap) / SYNC_STRIDE_SECONDS + 1e-6) * SYNC_STRIDE_SECONDS
    assert len(ws) <= max(1, math.ceil((duration - overlap) / hop)) + 1


def test_a_clip_within_one_window_is_one_window():
    plan = plan_windows(5.0, 8.0, 2.0)
    assert len(plan) == 1 and plan.windows[0].seconds == 5.0 and plan.joins == []
    assert plan_windows(8.0, 8.0, 2.0).windows[0].end == 8.0


def test_window_timing_fields():
    plan = plan_windows(20.0, 8.0, 2.0)
    w = plan.windows[1]
    assert w.seconds_start == w.start and w.seconds_total == pytest.approx(w.end - w.start)
    assert w.total == 20.0


@pytest.mark.parametrize("kwargs,name", [
    (dict(duration=0.3, window=8.0, overlap=2.0), "duration=0.3"),
    (dict(duration=30.0, window=1.0, overlap=0.5), "window_seconds=1"),
    (dict(duration=30.0, window=8.0, overlap=0.2), "overlap_seconds=0.2"),
    (dict(duration=30.0, window=8.0, overlap=5.0), "overlap_seconds=5"),
    (dict(duration=float("nan"), window=8.0, overlap=2.0), "duration=nan"),
])
def test_bad_plans_are_one_line_errors(kwargs, name):
    with pytest.raises(WindowError, match=name) as e:
        plan_windows(**kwargs)
    assert "\n" not in str(e.value)
