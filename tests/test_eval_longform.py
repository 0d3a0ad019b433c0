"""Long-clip scores: F1 per 10-s span, drift slope, false onsets at window joins, length error."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

import kling_foley_core.data.recordings as recordings
import kling_foley_core.evaluation.longform as L
from kling_foley_core.cli import EXIT_OK, main
from kling_foley_core.data.synthetic import synthetic_bank


def _clip(times, duration=30.0):
    return SimpleNamespace(duration=duration, events=[SimpleNamespace(time=t) for t in times])


def _scores(monkeypatch, ref, est, joins, duration=30.0, samples=None):
    monkeypatch.setattr(L, "detect_onsets", lambda x, sr: np.asarray(est, float))
    audio = {"waveform": np.zeros((2, samples if samples is not None else int(duration * 100))), "sample_rate": 100}
    return L.long_clip_scores([audio], [_clip(ref, duration)], joins)


def test_drift_is_the_slope_of_the_offsets_in_ms_per_minute(monkeypatch):
    ref = np.arange(1.0, 29.0, 0.5)
    est = ref + 0.0005 * ref  # 0.5 ms later per second = 30 ms per minute (inside the ±40 ms match)
    s = _scores(monkeypatch, ref, est, joins=[])
    assert s["drift_ms_per_min"] == pytest.approx(30.0, abs=0.01)
    assert s["window_onset_f1"] == [1.0, 1.0, 1.0] and s["duration_error_s"] == 0.0
    assert _scores(monkeypatch, ref, ref, joins=[])["drift_ms_per_min"] == pytest.approx(0.0, abs=1e-6)


def test_drift_standard_error_is_bootstrapped_over_clips():
    rng = np.random.default_rng(3)
    t = np.tile(np.arange(1.0, 59.0, 0.5), 40)
    owner = np.repeat(np.arange(40), len(t) // 40)
    same = 0.0005 * t  # every clip drifts alike: no spread between clips
    d, se = L._drift(t, same, owner)
    assert d == pytest.approx(30.0, abs=1e-6) and se == pytest.approx(0.0, abs=1e-6)
    noisy = same + rng.normal(0, 0.008, len(t))  # 8 ms of onset scatter
    d, se_40 = L._drift(t, noisy, owner)
    keep = owner < 10
    _, se_10 = L._drift(t[keep], noisy[keep], owner[keep])
    assert abs(d - 30.0) < 4 * se_40 and 0 < se_40 < se_10  # more clips, a tighter estimate
    assert L._drift(t[owner == 0], noisy[owner == 0], owner[owner == 0])[1] is None  # one clip: no bootstrap


def test_span_f1_shows_where_sync_is_lost(monkeypatch):
    ref = np.arange(1.0, 29.0, 1.0)
    est = np.where(ref < 20, ref, ref + 0.2)  # the last span is 200 ms late: nothing matches there
    assert _scores(monkeypatch, ref, est, joins=[])["window_onset_f1"] == [1.0, 1.0, 0.0]


def test_seam_ratio_compares_false_onsets_at_joins_with_elsewhere(monkeypatch):
    ref = [5.0, 15.0]
    joins = [8.0, 14.0, 20.0]  # 0.6 s of seam neighbourhood in 30 s
    est = ref + [8.02, 20.05, 3.0, 25.0]  # two false onsets at joins, two elsewhere
    s = _scores(monkeypatch, ref, est, joins)
    assert s["seam_false_onsets"] == 2 and s["other_false_onsets"] == 2
    assert s["seam_false_onset_ratio"] == pytest.approx((2 / 0.6) / (2 / 29.4), rel=1e-6)
    assert _scores(monkeypatch, ref, ref, joins)["seam_false_onset_ratio"] is None  # no false onset anywhere
    assert _scores(monkeypatch, ref, ref, joins, samples=2999)["duration_error_s"] == pytest.approx(0.01)


def test_a_cross_faded_join_counts_its_whole_stretch_as_seam(monkeypatch):
    ref = [5.0, 15.0]
    zones = [(7.0, 8.0), (13.0, 14.0)]  # 2 × (1 s + 2 × 0.1 s) = 2.4 s of seam neighbourhood
    est = ref + [7.5, 6.95, 25.0]  # inside a fade, just before one (within 0.1 s), and elsewhere
    s = _scores(monkeypatch, ref, est, zones)
    assert s["seam_false_onsets"] == 2 and s["other_false_onsets"] == 1
    assert s["seam_false_onset_ratio"] == pytest.approx((2 / 2.4) / (1 / 27.6), rel=1e-6)


def test_eval_duration_adds_the_long_scores_to_the_json_rows(tmp_path, monkeypatch, capsys, tmp_path_factory):
    bank = synthetic_bank(per_class=4)
    monkeypatch.setattr(recordings, "load_bank", lambda *a, **k: bank)
    monkeypatch.setenv("KLING_FOLEY_DATA", str(tmp_path_factory.mktemp("data")))
    rc = main(["eval", "synthhits", "--model", "tiny", "--n", "2", "--steps", "1", "--duration", "11",
               "--json", str(tmp_path / "r.json")])
    assert rc == EXIT_OK
    out = capsys.readouterr().out
    assert "long clips: 11 s in 2 windows of 10 s" in out
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    model, truth = rows["model:tiny"], rows["ground truth"]
    assert len(model["window_onset_f1"]) == 2 and len(truth["window_onset_f1"]) == 2
    assert model["duration_error_s"] <= 1 / 16000 + 1e-9  # the video's length within one audio sample
    assert truth["duration_error_s"] <= 1 / 44100 + 1e-9 and min(truth["window_onset_f1"]) > 0.5
    assert set(model) >= {"drift_ms_per_min", "seam_false_onset_ratio"}
    assert main(["eval", "synthhits", "--model", "tiny", "--duration", "0.5"]) == 2
    assert "--duration 0.5: give the seconds" in capsys.readouterr().err
