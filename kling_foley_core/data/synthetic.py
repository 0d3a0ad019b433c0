"""A tiny synthetic recording bank (no download): decaying tones and noise bursts, one recipe per class.

For tests and smoke runs of anything built on :class:`~.recordings.RecordingBank` (SynthHits, the timbre
classifier, training loops). The sounds go through :func:`~.recordings.prepare_recording` exactly like real
recordings (leading silence trimmed, resampled, peak-normalised), so the same code paths are exercised.
"""
from __future__ import annotations

import numpy as np

from .recordings import RecordingBank, prepare_recording

# class -> (kind, base frequency Hz, decay time constant s)
RECIPES: dict[str, tuple[str, float, float]] = {
    "wood_knock": ("tone", 900.0, 0.03),
    "cymbal": ("noise_hp", 6000.0, 0.25),
    "kick": ("tone", 60.0, 0.15),
    "snare": ("noise_tone", 200.0, 0.08),
    "bell": ("tone", 2200.0, 0.4),
}


def synthetic_sound(kind: str, freq: float, decay: float, sr: int, rng: np.random.Generator,
                    seconds: float = 0.35) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    env = np.exp(-t / decay)
    if kind == "tone":
        f = freq * rng.uniform(0.9, 1.1)
        x = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 2.7 * f * t)
    elif kind == "noise_hp":
        n = rng.standard_normal(len(t))
        x = np.diff(n, prepend=0.0)  # first difference: energy towards the top of the spectrum
    elif kind == "noise_tone":
        x = 0.6 * rng.standard_normal(len(t)) + np.sin(2 * np.pi * freq * rng.uniform(0.9, 1.1) * t)
    else:
        raise ValueError(f"unknown synthetic sound kind {kind!r}")
    return (x * env).astype(np.float32)


def synthetic_bank(*, classes: tuple[str, ...] | None = None, per_class: int = 4, sample_rate: int = 44100,
                   source_rate: int | None = None, seed: int = 0, heldout_fraction: float = 0.5) -> RecordingBank:
    """``per_class`` recordings for each class, each with 2–20 ms of leading silence to be trimmed.

    ``source_rate`` (default: ``sample_rate``) is the rate the sounds are synthesised at, so a test can route
    them through the resampler. Each recording is its own group, so the split is by name hash.
    """
    classes = tuple(classes or RECIPES)
    rng = np.random.default_rng(seed)
    src = source_rate or sample_rate
    recs = []
    for cls in classes:
        kind, freq, decay = RECIPES[cls]
        for k in range(per_class):
            lead = np.zeros(int(rng.uniform(0.002, 0.02) * src), np.float32)
            audio = np.concatenate([lead, synthetic_sound(kind, freq, decay, src, rng)])
            recs.append(prepare_recording(f"synthetic/{cls}_{k}.wav", audio, src, sound_class=cls,
                                          target_rate=sample_rate, group=f"synthetic/{cls}_{k}",
                                          source="synthetic", licence="CC0"))
    return RecordingBank.from_recordings(recs, heldout_fraction=heldout_fraction)
