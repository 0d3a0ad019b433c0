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
machine), repeated along the clip. The whitened statistic d(s) = r(s) − (mean of r over the ±``SPAN`` slots around
s) (the host's steady tones and slow spectral changes cancel) is pushed to p·``MARGIN`` where it is not there
already, by scaling the tile's A bins by exp(c/4) and its B bins by exp(−c/4), |c| ≤ 0.6 (±1.3 dB; up to 1.2 on
sparse audio whose mark would score under ``TARGET``, see ``STRENGTHS``). The
change is a scaled copy of the host's own STFT, so it sits under the sound it rides on (masked, no new
frequencies); both channels get the same gains (a downmix keeps the mark). The added signal is limited to
``LIMIT`` of the host's ±5 ms peak, so nothing is spread ahead of an attack and digital silence stays exactly zero.

Detection. d(s, b) of the mono mix, clipped to ±``CLIP`` (onsets cannot dominate) and zeroed on tiles more than
``ACTIVE_DB`` below the loudest, is folded over the period and correlated with the key's pattern at each of the 16
phases and 8 sub-slot alignments (``HYPOTHESES`` = 128: a cut anywhere is found without a sync code). The score of
one alignment is z = Σ p·F / ‖F‖; for audio that does not carry this key's mark the signs are independent of F, so
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
MARGIN = 0.5  # target of the whitened log-ratio statistic, nepers
SPAN = 8  # slots each side of the local mean the statistic is whitened by
PASSES = 2  # a second pass makes up for what the overlap of STFT frames smeared away
STRENGTHS = (0.6, 0.9, 1.2)  # largest change of a tile's log(E_A / E_B): ±1.3, ±2, ±2.6 dB on each set
TARGET = 8.5  # the score an embedding aims for (a 5-s cut of it still clears THRESHOLD)
LIMIT = 0.35  # the added signal never exceeds this fraction of the host's ±5 ms peak
CLIP = 1.0  # whitened statistics are limited to ±CLIP before correlating
ACTIVE_DB = 60.0  # tiles more than this below the loudest tile are ignored
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
    """d = r − (mean of r over the active tiles of the ±``SPAN`` slots around it), per band: the host's slow
    spectral changes and steady tones cancel; zero on inactive tiles."""
    w = active.to(ratio.dtype).T[:, None]  # (bands, 1, slots)
    kernel = torch.ones(1, 1, 2 * SPAN + 1, dtype=ratio.dtype)
    mean = torch.nn.functional.conv1d(ratio.T[:, None] * w, kernel, padding=SPAN) / \
        torch.nn.functional.conv1d(w, kernel, padding=SPAN).clamp(min=1e-9)
    return (ratio - mean[:, 0].T) * active


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
        out = _embed_adaptive(rows, sample_rate, stft, band, side, pattern, key)
        if out is rows:
            return waveform
    else:  # long audio, a chunk at a time (memory bounded), each with a period of context either side; chunks
        # start on whole periods, so the pattern runs on as in one pass
        out = flat.to("cpu", copy=True)
        for a in range(0, n, chunk):
            lo, b = max(0, a - period), min(n, a + chunk)
            part = _embed_adaptive(_rows(flat[:, lo:min(n, b + period)]), sample_rate, stft, band, side, pattern,
                                   key)
            out[:, a:b] = part[:, a - lo: b - lo].to(out.dtype)
    out = out.reshape(x.shape).to(x.dtype)
    return out.numpy() if isinstance(waveform, np.ndarray) else out.to(x.device)


def _embed_adaptive(rows, sample_rate, stft, band, side, pattern, key) -> torch.Tensor:
    """``rows`` with the mark at the weakest strength that scores ``TARGET`` (``rows`` itself when it is too
    short to carry anything, or silent)."""
    if rows.shape[-1] < stft["win_length"] or not rows.abs().max() > 0:
        return rows
    for strength in STRENGTHS:
        out = _embed(rows, sample_rate, stft, band, side, pattern, strength)
        if detect_watermark(out, sample_rate, key=key).score >= TARGET:
            break
    return out


def _embed(rows, sample_rate, stft, band, side, pattern, max_change: float) -> torch.Tensor:
    """``rows`` (R, T) float64 with the mark at one strength (largest log-ratio change ``max_change``)."""
    n = rows.shape[-1]
    out, total = rows, None
    for _ in range(PASSES):
        spec = torch.stft(out, **stft, return_complex=True)  # (R, bins, frames)
        ratio, energy = _slot_ratios(_set_energies(spec.mean(0).abs().square(), band, side))  # the mono mix
        p = _slot_signs(pattern, ratio.shape[0])
        active = energy > energy.max() * 10 ** (-ACTIVE_DB / 10)
        # informed: a tile already at p·MARGIN is left alone, any other pushed just far enough (≤ max_change)
        step = p * (MARGIN - p * _whiten(ratio, active)).clamp(0.0, max_change) * active
        if total is not None:
            step = (total + step).clamp(-max_change, max_change) - total
        total = step if total is None else total + step
        frame_step = step[torch.arange(spec.shape[-1]) // FRAMES_PER_SLOT][:, band.clamp(min=0)].T  # (bins, frames)
        gain = torch.where((band >= 0)[:, None], torch.expm1(0.25 * side[:, None] * frame_step), 0.0)
        out = out + torch.istft(spec * gain, **stft, length=n)
    radius = round(0.005 * sample_rate)
    limit = LIMIT * torch.nn.functional.max_pool1d(rows.abs()[:, None], 2 * radius + 1, 1, radius)[:, 0]
    out = rows + torch.minimum(torch.maximum(out - rows, -limit), limit)
    return out.clamp(-1.0, 1.0) if rows.abs().max() <= 1.0 else out


def detect_watermark(waveform, sample_rate: int, *, key: str = DEFAULT_KEY) -> Detection:
    """Score ``waveform`` ``[..., T]`` (any channels, mixed to mono) for the key's mark; see the module doc."""
    _, rows = _as_rows(waveform, "detect_watermark")
    stft, band, side = _stft_setup(sample_rate)
    mono = rows.mean(0)
    pattern = key_pattern(key)
    best, active_best = 0.0, 0
    if mono.shape[-1] >= stft["win_length"] and mono.abs().max() > 0:
        power = torch.stft(mono, **stft, return_complex=True).abs().square()
        frames = _set_energies(power, band, side)
        # phase k: audio slot s carries pattern row (s + k) mod PERIOD
        phases = torch.stack([torch.roll(pattern, -k, 0) for k in range(PERIOD)])  # (PERIOD, PERIOD, bands)
        for o in range(min(FRAMES_PER_SLOT, frames.shape[0])):
            ratio, energy = _slot_ratios(frames, o)
            d = _whiten(ratio, energy > energy.max() * 10 ** (-ACTIVE_DB / 10)).clamp(-CLIP, CLIP)
            folded = torch.zeros_like(pattern).index_add_(0, torch.arange(ratio.shape[0]) % PERIOD, d)
            norm = folded.norm()
            if norm > 0:
                score = float((phases * folded).sum((1, 2)).max() / norm)
                if score > best:
                    best, active_best = score, int((d != 0).sum())
    return Detection(best, THRESHOLD, active_best, mono.shape[-1] / sample_rate)


SCHEME = "stft-patchwork-1"  # named in the container's provenance tag, so a detector of the right version is used


def provenance_fields(on: bool, key: str = DEFAULT_KEY) -> dict:
    """What the container's provenance tag records about the mark (reuses mux.provenance_tags)."""
    return {"watermark": SCHEME, "watermark_key": key_id(key)} if on else {"watermark": "off"}
