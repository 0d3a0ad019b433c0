"""A small trained vocoder with an inverse-STFT head (after Vocos, Siuzdenko 2023, arXiv:2306.00814).

Log-mel ``(B, n_mels, F)`` → waveform ``(B, F · hop)``, the interface of the library's other vocoders
(``.sample_rate``, ``.hop_length``, ``.n_mels``, ``.mel_config()``).

Why this design for the default model: a HiFi-GAN/BigVGAN generator upsamples by 256 through transposed
convolutions and runs its widest layers at the audio rate, so on a CPU it costs far more than the rest of a small
model; here every layer runs at the *frame* rate (62.5 frames/s at 16 kHz) and one inverse FFT per frame makes the
samples. The network predicts, per frame, the log-magnitude and the phase of each STFT bin of the mel's own
``n_fft``/``hop``; the waveform is their inverse STFT (Hann window, overlap-add).

Layers: a 7-tap convolution from the mel to ``dim`` channels, LayerNorm, ``num_layers`` ConvNeXt blocks (7-tap
depthwise convolution, LayerNorm, pointwise ``dim → intermediate_dim → dim`` with GELU, learned per-channel layer
scale, residual), LayerNorm, a linear layer to ``3 · (n_fft/2 + 1)`` values: the first third is each bin's
log-magnitude *relative to the mel's own level* (the mel bands' energies spread over the bins they cover, so the
untrained network already starts from the right loudness; a plain head would have to learn a level range of 12
nats one Adam step at a time), the other two a 2-vector per bin whose direction is the phase. (Vocos predicts the angle itself; a
near-zero angle everywhere at initialisation makes every frame a centred pulse, a buzz at the frame rate that
takes many steps to leave, while the normalised 2-vector starts as random phases — noise of the right spectrum —
and has no wrap-around, which matters for a vocoder trained in an hour of CPU.)

Framing: the mel front-end puts frame ``k`` at sample ``k·hop + hop/2`` (``audio/mel.py``); the inverse STFT is
centred (frame ``k`` at ``k·hop``) and its output shifted by ``hop/2``, as the Griffin-Lim fallback does.

Saved with ``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``); a pipeline folder
names it in ``model_index.json`` as ``["kling_foley_core.models.vocoder_vocos", "VocosVocoder"]``. Trained by
``python -m kling_foley_core.training.train_vocoder``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from kling_foley_core.audio.mel import MelConfig, mel_preset
from kling_foley_core.models.vocoder_bigvgan import VocoderInputError

__all__ = ["VocosVocoder", "ConvNeXtBlock", "check_vocoder_fits"]

CHUNK_SECONDS = 30.0  # longer audio is rendered in chunks of this length (bounded memory on long clips)


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv → LayerNorm → pointwise MLP (GELU) → layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int = 7, layer_scale: float = 0.1):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, F)
        y = self.dwconv(x).transpose(1, 2)  # (B, F, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosVocoder(ModelMixin, ConfigMixin):
    """Mel → waveform by ConvNeXt blocks and an inverse-STFT head. See the module docstring.

    ``mel``: the front-end the log-mels come from (a preset name or a :class:`MelConfig` dict); the head's STFT uses
    its ``n_fft``, ``hop_length`` and ``win_length``.
    """

    reports_chunks = True  # forward(..., callback=) reports its chunks (generation.vocode, the Vocode node)

    @register_to_config
    def __init__(self, mel: str | dict = "16k", dim: int = 128, intermediate_dim: int = 384, num_layers: int = 6,
                 kernel_size: int = 7, layer_scale: float = 0.1):
        super().__init__()
        if isinstance(mel, MelConfig):
            self.register_to_config(mel=mel.to_dict())
        try:
            self.mel = mel_preset(mel) if isinstance(mel, str) else MelConfig(**mel) if isinstance(mel, dict) else mel
        except (TypeError, ValueError) as e:
            raise VocoderInputError(f"VocosVocoder: mel={mel!r} is not a mel front-end ({e}); use '16k', '44k' or "
                                    f"a MelConfig dict") from None
        if not isinstance(self.mel, MelConfig):
            raise VocoderInputError(f"VocosVocoder: mel must be a MelConfig or a preset name, got {mel!r}")
        if dim < 1 or intermediate_dim < 1 or num_layers < 0 or kernel_size < 1 or kernel_size % 2 == 0:
            raise VocoderInputError(f"VocosVocoder: need dim, intermediate_dim >= 1, num_layers >= 0 and an odd "
                                    f"kernel_size, got {dim}, {intermediate_dim}, {num_layers}, {kernel_size}")
        c = self.mel
        self.n_bins = c.n_fft // 2 + 1
        self.embed = nn.Conv1d(c.n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, kernel_size, layer_scale)
                                    for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 3 * self.n_bins)
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        spread, offset = mel_to_bin_log_magnitude(c)
        self.register_buffer("bin_from_mel", spread, persistent=False)  # (K, M), rebuilt from the config on load
        self.register_buffer("bin_offset", offset, persistent=False)  # (K, 1)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

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

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, M, F)`` → complex STFT ``(B, n_fft/2+1, F)`` the head predicts."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)  # (B, C, F)
        for block in self.blocks:
            x = block(x)
        out = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)  # (B, 2K, F)
        logmag, re, im = out.float().split([self.n_bins, self.n_bins, self.n_bins], dim=1)
        ln_mel = mel.float() * (math.log(10.0) if self.mel.log_base == "10" else 1.0)  # natural-log mel energies
        logmag = logmag + torch.matmul(self.bin_from_mel, ln_mel) - self.bin_offset  # residual over the mel's level
        mag = torch.exp(logmag.clamp(max=8.0))
        norm = torch.sqrt(re * re + im * im + 1e-9)  # the phase as a unit phasor: no wrap-around in its gradient
        return torch.complex(mag * re / norm, mag * im / norm)

    def receptive_frames(self) -> int:
        """How many mel frames on each side one output frame's spectrum depends on (the embedding's 7 taps and each
        block's depthwise kernel), plus the two frames either side the inverse STFT overlaps."""
        k = self.blocks[0].dwconv.kernel_size[0] if len(self.blocks) else 1
        return 3 + len(self.blocks) * (k // 2) + self.mel.n_fft // (2 * self.mel.hop_length)

    def forward(self, mel: torch.Tensor, *, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Log-mel ``(B, M, F)`` → ``(B, F·hop)``. Audio longer than ``CHUNK_SECONDS`` is rendered a chunk at a time,
        each with ``receptive_frames`` of mel context either side, so memory stays bounded on long clips and the
        samples equal one pass over the whole mel (up to float rounding). ``callback(done, total)`` after each
        chunk."""
        c = self.mel
        if not torch.is_tensor(mel) or mel.ndim != 3 or mel.shape[1] != c.n_mels or mel.shape[-1] < 1:
            shape = tuple(mel.shape) if torch.is_tensor(mel) else type(mel).__name__
            raise VocoderInputError(f"VocosVocoder: mel must be (B, {c.n_mels}, frames) log-mel of the "
                                    f"{c.sampling_rate} Hz front-end, got {shape}")
        frames, hop = mel.shape[-1], c.hop_length
        chunk = max(1, int(CHUNK_SECONDS * c.sampling_rate / hop))
        margin = self.receptive_frames()
        if frames <= chunk + 2 * margin:
            wave = self._render(mel)
            if callback is not None:
                callback(1, 1)
            return wave
        out = torch.empty(mel.shape[0], frames * hop, dtype=mel.dtype if mel.is_floating_point() else torch.float32,
                          device=mel.device)
        total = math.ceil(frames / chunk)
        for i, s in enumerate(range(0, frames, chunk)):
            e = min(frames, s + chunk)
            a, b = max(0, s - margin), min(frames, e + margin)
            out[:, s * hop: e * hop] = self._render(mel[..., a:b])[:, (s - a) * hop: (e - a) * hop]
            if callback is not None:
                callback(i + 1, total)
        return out

    def _render(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.mel
        frames = mel.shape[-1]
        spec = self.spectrum(mel.to(self.embed.weight.dtype))
        # One more frame than the mel so the centred inverse STFT reaches F·hop samples (the last one only shapes
        # the final hop), as the Griffin-Lim fallback does.
        spec = torch.cat([spec, spec[..., -1:]], dim=-1)
        wave = torch.istft(spec, c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                           window=self.window.to(spec.real.dtype), center=True, length=frames * c.hop_length)
        half = c.hop_length // 2
        wave = F.pad(wave, (half, 0))[..., :frames * c.hop_length]  # frame k ↔ sample k·hop + hop/2
        return wave.to(mel.dtype if mel.is_floating_point() else torch.float32)

    def extra_repr(self) -> str:
        return f"sr={self.sample_rate}, hop={self.hop_length}, n_mels={self.n_mels}"


def mel_to_bin_log_magnitude(c: MelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-magnitude every STFT bin would have if each mel band were flat: ``(K, M)`` weights spreading the
    bands' natural-log energies over the bins (each bin's filter weights, normalised to sum 1; a bin no filter
    covers takes its nearest band) and the ``(K, 1)`` offset ``Σ_m spread[k, m] · ln(Σ_k' filters[m, k'])``, since a
    band of flat magnitude ``a`` reads ``a · Σ_k' filters[m, k']``."""
    import numpy as np

    from kling_foley_core.audio.mel import slaney_mel_filters

    fil = slaney_mel_filters(c.sampling_rate, c.n_fft, c.n_mels, c.f_min, c.f_max).astype(np.float64)  # (M, K)
    spread = fil.T.copy()  # (K, M)
    empty = spread.sum(axis=1) <= 0
    if empty.any():
        centres = np.argmax(fil, axis=1)  # (M,) the bin at each filter's peak
        for k in np.nonzero(empty)[0]:
            spread[k, int(np.argmin(np.abs(centres - k)))] = 1.0
    spread /= spread.sum(axis=1, keepdims=True)
    offset = spread @ np.log(np.maximum(fil.sum(axis=1), 1e-12))
    return torch.from_numpy(spread).float(), torch.from_numpy(offset).float()[:, None]


def _layout(m: MelConfig) -> str:
    return (f"{m.sampling_rate} Hz, {m.n_mels} mels, n_fft {m.n_fft}, hop {m.hop_length}, "
            f"{m.f_min:g}-{m.f_max:g} Hz, log{m.log_base}")


def check_vocoder_fits(vocoder, mel: MelConfig | str, *, what: str = "vocoder", of: str = "VAE") -> None:
    """Raise :class:`VocoderInputError` (one line, naming both layouts) when ``vocoder`` expects another mel
    front-end than ``mel`` (the VAE's): another sample rate, mel count, STFT or log base."""
    want = mel_preset(mel) if isinstance(mel, str) else mel
    get = getattr(vocoder, "mel_config", None)
    have = get() if callable(get) else None
    if have is None:
        if int(getattr(vocoder, "n_mels", want.n_mels)) != want.n_mels or \
                int(getattr(vocoder, "sample_rate", want.sampling_rate)) != want.sampling_rate:
            raise VocoderInputError(f"{what} expects {vocoder.sample_rate} Hz, {vocoder.n_mels} mels but the {of} "
                                    f"makes {_layout(want)}; use a vocoder trained on the {of}'s mel")
        return
    keys = ("sampling_rate", "n_mels", "n_fft", "hop_length", "win_length", "f_min", "f_max", "log_base")
    if any(getattr(have, k) != getattr(want, k) for k in keys):
        raise VocoderInputError(f"{what} expects {_layout(have)} but the {of} makes {_layout(want)}; use a vocoder "
                                f"trained on the {of}'s mel")
