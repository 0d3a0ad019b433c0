"""Reference recordings for audio-controlled V2A (AC-VTA): hits of one recording of a class, laid out in a short
stereo take. The eval's reference (held-out split, two hits at fixed times) and the training examples' (train
split, hits at drawn times and levels) are both made here, so they sound alike."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .recordings import RecordingBank

__all__ = ["reference_hits"]


def reference_hits(bank: RecordingBank, cls: str, rng: np.random.Generator, sr: int, *, seconds: float = 2.0,
                   split: str = "heldout", times: Sequence[float] = (0.3, 1.2), gain: float = 0.5) -> np.ndarray:
    """A stereo take (2, seconds·sr) at ``sr``: one recording of class ``cls`` from ``split``, drawn with ``rng``,
    struck at each of ``times`` (seconds) with ``gain``; a later hit adds to the tail of an earlier one."""
    recs = bank.select(split, cls)
    if not recs:
        raise ValueError(f"no {split} recording of class {cls!r} in the bank (classes: {', '.join(bank.classes())})")
    rec = recs[int(rng.integers(len(recs)))]
    x = rec.audio
    if rec.sample_rate != sr:
        from ..audio.resample import fft_resample_array

        x = fft_resample_array(x, rec.sample_rate, sr)
    out = np.zeros(int(seconds * sr), np.float32)
    for t in times:
        i = int(t * sr)
        seg = x[: max(0, len(out) - i)]
        out[i:i + len(seg)] += gain * seg
    return np.stack([out, out])
