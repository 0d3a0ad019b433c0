"""BigVGAN-v2 neural vocoder (Kling-Foley §4.5–4.6: the stereo mels are vocoded channel by channel).

Log-mel ``(B, num_mels, F)`` → waveform ``(B, F · hop)`` in [-1, 1], with ``hop = prod(upsample_rates)``.

The generator (Lee et al., "BigVGAN", arXiv:2206.04658) is HiFi-GAN's: a 7-tap input convolution to
``upsample_initial_channel`` channels, then one stage per upsample rate, each a transposed convolution (channels
halved, time multiplied by the rate) followed by the average of several AMP blocks; then an anti-aliased
activation, a 7-tap convolution to one channel and ``tanh`` (v1) or a hard clamp (v2 44 kHz models).

An AMP block is a stack of residual dilated convolutions whose activations are periodic, ``Snake``
(``x + sin²(αx)/α``) or ``SnakeBeta`` (``x + sin²(αx)/β``), with α and β learned per channel (stored as logs
when ``snake_logscale``). A periodic activation on a discrete signal creates harmonics above Nyquist that alias back;
BigVGAN therefore evaluates it at twice the sample rate: upsample ×2 with a Kaiser-windowed sinc low-pass,
apply the activation, low-pass and decimate ×2. This module is that plain-torch path (NVIDIA's optional fused
CUDA kernel computes the same thing).

Checkpoints. NVIDIA's releases (e.g. ``bigvgan_v2_44khz_128band_512x``: a folder with ``config.json`` and
``bigvgan_generator.pt``, state dict under ``"generator"``) and MMAudio's 16 kHz vocoder (``best_netG.pt``, same
layout, no config: use the ``"mmaudio_bigvgan_16k"`` preset) store every convolution weight-normalised
(``weight_g``/``weight_v``, or the newer ``parametrizations.weight.original0/1``). :func:`fold_weight_norm`
turns each pair into the plain weight ``g · v / ‖v‖`` at load, so inference runs ordinary convolutions and the
diffusers-format copy (``save_pretrained``) holds plain weights. The sinc filters are stored as buffers under the
reference's names (``…upsample.filter``, ``…downsample.lowpass.filter``), so a reference state dict loads strictly.

The vocoder expects the log-mel its preset names (:meth:`BigVGANVocoder.mel_config`): for the 44 kHz model the
library's ``"44k"`` mel front-end (n_fft 2048, hop 512, 128 Slaney mels, 0–22050 Hz, natural log); for MMAudio's
16 kHz model the ``"16k"`` one (n_fft 1024, hop 256, 80 mels, 0–8000 Hz, log10).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from kling_foley_core.compat.checkpoints import fold_weight_norm, init_empty, load_state_dict_strict, read_state_dict

log = logging.getLogger(__name__)

__all__ = [
    "MelVocoder", "VocoderInputError", "BIGVGAN_PRESETS", "BigVGANVocoder", "AMPBlock1", "AMPBlock2", "Snake",
    "SnakeBeta", "Activation1d", "kaiser_sinc_filter", "fold_weight_norm", "config_from_nvidia", "load_bigvgan",
]


class VocoderInputError(ValueError):
    """Bad argument to a vocoder (wrong mel shape, unknown preset, unusable config or checkpoint folder)."""


@runtime_checkable
class MelVocoder(Protocol):
    """What every vocoder of the library offers: ``vocoder(mel (B, n_mels, F)) -> waveform (B, F·hop)``."""

    sample_rate: int
    hop_length: int
    n_mels: int

    def __call__(self, mel: torch.Tensor) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------------------------
# Presets. The 44 kHz one is NVIDIA's bigvgan_v2_44khz_128band_512x (122 M parameters); the 16 kHz one is the
# BigVGAN (v1 code, snakebeta) that MMAudio's 16 kHz models decode with (mmaudio/ext/bigvgan/bigvgan_vocoder.yml).

BIGVGAN_PRESETS: dict[str, dict[str, Any]] = {
    "bigvgan_v2_44khz_128band_512x": dict(
        num_mels=128, upsample_rates=[8, 4, 2, 2, 2, 2], upsample_kernel_sizes=[16, 8, 4, 4, 4, 4],
        upsample_initial_channel=1536, resblock="1", resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], activation="snakebeta", snake_logscale=True,
        use_tanh_at_final=False, use_bias_at_final=False,
        sampling_rate=44100, n_fft=2048, win_length=2048, fmin=0.0, fmax=22050.0, log_base="e"),
    "mmaudio_bigvgan_16k": dict(
        num_mels=80, upsample_rates=[4, 4, 2, 2, 2, 2], upsample_kernel_sizes=[8, 8, 4, 4, 4, 4],
        upsample_initial_channel=1536, resblock="1", resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], activation="snakebeta", snake_logscale=True,
        use_tanh_at_final=True, use_bias_at_final=True,
        sampling_rate=16000, n_fft=1024, win_length=1024, fmin=0.0, fmax=8000.0, log_base="10"),
    # Same layout as the 44 kHz model with every count cut down: for tests and for wiring a graph without weights.
    "tiny": dict(
        num_mels=128, upsample_rates=[8, 4, 2, 2, 2, 2], upsample_kernel_sizes=[16, 8, 4, 4, 4, 4],
        upsample_initial_channel=64, resblock="1", resblock_kernel_sizes=[3, 7],
        resblock_dilation_sizes=[[1, 3], [1, 3]], activation="snakebeta", snake_logscale=True,
        use_tanh_at_final=False, use_bias_at_final=False,
        sampling_rate=44100, n_fft=2048, win_length=2048, fmin=0.0, fmax=22050.0, log_base="e"),
}
PRESET_ALIASES = {"44k": "bigvgan_v2_44khz_128band_512x", "16k": "mmaudio_bigvgan_16k",
                  "nvidia/bigvgan_v2_44khz_128band_512x": "bigvgan_v2_44khz_128band_512x"}


def _preset(name: str) -> dict[str, Any]:
    key = PRESET_ALIASES.get(str(name), str(name))
    if key not in BIGVGAN_PRESETS:
        raise VocoderInputError(f"BigVGAN preset {name!r} is unknown: use one of "
                                f"{sorted(BIGVGAN_PRESETS) + sorted(PRESET_ALIASES)}")
    return json.loads(json.dumps(BIGVGAN_PRESETS[key]))  # deep copy


# ---------------------------------------------------------------------------------------------------------------
# Anti-aliased activation: Kaiser-windowed sinc low-pass, ×2 up, activation, ×2 down (alias-free GAN / julius).


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Low-pass FIR ``(1, 1, kernel_size)``: sinc at ``cutoff`` (cycles/sample) under a Kaiser window, sum 1.

    The Kaiser β follows the classic design formula for a transition band of ``2·half_width``; the taps of an
    even-length filter sit at half-integer times so the filter is symmetric about the centre.
    """
    even = kernel_size % 2 == 0
    half = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half - 1) * math.pi * delta_f + 7.95  # dB
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)  # (K,)
    time = torch.arange(-half, half) + 0.5 if even else torch.arange(kernel_size) - half  # (K,)
    if cutoff == 0:
        taps = torch.zeros_like(time)
    else:
        taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
        taps = taps / taps.sum()  # unit DC gain: no leakage of the constant component
    return taps.view(1, 1, kernel_size)


class LowPassFilter1d(nn.Module):
    """Depthwise FIR low-pass with replicate padding, optionally strided (then it decimates)."""

    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, kernel_size: int = 12):
        super().__init__()
        if not 0.0 <= cutoff <= 0.5:
            raise VocoderInputError(f"LowPassFilter1d: cutoff={cutoff} must be within [0, 0.5] cycles/sample")
        self.stride = stride
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(cutoff, half_width, kernel_size))  # (1, 1, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)


class UpSample1d(nn.Module):
    """×ratio upsampling: zero-stuffing (a strided transposed conv) followed by the sinc low-pass, gain ``ratio``."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1  # input samples of replicate padding, so the edges are not dimmed
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))  # (1, 1, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(channels, -1, -1), stride=self.ratio,
                                            groups=channels)
        return x[..., self.crop_left:x.shape[-1] - self.crop_right]  # (B, C, T·ratio)


class DownSample1d(nn.Module):
    """Low-pass at the new Nyquist, then keep every ``ratio``-th sample."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, stride=ratio, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Snake(nn.Module):
    """``x + sin²(αx) / α`` per channel; α is stored as log α when ``logscale`` (then initialised to α = 1)."""

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if logscale else torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.view(1, -1, 1)
        if self.logscale:
            alpha = alpha.exp()
        return x + (alpha + 1e-9).reciprocal() * torch.sin(x * alpha).pow(2)


class SnakeBeta(nn.Module):
    """``x + sin²(αx) / β``: frequency (α) and magnitude (β) of the periodic part learned separately."""

    def __init__(self, channels: int, logscale: bool = True):
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, beta = self.alpha.view(1, -1, 1), self.beta.view(1, -1, 1)
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return x + (beta + 1e-9).reciprocal() * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    """The activation evaluated at twice the rate: up ×2 → act → down ×2 (keeps its harmonics from aliasing)."""

    def __init__(self, act: nn.Module, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(ratio, kernel_size)
        self.downsample = DownSample1d(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))  # (B, C, T)


def _activation(kind: str, channels: int, logscale: bool) -> Activation1d:
    if kind == "snake":
        return Activation1d(Snake(channels, logscale))
    if kind == "snakebeta":
        return Activation1d(SnakeBeta(channels, logscale))
    raise VocoderInputError(f"BigVGAN activation={kind!r} is unknown: use 'snake' or 'snakebeta'")


def _same_conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)


class AMPBlock1(nn.Module):
    """Residual pairs ``x += conv₁(act(conv_d(act(x))))`` for each dilation d (the BigVGAN default block)."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str, logscale: bool):
        super().__init__()
        self.convs1 = nn.ModuleList([_same_conv(channels, kernel_size, d) for d in dilations])
        self.convs2 = nn.ModuleList([_same_conv(channels, kernel_size, 1) for _ in dilations])
        # Interleaved: activations[2i] precedes convs1[i], activations[2i+1] precedes convs2[i].
        self.activations = nn.ModuleList([_activation(activation, channels, logscale)
                                          for _ in range(2 * len(dilations))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))  # (B, C, T)
        return x


class AMPBlock2(nn.Module):
    """The lighter variant: one activated dilated convolution per residual step."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str, logscale: bool):
        super().__init__()
        self.convs = nn.ModuleList([_same_conv(channels, kernel_size, d) for d in dilations])
        self.activations = nn.ModuleList([_activation(activation, channels, logscale) for _ in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))  # (B, C, T)
        return x


# ---------------------------------------------------------------------------------------------------------------


class BigVGANVocoder(ModelMixin, ConfigMixin):
    """BigVGAN generator: log-mel ``(B, num_mels, F)`` → waveform ``(B, F · hop_length)``.

    Build from a preset (``BigVGANVocoder.from_preset("bigvgan_v2_44khz_128band_512x")``), load NVIDIA's release
    with :meth:`from_nvidia_checkpoint` (or :func:`load_bigvgan`, which also takes this class's own
    ``save_pretrained`` folders). The mel fields (``sampling_rate`` … ``log_base``) describe the log-mel the
    weights were trained on; they do not change the network.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        num_mels: int = 128,
        upsample_rates: Sequence[int] = (8, 4, 2, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 8, 4, 4, 4, 4),
        upsample_initial_channel: int = 1536,
        resblock: str = "1",
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        activation: str = "snakebeta",
        snake_logscale: bool = True,
        use_tanh_at_final: bool = False,
        use_bias_at_final: bool = False,
        sampling_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        fmin: float = 0.0,
        fmax: float | None = 22050.0,
        log_base: str = "e",
    ):
        super().__init__()
        if str(resblock) not in ("1", "2"):
            raise VocoderInputError(f"BigVGAN resblock={resblock!r} is unknown: use '1' (AMPBlock1) or '2'")
        if len(upsample_rates) != len(upsample_kernel_sizes) or not upsample_rates:
            raise VocoderInputError(f"BigVGAN: upsample_rates {list(upsample_rates)} and upsample_kernel_sizes "
                                    f"{list(upsample_kernel_sizes)} must be non-empty and of equal length")
        if len(resblock_kernel_sizes) != len(resblock_dilation_sizes):
            raise VocoderInputError("BigVGAN: resblock_kernel_sizes and resblock_dilation_sizes must have equal length")
        if upsample_initial_channel % (2 ** len(upsample_rates)):
            raise VocoderInputError(f"BigVGAN: upsample_initial_channel={upsample_initial_channel} must be divisible "
                                    f"by 2**{len(upsample_rates)} (channels halve at every stage)")
        if log_base not in ("e", "10"):
            raise VocoderInputError(f"BigVGAN log_base={log_base!r}: use 'e' (natural log) or '10'")
        block_cls = AMPBlock1 if str(resblock) == "1" else AMPBlock2
        self.num_kernels = len(resblock_kernel_sizes)

        self.conv_pre = nn.Conv1d(num_mels, upsample_initial_channel, 7, padding=3)
        # Each stage is a one-element ModuleList so the keys read ``ups.{i}.0.*`` as in the reference.
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes):
            self.ups.append(nn.ModuleList([
                nn.ConvTranspose1d(channels, channels // 2, kernel, stride=rate, padding=(kernel - rate) // 2)]))
            channels //= 2
            for k, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block_cls(channels, k, dilations, activation, snake_logscale))
        self.activation_post = _activation(activation, channels, snake_logscale)
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3, bias=use_bias_at_final)

    # -- the interface shared with the Griffin-Lim vocoder ----------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.config.upsample_rates))

    @property
    def n_mels(self) -> int:
        return int(self.config.num_mels)

    def mel_config(self):
        """The library mel front-end (``kling_foley_core.audio.mel.MelConfig``) whose output this vocoder expects."""
        from kling_foley_core.audio.mel import MelConfig

        c = self.config
        fmax = float(c.fmax) if c.fmax is not None else c.sampling_rate / 2
        return MelConfig(sampling_rate=int(c.sampling_rate), n_fft=int(c.n_fft), hop_length=self.hop_length,
                         win_length=int(c.win_length), n_mels=int(c.num_mels), f_min=float(c.fmin), f_max=fmax,
                         log_base=c.log_base)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(mel) or mel.ndim != 3 or mel.shape[1] != self.n_mels or mel.shape[-1] < 1:
            shape = tuple(mel.shape) if torch.is_tensor(mel) else type(mel).__name__
            raise VocoderInputError(f"BigVGANVocoder: mel must be (B, {self.n_mels}, frames) log-mel, got {shape}; "
                                    f"this vocoder was trained on {self.n_mels} mel bands")
        x = self.conv_pre(mel.to(self.conv_pre.weight.dtype))  # (B, C0, F)
        for i, (up,) in enumerate(self.ups):
            x = up(x)  # (B, C_i, F·r_1…r_i)
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            # multi-receptive-field fusion: the average of blocks with different kernel sizes
            x = sum(block(x) for block in blocks) / self.num_kernels
        x = self.conv_post(self.activation_post(x))  # (B, 1, T)
        # v2 44 kHz models were trained with a hard clamp instead of tanh (tanh compresses loud transients)
        x = torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)
        return x.squeeze(1)  # (B, T)

    # -- construction and loading --------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BigVGANVocoder":
        """Random-weight model of a named configuration (``"bigvgan_v2_44khz_128band_512x"``, ``"tiny"``, …)."""
        return cls(**{**_preset(name), **overrides})

    @classmethod
    def from_nvidia_checkpoint(cls, path: str | Path, *, config: str | dict | Path | None = None,
                               device: str | torch.device = "cpu",
                               dtype: torch.dtype = torch.float32) -> "BigVGANVocoder":
        """Load NVIDIA's release format: a folder with ``config.json`` + ``bigvgan_generator.pt``, or one file.

        ``config``: a preset name, a dict in NVIDIA's or this class's format, or a ``config.json`` path. When
        omitted it is read from ``config.json`` in (or beside) ``path``. Weight-norm pairs are folded; the
        model is built on the meta device and receives the checkpoint's tensors directly.
        """
        path = Path(path)
        weights = _find_weights(path)
        cfg = _resolve_config(config, path)
        sd = read_state_dict(weights, map_location="cpu")
        model = init_empty(cls, **cfg)
        sd = _complete_filters(model, fold_weight_norm(sd))
        what = f"BigVGAN vocoder from '{weights.name}'"
        load_state_dict_strict(model, sd, what=what, looks_like=_describe(sd))
        # nn.Module.to: diffusers' ModelMixin.to warns about fp32-pinned modules on every cast, and this model has none
        return nn.Module.to(model, device=device, dtype=dtype).eval()

    def load_reference_state_dict(self, sd: dict[str, torch.Tensor]) -> "BigVGANVocoder":
        """Load an NVIDIA/MMAudio-format state dict (weight-normalised or not) into this model, strictly."""
        sd = _complete_filters(self, fold_weight_norm(sd))
        load_state_dict_strict(self, sd, what="BigVGAN vocoder", looks_like=_describe(sd))
        return self


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint helpers


def _complete_filters(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the fixed sinc filters when a checkpoint left them out (they are deterministic, never trained)."""
    own = dict(model.named_buffers())
    missing = [k for k in own if k.endswith(".filter") and k not in sd]
    if missing:
        log.debug("BigVGAN: %d sinc filter buffers absent from the checkpoint; using the computed ones", len(missing))
        sd = {**sd, **{k: own[k] for k in missing}}
    return sd


def _describe(sd: dict[str, torch.Tensor]) -> str | None:
    """A one-phrase guess at a checkpoint's shape, for load errors (mels in, initial channels, stages)."""
    w = sd.get("conv_pre.weight")
    if w is None:
        return None
    stages = len({k.split(".")[1] for k in sd if k.startswith("ups.")})
    return f"a BigVGAN with num_mels={w.shape[1]}, upsample_initial_channel={w.shape[0]}, {stages} upsample stages"


def _find_weights(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("bigvgan_generator.pt", "bigvgan_generator.safetensors", "best_netG.pt",
                     "diffusion_pytorch_model.safetensors"):
            if (path / name).is_file():
                return path / name
        raise VocoderInputError(f"BigVGAN folder '{path}' holds no 'bigvgan_generator.pt' (NVIDIA release) or "
                                f"'diffusion_pytorch_model.safetensors'; download the vocoder into it")
    raise VocoderInputError(f"BigVGAN checkpoint '{path}' does not exist")


_NVIDIA_KEYS = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock",
                "resblock_kernel_sizes", "resblock_dilation_sizes", "activation", "snake_logscale",
                "use_tanh_at_final", "use_bias_at_final", "sampling_rate", "n_fft", "fmin", "fmax")


def config_from_nvidia(h: dict) -> dict[str, Any]:
    """This class's config from an NVIDIA ``config.json`` dict (training fields ignored, v1 defaults filled).

    NVIDIA's code defaults ``use_tanh_at_final`` and ``use_bias_at_final`` to True (v1 behaviour) when absent,
    and always computes its mels with the natural log.
    """
    if "_class_name" in h:  # already this class's format (save_pretrained)
        return {k: v for k, v in h.items() if not k.startswith("_")}
    missing = [k for k in ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                           "resblock_kernel_sizes", "resblock_dilation_sizes") if k not in h]
    if missing:
        raise VocoderInputError(f"BigVGAN config lacks {missing}: is it a BigVGAN generator config.json?")
    cfg = {k: h[k] for k in _NVIDIA_KEYS if k in h}
    cfg["resblock"] = str(h.get("resblock", "1"))
    cfg.setdefault("activation", "snake")
    cfg.setdefault("snake_logscale", False)
    cfg.setdefault("use_tanh_at_final", True)
    cfg.setdefault("use_bias_at_final", True)
    if "win_size" in h:
        cfg["win_length"] = h["win_size"]
    hop = math.prod(h["upsample_rates"])
    if "hop_size" in h and int(h["hop_size"]) != hop:
        raise VocoderInputError(f"BigVGAN config: hop_size={h['hop_size']} but prod(upsample_rates)={hop}")
    cfg.setdefault("sampling_rate", 22050)
    cfg.setdefault("n_fft", 4 * hop)
    cfg.setdefault("win_length", cfg["n_fft"])
    cfg["fmin"] = float(cfg.get("fmin", 0.0) or 0.0)
    cfg["fmax"] = float(cfg["fmax"]) if cfg.get("fmax") is not None else cfg["sampling_rate"] / 2
    cfg["log_base"] = "e"
    return cfg


def _resolve_config(config, path: Path) -> dict[str, Any]:
    if isinstance(config, dict):
        return config_from_nvidia(config)
    if isinstance(config, str) and not config.endswith(".json"):
        return _preset(config)
    if config is None:
        candidate = path / "config.json" if path.is_dir() else path.with_name("config.json")
        if not candidate.is_file():
            raise VocoderInputError(f"BigVGAN checkpoint '{path}': no config.json found beside it; pass config= "
                                    f"a preset ({sorted(BIGVGAN_PRESETS)}) or the path of its config.json")
        config = candidate
    config = Path(config)
    if not config.is_file():
        raise VocoderInputError(f"BigVGAN config '{config}' does not exist")
    try:
        return config_from_nvidia(json.loads(config.read_text()))
    except json.JSONDecodeError as exc:
        raise VocoderInputError(f"BigVGAN config '{config}' is not valid JSON ({exc})") from None


def load_bigvgan(path: str | Path, *, config: str | dict | Path | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> BigVGANVocoder:
    """Load any BigVGAN the library knows: a ``save_pretrained`` folder, an NVIDIA folder or a bare checkpoint."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file() and config is None:
        meta = json.loads((path / "config.json").read_text())
        if meta.get("_class_name") == BigVGANVocoder.__name__:
            return BigVGANVocoder.from_pretrained(str(path), torch_dtype=dtype).to(device).eval()
    return BigVGANVocoder.from_nvidia_checkpoint(path, config=config, device=device, dtype=dtype)


def run(fixture) -> dict[str, torch.Tensor]:
    """Parity-tool handler (``kling_foley_core.compat.parity``) for fixtures made by NVIDIA's ``bigvgan`` package.

    ``fixture.spec["config"]`` is the package's config, ``fixture.weights`` its state dict (weight-norm keys);
    recomputes ``waveform`` from ``mel`` with this module's loader and generator.
    """
    model = BigVGANVocoder(**config_from_nvidia(fixture.spec["config"]))
    model.load_reference_state_dict(fixture.weights).eval()
    with torch.no_grad():
        return {"waveform": model(fixture.io["mel"].float())}
