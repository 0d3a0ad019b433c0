"""Weight-free fallback vocoder: log-mel → linear magnitude (non-negative least squares) → fast Griffin-Lim.

It has the interface of :class:`~kling_foley_core.models.vocoder_bigvgan.BigVGANVocoder` (``vocoder(mel (B,
n_mels, F)) -> waveform (B, F · hop)``, ``.sample_rate``, ``.hop_length``, ``.n_mels``), so a graph runs end to end
before any vocoder checkpoint is downloaded, and a test can listen to a pipeline without 122 M parameters. It
sounds like Griffin-Lim (phasey, smeared transients); it is a fallback, not a substitute for BigVGAN.

1. **Undo the log**: ``10**mel`` (16 kHz mode, log10) or ``exp(mel)`` (44.1 kHz mode, natural log); values at the
   front-end's floor (1e-5) come back as 1e-5, i.e. silence.
2. **Mel → linear magnitude**: the mel filters ``M`` (Slaney scale and norm, the same matrix the library's front-end
   uses; equal to ``transformers.audio_utils.mel_filter_bank(..., norm="slaney", mel_scale="slaney")`` within 1e-9) map
   ``n_fft/2+1`` bins onto far fewer bands, so the inverse is under-determined. Start from the pseudo-inverse
   (clamped at 0) and refine it with multiplicative NNLS updates ``S ← S · (Mᵀ m) / (Mᵀ M S)``, which keep
   ``S ≥ 0`` and decrease ``‖M S − m‖²`` monotonically (Lee & Seung); ``mel_inverse="pinv"`` skips the
   refinement.
3. **Phase**: fast Griffin-Lim (Perraudin, Balazs & Søndergaard 2013): alternate the magnitude constraint and
   STFT consistency, with the momentum step ``t_n = c_n + α (c_n − c_{n−1})`` (α = ``momentum``; 0 gives the
   classic algorithm). The initial phase is random from a ``torch.Generator`` (seeded, so results repeat).

Framing. The library's front-end pads ``(n_fft − hop)/2`` on each side and runs an uncentred STFT, so mel frame
``k`` is centred on sample ``k·hop + hop/2``. Griffin-Lim here runs a centred STFT on the signal shifted by
``hop/2``, which puts its frames at exactly those centres; the first ``hop/2`` samples of the output are silent.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from kling_foley_core.audio.mel import MelConfig, mel_preset, slaney_mel_filters
from kling_foley_core.models.vocoder_bigvgan import VocoderInputError

log = logging.getLogger(__name__)

__all__ = ["GriffinLimVocoder", "mel_to_magnitude", "griffin_lim"]

CHUNK_SECONDS = 30.0  # Griffin-Lim runs over at most this much audio at once (memory bounded for long clips)
OVERLAP_SECONDS = 1.0  # each chunk continues the previous one's phases over this much, crossfaded


def mel_to_magnitude(mel_power: torch.Tensor, filters: torch.Tensor, *, method: Literal["nnls", "pinv"] = "nnls",
                     n_iter: int = 30, pinv: torch.Tensor | None = None) -> torch.Tensor:
    """Linear mel energies ``(N, M, F)`` → non-negative STFT magnitudes ``(N, n_fft//2+1, F)``.

    ``filters`` is the ``(M, n_fft//2+1)`` mel matrix the mel was made with; ``pinv`` its pseudo-inverse when
    already computed.
    """
    if method not in ("nnls", "pinv"):
        raise VocoderInputError(f"mel_inverse={method!r} is unknown: use 'nnls' or 'pinv'")
    pinv = torch.linalg.pinv(filters) if pinv is None else pinv  # (K, M)
    mag = torch.matmul(pinv, mel_power).clamp(min=0.0)  # (N, K, F)
    if method == "pinv":
        return mag
    # Multiplicative updates stay positive only from a positive start: lift exact zeros slightly.
    mag = mag + 1e-3 * mel_power.amax(dim=1, keepdim=True).clamp(min=1e-8)
    numer = torch.matmul(filters.T, mel_power)  # (N, K, F)  Mᵀ m, constant across iterations
    for _ in range(n_iter):
        # Mᵀ(M S) rather than (MᵀM) S: M has far fewer rows than columns, so this is the cheaper order
        mag = mag * numer / (torch.matmul(filters.T, torch.matmul(filters, mag)) + 1e-12)
    return mag


def griffin_lim(magnitude: torch.Tensor, *, n_fft: int, hop_length: int, win_length: int, length: int,
                n_iter: int = 32, momentum: float = 0.99, generator: torch.Generator | None = None,
                initial_phase: torch.Tensor | None = None, return_phase: bool = False):
    """Fast Griffin-Lim: a waveform ``(N, length)`` whose centred STFT magnitude approximates ``magnitude``.

    ``magnitude`` is ``(N, n_fft//2+1, frames)`` for a centred STFT of ``length`` samples
    (``frames = 1 + length // hop_length``). ``initial_phase`` (unit complex, ``(N, K, m)``) fixes the phase of the
    first ``m`` frames throughout (a chunk continuing its predecessor's phase); ``return_phase`` also returns the
    final unit phases ``(N, K, frames)``.
    """
    if not 0.0 <= momentum < 1.0:
        raise VocoderInputError(f"griffin_lim: momentum={momentum} must be in [0, 1) (0.99 is the usual choice)")
    if n_iter < 0:
        raise VocoderInputError(f"griffin_lim: n_iter={n_iter} must be >= 0")
    window = torch.hann_window(win_length, device=magnitude.device, dtype=magnitude.dtype)
    stft_args = dict(n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window, center=True)

    def to_wave(spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, length=length, **stft_args)  # (N, length)

    def to_spec(wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, pad_mode="reflect", return_complex=True, **stft_args)  # (N, K, frames)

    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    # one random start shared by every row: the channels of a stereo pair (vocoded as rows) then settle on
    # matching phases and stay coherent (independent starts left L and R correlated at only 0.06)
    phase = torch.rand((1, *magnitude.shape[1:]), generator=gen, device=gen.device, dtype=torch.float32)
    angles = torch.polar(torch.ones_like(phase), 2 * torch.pi * phase).to(magnitude.device).expand(
        magnitude.shape).clone()  # (N, K, frames)
    if initial_phase is not None:
        angles[..., : initial_phase.shape[-1]] = initial_phase.to(angles)
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = to_spec(to_wave(magnitude * angles))  # consistency projection c_n
        accelerated = rebuilt + momentum * (rebuilt - previous)  # t_n = c_n + α (c_n − c_{n−1})
        previous = rebuilt
        angles = accelerated / accelerated.abs().clamp(min=1e-16)  # keep the phase, drop the magnitude
        if initial_phase is not None:  # known phases stay: the chunk fits itself to its predecessor
            angles[..., : initial_phase.shape[-1]] = initial_phase.to(angles)
    wave = to_wave(magnitude * angles)
    return (wave, angles) if return_phase else wave


class GriffinLimVocoder(ModelMixin, ConfigMixin):
    """Log-mel ``(B, n_mels, F)`` → waveform ``(B, F · hop)``, no weights. See the module docstring.

    ``mel``: the front-end the log-mels came from, a :class:`~kling_foley_core.audio.mel.MelConfig` or a preset
    name (``"44k"``: natural log, ``"16k"``: log10). ``n_iter``/``momentum``: Griffin-Lim iterations and the
    fast-GLA momentum. ``mel_inverse``: ``"nnls"`` (default) or ``"pinv"``. ``seed``: initial random phase when
    no generator is passed to :meth:`forward`.
    """

    reports_chunks = True  # forward(..., callback=) reports its chunks (generation.vocode, the Vocode node)

    @register_to_config
    def __init__(self, mel: MelConfig | str | dict = "44k", *, n_iter: int = 32, momentum: float = 0.99,
                 mel_inverse: Literal["nnls", "pinv"] = "nnls", nnls_iter: int = 30, seed: int = 0):
        super().__init__()
        if isinstance(mel, MelConfig):  # stored as a plain dict so save_pretrained can write config.json
            self.register_to_config(mel=mel.to_dict())
        self.mel = mel_preset(mel) if isinstance(mel, str) else MelConfig(**mel) if isinstance(mel, dict) else mel
        if not isinstance(self.mel, MelConfig):
            raise VocoderInputError(f"GriffinLimVocoder: mel must be a MelConfig or a preset name, got {mel!r}")
        if mel_inverse not in ("nnls", "pinv"):
            raise VocoderInputError(f"GriffinLimVocoder: mel_inverse={mel_inverse!r} is unknown: use 'nnls' or 'pinv'")
        if not 0.0 <= momentum < 1.0 or n_iter < 0:
            raise VocoderInputError(f"GriffinLimVocoder: need n_iter >= 0 and 0 <= momentum < 1, got "
                                    f"n_iter={n_iter}, momentum={momentum}")
        self.n_iter, self.momentum, self.mel_inverse, self.nnls_iter, self.seed = (
            n_iter, momentum, mel_inverse, nnls_iter, seed)
        c = self.mel
        filters = torch.from_numpy(slaney_mel_filters(c.sampling_rate, c.n_fft, c.n_mels, c.f_min, c.f_max))
        self.register_buffer("filters", filters, persistent=False)  # (M, K), rebuilt from the config on load
        self.register_buffer("filters_pinv", torch.linalg.pinv(filters.double()).float(), persistent=False)  # (K, M)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder: str | None = None, **_):
        """Rebuild from ``config.json`` alone: the vocoder has no weights (its filters derive from the config)."""
        from pathlib import Path

        folder = Path(pretrained_model_name_or_path) / (subfolder or "")
        return cls.from_config(cls.load_config(folder)).eval()

    @property
    def sample_rate(self) -> int:
        return int(self.mel.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(self.mel.hop_length)

    @property
    def n_mels(self) -> int:
        return int(self.mel.n_mels)

    def mel_config(self) -> MelConfig:
        return self.mel

    def magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, M, F)`` → estimated linear STFT magnitude ``(B, n_fft//2+1, F)``."""
        c = self.mel
        mel = mel.to(device=self.filters.device, dtype=torch.float32)
        power = torch.pow(10.0, mel) if c.log_base == "10" else torch.exp(mel)  # (B, M, F)
        return mel_to_magnitude(power, self.filters, method=self.mel_inverse, n_iter=self.nnls_iter,
                                pinv=self.filters_pinv)

    def forward(self, mel: torch.Tensor, *, generator: torch.Generator | None = None,
                callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """``callback(done, total)`` after each chunk of ``CHUNK_SECONDS`` (one call for shorter audio)."""
        c = self.mel
        if not torch.is_tensor(mel) or mel.ndim != 3 or mel.shape[1] != c.n_mels or mel.shape[-1] < 1:
            shape = tuple(mel.shape) if torch.is_tensor(mel) else type(mel).__name__
            raise VocoderInputError(f"GriffinLimVocoder: mel must be (B, {c.n_mels}, frames) log-mel of the "
                                    f"{c.sampling_rate} Hz front-end, got {shape}")
        frames = mel.shape[-1]
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        shifted = self._phase(mel, gen, callback)  # (B, F·hop), sample n ↔ output sample n + hop/2
        half = c.hop_length // 2
        wave = torch.nn.functional.pad(shifted, (half, 0))[..., :frames * c.hop_length]  # (B, F·hop)
        return wave.clamp(-1.0, 1.0).to(mel.dtype if mel.is_floating_point() else torch.float32)

    def _griffin_lim(self, mel: torch.Tensor, gen: torch.Generator, initial_phase=None, next_frame=None):
        """Griffin-Lim of one span of log-mel frames: (waveform (B, F·hop), final phases (B, K, F + 1))."""
        c = self.mel
        mag = self.magnitude(mel if next_frame is None else torch.cat([mel, next_frame], -1))  # (B, K, F [+1])
        if next_frame is None:  # a centred STFT of F·hop samples has F + 1 frames: repeat the last one (it only
            mag = torch.cat([mag, mag[..., -1:]], dim=-1)  # shapes the final hop)
        return griffin_lim(mag, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                           length=mel.shape[-1] * c.hop_length, n_iter=self.n_iter, momentum=self.momentum,
                           generator=gen, initial_phase=initial_phase, return_phase=True)

    def _phase(self, mel: torch.Tensor, gen: torch.Generator, callback=None) -> torch.Tensor:
        """Griffin-Lim over the whole mel, in chunks of ``CHUNK_SECONDS`` for long audio so memory stays bounded
        (one pass over a 10-minute stereo clip would hold gigabytes of spectra). Each chunk overlaps the previous
        one by ``OVERLAP_SECONDS``, starts from its final phases there (so the two agree) and is crossfaded into
        it with a raised cosine; audio up to one chunk long takes the single pass it always did."""
        frames, hop = mel.shape[-1], self.mel.hop_length
        rate = self.mel.sampling_rate / hop
        chunk, overlap = int(CHUNK_SECONDS * rate), int(OVERLAP_SECONDS * rate)
        if frames <= chunk:
            wave = self._griffin_lim(mel, gen)[0]
            if callback is not None:
                callback(1, 1)
            return wave
        out = torch.zeros(mel.shape[0], frames * hop, dtype=torch.float32, device=mel.device)
        total = 1 + math.ceil((frames - chunk) / (chunk - overlap))
        start, prev, done = 0, None, 0  # prev: (the previous chunk's start, its final phases)
        while start < frames:
            end = min(frames, start + chunk)
            init = None if prev is None else prev[1][..., start - prev[0]: start - prev[0] + overlap]
            wave, phases = self._griffin_lim(mel[..., start:end], gen, init,
                                             mel[..., end:end + 1] if end < frames else None)
            if prev is None:
                out[:, : wave.shape[-1]] = wave
            else:
                n = overlap * hop
                ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, n, device=wave.device))
                a = start * hop
                out[:, a: a + n] = out[:, a: a + n] * (1 - ramp) + wave[:, :n] * ramp
                out[:, a + n: a + wave.shape[-1]] = wave[:, n:]
            done += 1
            if callback is not None:
                callback(done, total)
            if end == frames:
                break
            prev, start = (start, phases), end - overlap
        return out

    def extra_repr(self) -> str:
        return (f"sr={self.sample_rate}, hop={self.hop_length}, n_mels={self.n_mels}, n_iter={self.n_iter}, "
                f"momentum={self.momentum}, mel_inverse={self.mel_inverse}")
