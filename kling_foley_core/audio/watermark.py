"""A keyed, inaudible provenance watermark for generated audio (Kling-Foley §8), and its detector.

No watermark model's weights can be had here (AudioSeal, WavMark and SilentCipher download theirs), so this is a
classical keyed scheme: **patchwork in the STFT domain** (Bender et al. 1996, "Techniques for data hiding", IBM
Systems Journal 35(3/4): raise the energy of one keyed set of coefficients, lower another's, test the difference)
on time-frequency tiles with ±1 chips, detected by normalised correlation as in spread-spectrum audio
watermarking (Cox et al. 1997, "Secure spread spectrum watermarking for multimedia", IEEE TIP 6(12); Kirovski &
Malvar 2003, "Spread-spectrum watermarking of audio signals", IEEE TSP 51(4)), with informed embedding (Malvar &
Florêncio 2003, "Improved spread spectrum", IEEE TSP 51(4): a tile already carrying its chip is left alone).

Tiles. Time is cut into slots of ``SLOT`` = 64 ms, and 125-6875 Hz (below 7 kHz, so the mark survives 16 kHz
resampling) into the 20 bands of ``BAND_EDGES``. Inside a band, STFT bins alternate
between set A and set B every ``TOOTH`` = 125 Hz. A tile's statistic is r = log(E_A / E_B), the log ratio of the
two sets' energies: it ignores gain, and a codec or resampler that keeps the spectral envelope keeps it.

Embedding. A key gives each of ``PERIOD`` = 16 slots × 20 bands a sign p = ±1 (SHA-256 bits, the same on every
machine), repeated along the clip. The whitened statistic d(s) = r(s) − m(s), m the band's mean r over the active
tiles of the ±``LOCAL`` slots (0.19 s) around s, shrunk towards its mean over ±``SPAN`` slots (64 s) with the weight
of ``PRIOR`` = 2 tiles: a tail or a steady sound is whitened by its own neighbourhood (its tones and slow spectral
changes cancel), an isolated hit, with few active tiles near it, by the long mean, so its own mark is not cancelled
(scheme 1's plain mean over ±0.5 s cancelled most of it). d is pushed to p·``MARGIN`` where it is not there already,
by scaling the tile's A bins by exp(c/4) and its B bins by exp(−c/4), in ``PASSES`` = 4 rounds of analysis and
resynthesis (they make up for what overlapping STFT frames smear). |c| ≤ 0.6 (±1.3 dB) where that suffices: every
``REGION`` = 5-s window of the clip (and the clip itself) whose mark would score under ``TARGET`` is marked again
at the next of ``STRENGTHS``, up to 2.0 (±4.3 dB), so a second of sound in a quiet clip carries a mark as firm as
a busy clip's. The change is a scaled copy of the host's own STFT, so it sits under the sound it rides on
(masked, no new frequencies); both channels get the same gains (a downmix keeps the mark). The added signal is
limited to ``LIMIT`` of the host's ±5 ms peak, so nothing is spread ahead of an attack and digital silence stays
exactly zero.

Detection. d(s, b) of the mono mix, clipped to ±``CLIP`` (onsets and the host's own contrasts cannot dominate) and
zeroed on tiles more than ``ACTIVE_DB`` = 75 dB below the loudest (quiet tails carry much of the mark), is folded
over the period and correlated with the key's pattern at each of the 16 phases and 8 sub-slot alignments
(``HYPOTHESES`` = 128: a cut anywhere is found without a sync code). The score of one alignment is
z = Σ p·F / ‖F‖; for audio that does not carry this key's mark the signs are independent of F, so
by Hoeffding's inequality P(z ≥ t) ≤ exp(−t²/2), and ``THRESHOLD`` = 5.5 bounds the false-positive rate of the
whole search by 128·exp(−15.1) < 0.004 %.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DEFAULT_KEY", "THRESHOLD", "Detection", "WatermarkError", "detect_watermark", "embed_watermark", "key_id"]

DEFAULT_KEY = "kling-foley"
SLOT = 0.064  # seconds per tile
FRAMES_PER_SLOT = 8  # STFT hop = 8 ms; also the detector's alignment step
WINDOW = 0.032  # STFT window, seconds
PERIOD = 16  # slots before the pattern repeats (1.024 s)
TOOTH = 125.0  # Hz: a band's bins alternate between set A and set B every TOOTH Hz
BAND_EDGES = (125, 375, 625, 875, 1125, 1375, 1625, 1875, 2125, 2375, 2625, 2875, 3125, 3375, 3875, 4375, 4875,
              5375, 5875, 6375, 6875)  # Hz: 20 bands of 2 or 4 teeth
MARGIN = 0.7  # target of the whitened log-ratio statistic, nepers
SPAN = 1000  # slots (64 s) each side of the long per-band mean the statistic is whitened by
LOCAL = 3  # slots (0.19 s) each side of the local mean
PRIOR = 2.0  # the long mean counts as this many active tiles in the local one
PASSES = 4  # later passes make up for what the overlap of STFT frames smeared away
STRENGTHS = (0.6, 0.9, 1.2, 1.6, 2.0)  # largest change of a tile's log(E_A / E_B): ±1.3 ... ±4.3 dB on each set
TARGET = 8.5  # the score an embedding aims for, over the clip and over each REGION-second window of it
REGION = 5.0  # seconds
LIMIT = 0.35  # the added signal never exceeds this fraction of the host's ±5 ms peak
CLIP = 0.5  # whitened statistics are limited to ±CLIP before correlating
ACTIVE_DB = 75.0  # tiles more than this below the loudest tile are ignored
HYPOTHESES = PERIOD * FRAMES_PER_SLOT
THRESHOLD = 5.5
CHUNK_PERIODS = 30  # long audio is marked 30 pattern periods (30.7 s) at a time, so memory stays bounded


class WatermarkError(ValueError):
    """Bad input to the watermark functions (shape, sample rate, key)."""


@dataclass(frozen=True)
class Detection:
    """Result of :func:`detect_watermark`: the mark is present when ``score >= threshold``."""

    score: float  # best normalised correlation (a z-score) over all alignments
    threshold: float
    active_tiles: int  # tiles loud enough to carry the mark
    seconds: float

    @property
    def present(self) -> bool:
        return self.score >= self.threshold

    @property
    def false_positive_bound(self) -> float:
        """Upper bound on the chance that unmarked audio scores this high (Hoeffding + union over alignments)."""
        return min(1.0, HYPOTHESES * math.exp(-0.5 * max(self.score, 0.0) ** 2))


def key_id(key: str = DEFAULT_KEY) -> str:
    """A short public name for a key (8 hex digits of a SHA-256), safe to store in files."""
    return hashlib.sha256(("id:" + key).encode()).hexdigest()[:8]


def key_pattern(key: str = DEFAULT_KEY) -> torch.Tensor:
    """The key's signs, ``(PERIOD, bands)`` of ±1, from SHA-256 counter-mode bits."""
    if not isinstance(key, str) or not key:
        raise WatermarkError(f"watermark key must be a non-empty string, got {key!r}")
    n = PERIOD * (len(BAND_EDGES) - 1)
    stream = b"".join(hashlib.sha256(f"pattern:{key}:{i}".encode()).digest() for i in range(-(-n // 256)))
    bits = np.unpackbits(np.frombuffer(stream, np.uint8))[:n]
    return torch.from_numpy(2.0 * bits - 1.0).reshape(PERIOD, -1)


def _stft_setup(sample_rate) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """torch.stft's arguments at this rate (a ``WINDOW`` Hann window, FFT size the next power of two, hop
    ``SLOT / FRAMES_PER_SLOT``), each bin's band (-1 outside the marked range) and set (+1 A, -1 B)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or \
            sample_rate < 2 * BAND_EDGES[-1]:
        raise WatermarkError(f"sample_rate={sample_rate!r}: need an integer of at least {2 * BAND_EDGES[-1]} Hz")
    win = round(WINDOW * sample_rate)
    n_fft = 1 << (win - 1).bit_length()  # a power of two: several times faster than an FFT of 1411 (44.1 kHz)
    stft = dict(n_fft=n_fft, hop_length=round(SLOT / FRAMES_PER_SLOT * sample_rate), win_length=win,
                window=torch.hann_window(win, dtype=torch.float64), center=True)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    band = torch.bucketize(freqs, torch.tensor(BAND_EDGES, dtype=torch.float64), right=True) - 1
    band[(freqs < BAND_EDGES[0]) | (freqs >= BAND_EDGES[-1])] = -1
    side = 1.0 - 2.0 * ((freqs / TOOTH).floor() % 2)
    return stft, band, side


def _as_rows(waveform, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The input as a tensor and as float64 rows ``(channels, T)``."""
    x = _checked(waveform, what)
    return x, _rows(x.detach().reshape(-1, x.shape[-1]))


def _rows(flat: torch.Tensor) -> torch.Tensor:
    return flat.to("cpu", torch.float64)


def _checked(waveform, what: str) -> torch.Tensor:
    """The input as a tensor: a finite float waveform ``[..., samples]``."""
    x = torch.as_tensor(waveform)
    if not x.is_floating_point() or x.ndim == 0 or x.shape[-1] == 0:
        raise WatermarkError(f"{what}: need a float waveform [..., samples] with samples > 0, got "
                             f"{tuple(x.shape)} {x.dtype}")
    if not torch.isfinite(x).all():
        raise WatermarkError(f"{what}: the waveform holds NaN or infinite samples")
    return x


def _power(spec: torch.Tensor) -> torch.Tensor:
    """|spec|² of a complex STFT (faster than abs().square())."""
    return spec.real.square() + spec.imag.square()


def _set_energies(power: torch.Tensor, band: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Energies of each band's A and B bins per STFT frame, ``(frames, 2, bands)``, from power ``(bins, frames)``."""
    member = torch.zeros(2, len(BAND_EDGES) - 1, band.shape[0], dtype=power.dtype)
    keep = band >= 0
    idx = torch.nonzero(keep)[:, 0]
    member[(side[keep] < 0).long(), band[keep], idx] = 1.0
    return torch.einsum("sbk,kf->fsb", member, power)


def _slot_ratios(frames: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """log(E_A / E_B) per slot and band ``(slots, bands)`` and the slots' total energies, slot s holding frames
    ``offset + 8s ... offset + 8s + 7`` (a last partial slot is kept)."""
    f = frames[offset:]
    n_slots = -(-f.shape[0] // FRAMES_PER_SLOT)
    f = torch.nn.functional.pad(f, (0, 0, 0, 0, 0, n_slots * FRAMES_PER_SLOT - f.shape[0]))
    tiles = f.reshape(n_slots, FRAMES_PER_SLOT, *f.shape[1:]).sum(1)  # (slots, 2, bands)
    floor = tiles.sum(1).max() * 1e-12 + 1e-300
    return torch.log(tiles[:, 0] + floor) - torch.log(tiles[:, 1] + floor), tiles.sum(1)


def _whiten(ratio: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """d = r − m, per band, m the mean of r over the active tiles of the ±``LOCAL`` slots around the tile shrunk
    towards their mean over ±``SPAN`` slots with the weight of ``PRIOR`` tiles (a long stretch of sound, a tail,
    is whitened by its own slots; an isolated hit, with few active slots near it, by the long mean, so its own mark
    is not cancelled); zero on inactive tiles."""
    w = active.to(ratio.dtype)

    def window_sum(v, span):  # sum over slots s-span ... s+span, by cumulative sums (any span at the same cost)
        c = torch.nn.functional.pad(v.cumsum(0), (0, 0, 1, 0))
        n = v.shape[0]
        return c[torch.arange(n).add(span + 1).clamp(max=n)] - c[torch.arange(n).sub(span).clamp(min=0)]

    rw = ratio * w
    long_mean = window_sum(rw, SPAN) / window_sum(w, SPAN).clamp(min=1e-9)
    mean = (window_sum(rw, LOCAL) + PRIOR * long_mean) / (window_sum(w, LOCAL) + PRIOR)
    return (ratio - mean) * active


def _slot_signs(pattern: torch.Tensor, n_slots: int) -> torch.Tensor:
    """The key's sign for each slot and band, ``(slots, bands)``: slot s carries pattern row s mod PERIOD."""
    return pattern[torch.arange(n_slots) % PERIOD]


def embed_watermark(waveform, sample_rate: int, *, key: str = DEFAULT_KEY):
    """``waveform`` ``[..., T]`` with the key's mark added: same shape, dtype, device and type (tensor or numpy).

    The weakest strength of ``STRENGTHS`` whose mark scores ``TARGET`` is used (sparse audio, with few tiles to
    carry the mark, gets a stronger one). Silence stays exactly silent; the result is clipped to [-1, 1] when the
    input lies within it.
    """
    x = _checked(waveform, "embed_watermark")
    stft, band, side = _stft_setup(sample_rate)
    pattern = key_pattern(key)
    period = stft["hop_length"] * FRAMES_PER_SLOT * PERIOD  # samples of one pattern period
    flat = x.detach().reshape(-1, x.shape[-1])
    n, chunk = flat.shape[-1], CHUNK_PERIODS * period
    if n <= chunk + 2 * period:
        rows = _rows(flat)
        out = _embed_adaptive(rows, sample_rate, stft, band, side, pattern)
        if out is rows:
            return waveform
    else:  # long audio, a chunk at a time (memory bounded), each with a period of context either side; chunks
        # start on whole periods, so the pattern runs on as in one pass
        out = flat.to("cpu", copy=True)
        for a in range(0, n, chunk):
            lo, b = max(0, a - period), min(n, a + chunk)
            part = _embed_adaptive(_rows(flat[:, lo:min(n, b + period)]), sample_rate, stft, band, side, pattern)
            out[:, a:b] = part[:, a - lo: b - lo].to(out.dtype)
    out = out.reshape(x.shape).to(x.dtype)
    return out.numpy() if isinstance(waveform, np.ndarray) else out.to(x.device)


def _embed_adaptive(rows, sample_rate, stft, band, side, pattern) -> torch.Tensor:
    """``rows`` with the mark at the weakest strength of ``STRENGTHS`` that scores ``TARGET``, chosen region by
    region: every ``REGION``-second window (on whole pattern periods) that scores under it, and the whole clip if
    it does, gets the next strength, so a short stretch of sound in a long quiet clip is marked as firmly as a busy
    one (``rows`` itself when it is too short to carry anything, or silent)."""
    if rows.shape[-1] < stft["win_length"] or not rows.abs().max() > 0:
        return rows
    n_slots = -(-(rows.shape[-1] // stft["hop_length"] + 1) // FRAMES_PER_SLOT)
    width = round(REGION / SLOT)  # slots per window
    starts = range(0, max(1, n_slots - width + PERIOD), PERIOD)
    level = torch.zeros(n_slots, dtype=torch.long)  # index into STRENGTHS per slot
    strengths = torch.tensor(STRENGTHS, dtype=rows.dtype)
    radius = round(0.005 * sample_rate)  # the added signal never exceeds LIMIT of the host's ±5 ms peak
    limit = LIMIT * torch.nn.functional.max_pool1d(rows.abs()[:, None], 2 * radius + 1, 1, radius)[:, 0]
    while True:
        out = _embed(rows, stft, band, side, pattern, strengths[level][:, None], limit)
        frames = _set_energies(_power(torch.stft(out.mean(0), **stft, return_complex=True)), band, side)
        weak = torch.zeros(n_slots, dtype=torch.bool)
        if _score(frames, pattern, (0,))[0] < TARGET:
            weak[:] = True
        elif n_slots > width:
            for s0 in starts:
                window = frames[s0 * FRAMES_PER_SLOT:(s0 + width) * FRAMES_PER_SLOT]
                if _score(window, pattern, (0,))[0] < TARGET:
                    weak[s0:s0 + width] = True
        weak &= level < len(STRENGTHS) - 1
        if not weak.any():
            return out
        level[weak] += 1


def _embed(rows, stft, band, side, pattern, max_change: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """``rows`` (R, T) float64 with the mark at the given strength per slot (``max_change`` (slots, 1): the
    largest change of each tile's log-ratio), the added signal within ±``limit`` (R, T)."""
    n = rows.shape[-1]
    out, total = rows, None
    for _ in range(PASSES):
        spec = torch.stft(out, **stft, return_complex=True)  # (R, bins, frames)
        mono = spec[0] if len(spec) == 1 else sum(spec.unbind(0)) / len(spec)  # the mono mix's spectrum
        ratio, energy = _slot_ratios(_set_energies(_power(mono), band, side))
        p = _slot_signs(pattern, ratio.shape[0])
        active = energy > energy.max() * 10 ** (-ACTIVE_DB / 10)
        # informed: a tile already at p·MARGIN is left alone, any other pushed just far enough (≤ max_change)
        step = p * torch.minimum((MARGIN - p * _whiten(ratio, active)).clamp(min=0.0), max_change) * active
        if total is not None:
            step = torch.minimum(torch.maximum(total + step, -max_change), max_change) - total
        total = step if total is None else total + step
        frame_step = step[torch.arange(spec.shape[-1]) // FRAMES_PER_SLOT][:, band.clamp(min=0)].T  # (bins, frames)
        gain = torch.where((band >= 0)[:, None], torch.expm1(0.25 * side[:, None] * frame_step), 0.0)
        out = out + torch.istft(spec * gain, **stft, length=n)
    out = rows + torch.minimum(torch.maximum(out - rows, -limit), limit)
    return out.clamp(-1.0, 1.0) if rows.abs().max() <= 1.0 else out


def detect_watermark(waveform, sample_rate: int, *, key: str = DEFAULT_KEY) -> Detection:
    """Score ``waveform`` ``[..., T]`` (any channels, mixed to mono) for the key's mark; see the module doc."""
    _, rows = _as_rows(waveform, "detect_watermark")
    stft, band, side = _stft_setup(sample_rate)
    mono = rows.mean(0)
    best, active = 0.0, 0
    if mono.shape[-1] >= stft["win_length"] and mono.abs().max() > 0:
        frames = _set_energies(_power(torch.stft(mono, **stft, return_complex=True)), band, side)
        best, active = _score(frames, key_pattern(key), range(min(FRAMES_PER_SLOT, frames.shape[0])))
    return Detection(best, THRESHOLD, active, mono.shape[-1] / sample_rate)


def _score(frames: torch.Tensor, pattern: torch.Tensor, offsets) -> tuple[float, int]:
    """The best score over the pattern's phases and the given sub-slot ``offsets`` of STFT ``frames``
    ``(frames, 2, bands)``, and the number of active tiles at that alignment."""
    phases = torch.stack([torch.roll(pattern, -k, 0) for k in range(PERIOD)])  # phase k: slot s carries row s+k
    best, active_best = 0.0, 0
    for o in offsets:
        ratio, energy = _slot_ratios(frames, o)
        d = _whiten(ratio, energy > energy.max() * 10 ** (-ACTIVE_DB / 10)).clamp(-CLIP, CLIP)
        folded = torch.zeros_like(pattern).index_add_(0, torch.arange(ratio.shape[0]) % PERIOD, d)
        norm = folded.norm()
        if norm > 0:
            score = float((phases * folded).sum((1, 2)).max() / norm)
            if score > best:
                best, active_best = score, int((d != 0).sum())
    return best, active_best


SCHEME = "stft-patchwork-2"  # named in the container's provenance tag, so a detector of the right version is used


def provenance_fields(on: bool, key: str = DEFAULT_KEY) -> dict:
    """What the container's provenance tag records about the mark (reuses mux.provenance_tags)."""
    return {"watermark": SCHEME, "watermark_key": key_id(key)} if on else {"watermark": "off"}
