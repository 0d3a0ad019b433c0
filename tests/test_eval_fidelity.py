"""Fidelity columns: loudness and decay errors of hits, log-spectral / mel distance, bandwidth, on known signals."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kling_foley_core.data.synthetic import synthetic_bank
from kling_foley_core.data.synthhits import HitEvent, SynthHitsClip, SynthHitsConfig, generate_clip
from kling_foley_core.evaluation import GROUND_TRUTH, evaluate_clips, evaluation_table
from kling_foley_core.evaluation.fidelity import (bandwidth_hz, decay_time, other_recordings_audio,
                                                  spectral_distances, true_decay)
from kling_foley_core.evaluation.metrics import OTHER_RECORDINGS

SR = 44100
TIMES = (0.3, 1.1, 1.9)


def hits(tau: float, times=TIMES, dur: float = 2.8, seed: int = 0) -> np.ndarray:
    """Stereo noise bursts at ``times`` decaying as exp(-t / tau), peak about 0.4."""
    rng = np.random.default_rng(seed)
    n = int(dur * SR)
    x = np.zeros(n)
    for t in times:
        s = int(t * SR)
        m = n - s
        x[s:] += 0.4 * rng.uniform(-1, 1, m) * np.exp(-np.arange(m) / (tau * SR))
    return np.stack([x, x]).astype(np.float32)


def clip_of(audio: np.ndarray, times=TIMES) -> SynthHitsClip:
    events = [HitEvent(time=t, sound_class="wood", pan=0.0, gain=0.4, object_id=0) for t in times]
    return SynthHitsClip(clip_id="c", frames=np.zeros((1, 8, 8, 3), np.uint8), audio=audio, sample_rate=SR, fps=25,
                         events=events, caption="", duration=audio.shape[-1] / SR)


def test_louder_copy_scores_plus_6_db_and_quieter_minus_6():
    true = hits(0.05)
    clip = clip_of(true)
    up = evaluate_clips([2 * true], [clip])
    down = evaluate_clips([0.5 * true], [clip])
    same = evaluate_clips([true], [clip])
    assert up.loudness_error_db == pytest.approx(20 * math.log10(2), abs=0.05)
    assert down.loudness_error_db == pytest.approx(-20 * math.log10(2), abs=0.05)
    assert up.loudness_abs_error_db == pytest.approx(6.02, abs=0.05)
    assert same.loudness_error_db == pytest.approx(0.0, abs=1e-6)
    # a uniform gain changes every log-spectral bin by the same 6 dB, every log10-mel by log10(2)
    assert up.log_spectral_distance == pytest.approx(6.02, abs=0.2)
    assert up.mel_distance == pytest.approx(math.log10(2), abs=0.01)
    assert same.log_spectral_distance == pytest.approx(0.0, abs=1e-9)


def test_true_decay_scores_isolated_hits_whose_tail_falls_before_the_next_event():
    times = np.array([0.3, 0.4, 1.1, 1.9])
    audio = hits(0.05, times=tuple(times))
    got = true_decay(audio, SR, times, 1.1)
    assert got is not None
    window, t = got
    assert window == pytest.approx(0.8)  # to the next event
    assert t == pytest.approx(3.454 * 0.05, rel=0.12)
    assert true_decay(audio, SR, times, 0.4) is None  # 0.1 s after another hit: not isolated
    long = hits(1.0, times=tuple(times))
    assert true_decay(long, SR, times, 1.1) is None  # the tail runs into the next hit: not scored for anyone


def test_decay_time_of_an_exponential():
    # 30 dB below the peak after 30 / (20 log10 e) · tau = 3.45 tau
    for tau in (0.02, 0.05, 0.1):
        t, fell = decay_time(hits(tau, times=(0.2,)), SR, 0.2, 1.2)
        assert fell
        assert t == pytest.approx(3.454 * tau, rel=0.12)
    t, fell = decay_time(hits(0.5, times=(0.2,)), SR, 0.2, 0.6)
    assert not fell and t == pytest.approx(0.4)


def test_faster_decay_gives_its_relative_error():
    clip = clip_of(hits(0.08))
    fast = evaluate_clips([hits(0.04, seed=1)], [clip])
    slow = evaluate_clips([hits(0.16, seed=2)], [clip])
    assert fast.decay_hits == 3
    assert fast.decay_error == pytest.approx(-0.5, abs=0.1)
    assert slow.decay_error == pytest.approx(1.0, abs=0.2)
    assert evaluate_clips([clip.audio], [clip]).decay_error == pytest.approx(0.0, abs=1e-9)


def test_true_tails_longer_than_the_gap_are_not_scored():
    clip = clip_of(hits(0.4))  # 30 dB takes 1.4 s, longer than the 0.8 s between hits
    rep = evaluate_clips([hits(0.05)], [clip])
    assert rep.decay_hits == 0 and math.isnan(rep.decay_error)


def test_bandwidth_of_white_and_band_limited_noise():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((1, SR))
    assert bandwidth_hz(white, SR) == pytest.approx(0.99 * SR / 2, rel=0.02)
    spec = np.fft.rfft(white[0])
    spec[np.fft.rfftfreq(SR, 1 / SR) > 4000] = 0
    low = np.fft.irfft(spec, SR)[None]
    assert 3800 < bandwidth_hz(low, SR) <= 4010


def test_noise_moves_the_spectral_distances():
    true = hits(0.05)
    rng = np.random.default_rng(3)
    noisy = true + 0.01 * rng.standard_normal(true.shape).astype(np.float32)
    lsd_n, mel_n = spectral_distances(noisy, true, SR)
    lsd_m, mel_m = spectral_distances(noisy * 0 + 0.1 * rng.standard_normal(true.shape), true, SR)
    assert 0 < lsd_n < lsd_m and 0 < mel_n < mel_m


def test_other_recordings_row_keeps_events_and_changes_the_sound():
    bank = synthetic_bank(per_class=3)
    cfg = SynthHitsConfig(size=48, min_duration=2.0, max_duration=3.0)
    clips = [generate_clip(bank, seed=5, index=i, split="heldout", config=cfg, with_hits=True) for i in range(4)]
    other = other_recordings_audio(clips, bank)
    assert all(o.shape == c.audio.shape for o, c in zip(other, clips))
    table, reports = evaluation_table({}, clips, bank=bank)
    by = {r.name: r for r in reports}
    assert by[OTHER_RECORDINGS].onset_f1 > 0.8
    assert by[OTHER_RECORDINGS].log_spectral_distance > by[GROUND_TRUTH].log_spectral_distance + 1.0
    assert "fidelity to the true audio" in table and OTHER_RECORDINGS in table.split("fidelity")[1]


def test_level_slope_reads_the_dynamics_of_the_hits():
    def varied(gains_db, seed=0):
        rng = np.random.default_rng(seed)
        n = int(2.8 * SR)
        x = np.zeros(n)
        for t, g in zip(TIMES, gains_db):
            s = int(t * SR)
            x[s:] += 0.3 * 10 ** (g / 20) * rng.uniform(-1, 1, n - s) * np.exp(-np.arange(n - s) / (0.05 * SR))
        return np.stack([x, x]).astype(np.float32)

    clip = clip_of(varied([-6, 0, -12]))
    same = evaluate_clips([clip.audio], [clip])
    wider = evaluate_clips([varied([-12, 0, -24], seed=1)], [clip])  # twice the recorded spread of levels
    flat = evaluate_clips([varied([-6, -6, -6], seed=2)], [clip])  # the level ignores the strike
    assert same.level_slope == pytest.approx(1.0, abs=1e-6)
    assert wider.level_slope == pytest.approx(2.0, abs=0.15)
    assert abs(flat.level_slope) < 0.15
    two = clip_of(hits(0.05, times=TIMES[:2]), times=TIMES[:2])
    assert math.isnan(evaluate_clips([two.audio], [two]).level_slope)  # two hits fit no slope
