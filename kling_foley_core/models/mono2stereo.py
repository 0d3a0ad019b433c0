"""Mono2Stereo (Kling-Foley §4.6): left/right log-mels from the mono log-mel by predicted ratio masks.

Kling-Foley generates a monaural mel, then "converts [it] into dual-channel mel-spectrograms. Critically, this
module only predicts the ratio of the left and right mel-spectrograms relative to the monaural mel-spectrogram",
which "significantly reduces data dependency and enhances training stability". Each channel then goes through
the vocoder on its own and the two waveforms are stacked.

Contract
--------
Input
    ``mono``  (B, n_mels, F) log-mel of the library's front-end (``log_base`` "e": natural log, 44.1 kHz mode;
    "10": log10, 16 kHz mode), floor ``log(clip_val)``.
    ``video`` (B, N, video_dim), optional: per-frame visual features over the same time span (any frame rate N;
    they are linearly resampled to the F mel frames). With ``video_features="sync"`` they are instead Synchformer
    tokens in the encoder's window-major order (8 per 16-frame window, stride 8); they are put in time order and
    interpolated at each mel frame's time (``frame_rate`` mel frames per second), so the module sees *which*
    object touches something *when*, not only where objects are. Only used when the model was built with ``video_dim > 0``;
    if such a model gets no video, a learned "no video" embedding stands in (like the empty conditions of CFG).
Output
    :class:`StereoMel` with ``left``, ``right`` (B, n_mels, F) log-mels in the input's base and floor, and ``pan``
    (B, n_mels, F) ∈ [0, 1] (0 = hard left, 0.5 = centre, 1 = hard right), one value per mel bin and frame, so
    sources in different bands can sit at different positions.

Masks. The network predicts the pan ``p``; the pan law turns it into two gains that multiply the mono mel in the
*linear* domain (a gain ``g`` is ``+log g`` in the log domain; the result is clamped to the front-end's floor):

* ``"constant_power"`` (default): ``g_L = √2·cos(πp/2)``, ``g_R = √2·sin(πp/2)``. ``g_L² + g_R² = 2`` for
  every ``p``, and a centred source keeps its mono loudness in each channel (``g = 1``).
* ``"linear"``: ``g_L = 2(1 − p)``, ``g_R = 2p``; ``(L + R)/2 = mono`` exactly, the inverse of the usual mean
  downmix — use it when the mono training input is the mean of the two channels.

The output layer starts at zero, so an untrained model outputs ``p = 0.5``: both channels equal the mono mel.

Training: :meth:`Mono2Stereo.loss` (L1 between predicted and true left/right log-mels, which is the relative error of
the ratio masks); :func:`stereo_training_example` makes (mono, left, right) log-mels from a stereo waveform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = ["Mono2StereoError", "StereoMel", "Mono2Stereo", "MONO2STEREO_PRESETS", "pan_gains",
           "resample_frames", "mono2stereo_loss", "stereo_training_example"]


class Mono2StereoError(ValueError):
    """Bad input to Mono2Stereo (shape, mel bands, video features, unknown option)."""


@dataclass
class StereoMel:
    """Left and right log-mels ``(B, M, F)`` and the pan mask ``(B, M, F)`` they were made with."""

    left: torch.Tensor
    right: torch.Tensor
    pan: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """``(B, 2, M, F)``: channel 0 left, channel 1 right (ComfyUI's AUDIO channel order)."""
        return torch.stack([self.left, self.right], dim=1)

    def vocode(self, vocoder) -> torch.Tensor:
        """Both channels through one vocoder in a single batch → stereo waveform ``(B, 2, F·hop)`` (0 = left).

        ``vocoder`` is any library vocoder (``mel (N, M, F) -> (N, T)``: BigVGAN, Griffin-Lim).
        """
        batch = self.left.shape[0]
        wave = vocoder(torch.cat([self.left, self.right], dim=0))  # (2B, T)
        return torch.stack([wave[:batch], wave[batch:]], dim=1)  # (B, 2, T)


MONO2STEREO_PRESETS: dict[str, dict] = {
    "44k": dict(n_mels=128, log_base="e"),
    "16k": dict(n_mels=80, log_base="10"),
    "tiny": dict(n_mels=16, hidden_dim=32, num_layers=2, kernel_size=3, video_dim=8, log_base="e"),
}

PAN_LAWS = ("constant_power", "linear")


def pan_gains(pan: torch.Tensor, law: str = "constant_power") -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right linear gains for pan positions ``p`` ∈ [0, 1] (both 1 at the centre ``p = 0.5``)."""
    if law == "constant_power":
        angle = pan * (math.pi / 2)
        return math.sqrt(2.0) * torch.cos(angle), math.sqrt(2.0) * torch.sin(angle)
    if law == "linear":
        return 2.0 * (1.0 - pan), 2.0 * pan
    raise Mono2StereoError(f"pan_law={law!r} is unknown: use one of {PAN_LAWS}")


def resample_frames(features: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, N, D)`` features over a clip → ``(B, frames, D)`` by linear interpolation in time."""
    if features.shape[1] == frames:
        return features
    # align_corners=False treats each of the N features as covering 1/N of the clip, as frame-rate sampling does
    out = F.interpolate(features.transpose(1, 2), size=frames, mode="linear", align_corners=False)  # (B, D, F)
    return out.transpose(1, 2)  # (B, F, D)


class _ConvBlock(nn.Module):
    """ConvNeXt-style 1-D block: dilated depthwise conv over time, channel LayerNorm, 2× pointwise MLP, residual."""

    def __init__(self, dim: int, kernel_size: int, dilation: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                                groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, F, D)
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)  # (B, F, D)
        return x + self.mlp(self.norm(h))  # (B, F, D)


class Mono2Stereo(ModelMixin, ConfigMixin):
    """Predicts per-(mel bin, frame) pan masks from the mono log-mel (and optional video); see the module docstring."""

    @register_to_config
    def __init__(
        self,
        n_mels: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 6,
        kernel_size: int = 5,
        dilation_cycle: tuple[int, ...] = (1, 2, 4, 8),
        video_dim: int = 0,
        log_base: str = "e",
        pan_law: str = "constant_power",
        clip_val: float = 1e-5,
        video_features: str = "semantic",
        frame_rate: float | None = None,
    ):
        super().__init__()
        if video_features not in ("semantic", "sync"):
            raise Mono2StereoError(f"Mono2Stereo video_features={video_features!r}: use 'semantic' (8 fps visual "
                                   f"features) or 'sync' (Synchformer tokens)")
        if video_features == "sync" and not frame_rate:
            raise Mono2StereoError("Mono2Stereo video_features='sync' needs frame_rate (mel frames per second, "
                                   "e.g. 62.5 for the 16 kHz front-end) to place the tokens in time")
        if log_base not in ("e", "10"):
            raise Mono2StereoError(f"Mono2Stereo log_base={log_base!r}: use 'e' (44.1 kHz mode) or '10' (16 kHz mode)")
        if pan_law not in PAN_LAWS:
            raise Mono2StereoError(f"Mono2Stereo pan_law={pan_law!r} is unknown: use one of {PAN_LAWS}")
        if kernel_size % 2 == 0:
            raise Mono2StereoError(f"Mono2Stereo kernel_size={kernel_size} must be odd (same-length convolutions)")
        self.in_proj = nn.Conv1d(n_mels, hidden_dim, kernel_size, padding=kernel_size // 2)
        if video_dim > 0:
            self.video_proj = nn.Sequential(nn.LayerNorm(video_dim), nn.Linear(video_dim, hidden_dim))
            self.empty_video = nn.Parameter(torch.zeros(hidden_dim))  # stands in when no video is given
        self.blocks = nn.ModuleList([_ConvBlock(hidden_dim, kernel_size, dilation_cycle[i % len(dilation_cycle)])
                                     for i in range(num_layers)])
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.out_proj = nn.Linear(hidden_dim, n_mels)
        # Zero output → p = 0.5 everywhere: an untrained model leaves the sound centred rather than random.
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Mono2Stereo":
        if name not in MONO2STEREO_PRESETS:
            raise Mono2StereoError(f"Mono2Stereo preset {name!r} is unknown: use one of {sorted(MONO2STEREO_PRESETS)}")
        return cls(**{**MONO2STEREO_PRESETS[name], **overrides})

    @property
    def _ln_base(self) -> float:
        return math.log(10.0) if self.config.log_base == "10" else 1.0

    def _check(self, mono: torch.Tensor, video: torch.Tensor | None) -> None:
        m = self.config.n_mels
        if not torch.is_tensor(mono) or mono.ndim != 3 or mono.shape[1] != m or mono.shape[-1] < 1:
            shape = tuple(mono.shape) if torch.is_tensor(mono) else type(mono).__name__
            raise Mono2StereoError(f"Mono2Stereo: mono must be a (B, {m}, frames) log-mel, got {shape}")
        if video is None:
            return
        vd = self.config.video_dim
        if vd == 0:
            raise Mono2StereoError("Mono2Stereo: video features were given but this model has video_dim=0 "
                                   "(audio-only); drop video= or use a model built with video_dim > 0")
        if not torch.is_tensor(video) or video.ndim != 3 or video.shape[-1] != vd or video.shape[0] != mono.shape[0] \
                or video.shape[1] < 1:
            shape = tuple(video.shape) if torch.is_tensor(video) else type(video).__name__
            raise Mono2StereoError(f"Mono2Stereo: video must be (B={mono.shape[0]}, N, {vd}) per-frame features, "
                                   f"got {shape}")

    def _video_per_frame(self, video: torch.Tensor, frames: int) -> torch.Tensor:
        if self.config.video_features == "sync":
            from .sync_layout import TOKENS_PER_WINDOW, overlap_average, resample_to_latents

            if video.shape[1] % TOKENS_PER_WINDOW:
                raise Mono2StereoError(f"Mono2Stereo: sync features have {video.shape[1]} tokens, not a multiple of "
                                       f"{TOKENS_PER_WINDOW} per window; pass the Synchformer encoder's output")
            return resample_to_latents(overlap_average(video), frames, self.config.frame_rate)  # (B, F, D)
        return resample_frames(video, frames)  # (B, F, D)

    def predict_pan(self, mono: torch.Tensor, video: torch.Tensor | None = None) -> torch.Tensor:
        """Pan mask ``(B, M, F)`` ∈ [0, 1] for a mono log-mel ``(B, M, F)``."""
        self._check(mono, video)
        dtype = self.in_proj.weight.dtype
        # Work in natural-log units whatever the front-end's base, centred roughly on typical levels.
        x = (mono.to(dtype) * self._ln_base + 5.0) / 3.0  # (B, M, F)
        h = self.in_proj(x).transpose(1, 2)  # (B, F, D)
        if self.config.video_dim > 0:
            if video is None:
                h = h + self.empty_video
            else:
                v = self._video_per_frame(video.to(dtype), mono.shape[-1])  # (B, F, video_dim)
                h = h + self.video_proj(v)  # (B, F, D)
        for block in self.blocks:
            h = block(h)  # (B, F, D)
        logits = self.out_proj(self.out_norm(h))  # (B, F, M)
        return torch.sigmoid(logits).transpose(1, 2)  # (B, M, F)

    def apply_pan(self, mono: torch.Tensor, pan: torch.Tensor) -> StereoMel:
        """Apply a pan mask to a mono log-mel: gains in the linear domain, clamped to the front-end's floor."""
        c = self.config
        gain_l, gain_r = pan_gains(pan, c.pan_law)  # (B, M, F) each
        floor = math.log(c.clip_val) / self._ln_base  # log_b(clip_val)
        tiny = torch.finfo(pan.dtype).tiny

        def scaled(gain: torch.Tensor) -> torch.Tensor:
            # log_b(mono_lin · g) = mono + ln(g)/ln(b); never exponentiate the mel, so nothing can overflow
            return torch.clamp(mono + torch.log(gain.clamp(min=tiny)) / self._ln_base, min=floor)

        return StereoMel(left=scaled(gain_l), right=scaled(gain_r), pan=pan)

    def forward(self, mono: torch.Tensor, video: torch.Tensor | None = None) -> StereoMel:
        mono = mono.to(self.in_proj.weight.dtype)
        return self.apply_pan(mono, self.predict_pan(mono, video))

    def loss(self, mono: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
             video: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss: L1 between the predicted and the true left/right log-mels (shapes ``(B, M, F)``)."""
        return mono2stereo_loss(self(mono, video), left, right)


def mono2stereo_loss(pred: StereoMel, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Mean L1 over both channels of the log-mels (an L1 on log-ratios: scale-free, robust to loud frames)."""
    if left.shape != pred.left.shape or right.shape != pred.right.shape:
        raise Mono2StereoError(f"mono2stereo_loss: targets {tuple(left.shape)}/{tuple(right.shape)} do not match "
                               f"the prediction {tuple(pred.left.shape)}")
    return 0.5 * ((pred.left - left).abs().mean() + (pred.right - right).abs().mean())


@dataclass
class StereoExample:
    """Log-mels ``(B, M, F)`` of the mono downmix and of each channel of one stereo clip."""

    mono: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor


def stereo_training_example(waveform: torch.Tensor, mel: nn.Module) -> StereoExample:
    """Stereo waveform ``(B, 2, T)`` → log-mels of the mean downmix and of each channel.

    ``mel`` is the library's front-end (``kling_foley_core.audio.mel.MelSpectrogram``). With the mean downmix
    the ``"linear"`` pan law can represent the channels exactly for one amplitude-panned source.
    """
    if waveform.ndim != 3 or waveform.shape[1] != 2:
        raise Mono2StereoError(f"stereo_training_example: waveform must be (B, 2, T) stereo, got "
                               f"{tuple(waveform.shape)}")
    mono = waveform.mean(dim=1)  # (B, T)
    return StereoExample(mono=mel(mono), left=mel(waveform[:, 0]), right=mel(waveform[:, 1]))
