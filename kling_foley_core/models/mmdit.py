"""The Kling-Foley / MMAudio multimodal diffusion transformer (Kling-Foley §3.2–4.4, Fig. 2, Algorithm 1).

One class covers both families through config flags:

* **MMAudio** v1/v2 checkpoints (small_16k … large_44k_v2): exact reference numerics, parameter names kept so
  conversion is nearly the identity (see ``compat/convert_mmaudio.py``).
* **Kling-Foley**: the same three-stream design plus learnable duration embeddings (``use_duration``), learned
  placeholders for every missing modality (``learned_empty_text``) and the final adaLN fed the per-token
  condition (``final_cond="extended"``).

Data flow (shapes for batch B, audio tokens N, video frames Nc, sync tokens Ns, text tokens Nt, width D)::

    clip_f (B,Nc,Cc) ─ Linear [+act] + ConvSwiGLU ──────────────► video stream (B,Nc,D) ─┐   mean → clip_cond_proj ┐
    text_f (B,Nt,Ct) ─ Linear [+act] + SwiGLU ──────────────────► text stream  (B,Nt,D) ─┤   mean → text_cond_proj ┤
    sync_f (B,Ns,Cs) + window pos-emb ─ conv7 + act + ConvSwiGLU ─ nearest-exact → (B,N,D)│   duration embedding ───┤
                                                                                           │   global_cond_mlp ◄─────┘
    x (B,N,C) ─ conv7 + act + ConvSwiGLU ► audio stream ─► joint blocks (one attention over audio⊕video⊕text,
        aligned RoPE on audio and video) ─► audio-only blocks ─► adaLN + conv7 ─► velocity (B,N,C)
    adaLN condition: global = t_embed(t) + global_cond_mlp(...)  (B,1,D); per token = global + sync (B,N,D)

Everything that does not depend on the flow time is computed once by :meth:`prepare_conditions`;
:meth:`predict_flow` does only per-step work. Sequence lengths come from the inputs on every call (RoPE
rotations are cached per length), so one model generates any duration up to ``max_duration``.
Time convention: t = 0 noise, t = 1 data, velocity = data − noise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..layers import ChannelLastConv1d, ConvSwiGLU, RopeCache, SwiGLU, TimestepEmbedding
from .context_embed import ContextEmbedding, clip_times, known_at_times, sync_token_times
from .duration import DurationEmbedding, DurationError, SequenceLengths, as_seconds, sequence_lengths
from .mmdit_blocks import FinalBlock, JointBlock, StreamBlock
from .sync_layout import TOKENS_PER_WINDOW, overlap_average, resample_to_latents
from .timing_sync import TimingSync

log = logging.getLogger(__name__)

__all__ = ["KlingFoleyMMDiT", "PreparedConditions", "MMDiTInputError"]


class MMDiTInputError(ValueError):
    """Conditioning or latent tensors whose shapes do not fit the model."""


@dataclass
class PreparedConditions:
    """Conditions projected once per generation and reused at every sampling step.

    ``global_c`` is the pooled video/text (+ duration) condition after ``global_cond_mlp`` (the timestep is
    added per step); ``sync_f`` is already upsampled to the latent length. ``text_mask`` (B, Nt) marks real
    text tokens (None: all real). ``clip_seq_len``/``sync_seq_len`` are the input lengths before projection.
    """

    clip_f: torch.Tensor  # (B, Nc, D)
    sync_f: torch.Tensor  # (B, N, D)
    text_f: torch.Tensor  # (B, Nt, D)
    global_c: torch.Tensor  # (B, D)
    text_mask: torch.Tensor | None = None  # (B, Nt) bool
    seconds_start: torch.Tensor | None = None  # (B,)
    seconds_total: torch.Tensor | None = None  # (B,)
    clip_seq_len: int = 0
    sync_seq_len: int = 0
    context_emb: torch.Tensor | None = None  # (B, N, D) known audio's share of the audio stream (FoleyGenEx)
    context_global: torch.Tensor | None = None  # (B, D) known audio's summary, added to the adaLN conditioning
    context_semantic: torch.Tensor | None = None  # (B, D) the summary's share of every semantic-video token

    @property
    def batch_size(self) -> int:
        return self.clip_f.shape[0]

    @property
    def latent_seq_len(self) -> int:
        return self.sync_f.shape[1]

    def batch_cat(self, other: "PreparedConditions") -> "PreparedConditions":
        """Concatenate along the batch (cond ⊕ uncond for one CFG forward). Text of different lengths is
        zero-padded and masked, so a negative prompt may be shorter or longer than the prompt."""
        if self.latent_seq_len != other.latent_seq_len or self.clip_f.shape[1] != other.clip_f.shape[1]:
            raise MMDiTInputError(
                f"cannot batch conditions of different lengths (latent {self.latent_seq_len} vs "
                f"{other.latent_seq_len}, video {self.clip_f.shape[1]} vs {other.clip_f.shape[1]}); build the "
                f"empty conditions with get_empty_conditions(batch, like=cond)")
        n_a, n_b = self.text_f.shape[1], other.text_f.shape[1]
        n = max(n_a, n_b)
        mask = None
        if n_a != n_b or self.text_mask is not None or other.text_mask is not None:
            mask = torch.cat([_text_mask(self, n), _text_mask(other, n)], dim=0)
        text_f = torch.cat([_pad_tokens(self.text_f, n), _pad_tokens(other.text_f, n)], dim=0)

        def cat_opt(a, b):
            return None if a is None or b is None else torch.cat([a, b], dim=0)

        ctx = None
        if self.context_emb is not None or other.context_emb is not None:
            ctx = torch.cat([c.context_emb if c.context_emb is not None else c.sync_f.new_zeros(c.sync_f.shape)
                             for c in (self, other)], dim=0)

        def cat_vec(name):  # a (B, D) context vector; zero for a side without it
            if getattr(self, name) is None and getattr(other, name) is None:
                return None
            return torch.cat([getattr(c, name) if getattr(c, name) is not None else
                              c.global_c.new_zeros(c.global_c.shape) for c in (self, other)], dim=0)

        return PreparedConditions(
            clip_f=torch.cat([self.clip_f, other.clip_f], dim=0),
            sync_f=torch.cat([self.sync_f, other.sync_f], dim=0),
            text_f=text_f,
            global_c=torch.cat([self.global_c, other.global_c], dim=0),
            text_mask=mask,
            seconds_start=cat_opt(self.seconds_start, other.seconds_start),
            seconds_total=cat_opt(self.seconds_total, other.seconds_total),
            clip_seq_len=self.clip_seq_len,
            sync_seq_len=self.sync_seq_len,
            context_emb=ctx,
            context_global=cat_vec("context_global"),
            context_semantic=cat_vec("context_semantic"),
        )

    def to(self, device=None, dtype=None) -> "PreparedConditions":
        def move(v):
            if not isinstance(v, torch.Tensor):
                return v
            return v.to(device=device, dtype=dtype if v.is_floating_point() and v.ndim > 1 else None)

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})


def _pad_tokens(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape[1] == n else F.pad(x, (0, 0, 0, n - x.shape[1]))


def _text_mask(c: PreparedConditions, n: int) -> torch.Tensor:
    b, nt = c.text_f.shape[:2]
    m = c.text_mask if c.text_mask is not None else torch.ones(b, nt, dtype=torch.bool, device=c.text_f.device)
    return F.pad(m, (0, n - nt), value=False)


class KlingFoleyMMDiT(ModelMixin, ConfigMixin):
    """MM-DiT velocity network for video/text-to-audio flow matching (MMAudio-compatible, Kling-Foley design).

    Args:
        latent_dim: audio latent channels (20 for 16 kHz, 40 for 44.1 kHz Mel-VAE latents).
        clip_dim / sync_dim / text_dim: channels of the semantic video, sync and text features.
        hidden_dim, num_heads: transformer width and heads (head dim = hidden_dim / num_heads).
        depth: total number of blocks; the last ``fused_depth`` are audio-only (FLUX-style single stream).
        text_seq_len: length of the stored empty-text features (the text placeholder).
        proj_style: ``"v1"`` — SELU after the conv input projections and no activation after the linear
            ones (MMAudio v1 checkpoints); ``"v2"`` — SiLU after every input projection.
        t_frequency_dim / t_max_period: timestep features (v1: 256 / 10000; v2: hidden_dim / 1).
        use_duration: add learnable ``seconds_start``/``seconds_total`` embeddings to the global condition.
        learned_empty_text: train the text placeholder (Kling-Foley) instead of storing the encoder's
            embedding of "" (MMAudio).
        final_cond: condition of the final adaLN: ``"global"`` (MMAudio as released, its issue #55) or
            ``"extended"`` (global + per-token sync, as the paper's Stage 4 intends).
        sample_rate, mel_hop, latent_downsample: the audio latent rate, for duration → length.
        default_duration: the training clip length, used when no duration is given.
        max_duration: the longest duration accepted (also the range of the duration embedding).
        sync_layout: how Synchformer tokens reach the latent frames: ``"windows"`` (MMAudio: window-major order
            stretched by nearest neighbour) or ``"time"`` (overlapping windows averaged per 2-frame slot, then
            interpolated at each latent frame's own time; see ``sync_layout.py``).
        context_input: FoleyGenEx's conditional injection (``context_embed.py``): known audio latents and their
            mask enter the audio stream, and the mask is mirrored onto the video features. Off for MMAudio
            checkpoints (they use the training-free context path of ``sampling/context.py``).
        context_global: with ``context_input``, the branch also summarises the known audio into one vector added
            to every block's adaLN conditioning (``ContextEmbedding``'s ``global_summary``), a direct route for a
            reference's timbre. Off in every shipped model: in the one run that tried it, it was not used
            (``default_model/TRAINING.md``, phase Y).
        context_semantic: with ``context_global``, the summary also adds one vector to every semantic-video
            token (``ContextEmbedding``'s ``semantic``): the reference speaks where the blanked picture would.
        timing_sync: items without semantic features (TC-VTA, and AC-VTA's reference mode, which drops them)
            read the sync stream for timing only (``timing_sync.py``): each token is rebuilt from its contact's
            chance and place, with vectors shared by every class, so the look's class cannot compete with the
            text's or the reference's. Off for MMAudio checkpoints and the shipped foley-tiny.
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["JointBlock", "StreamBlock"]

    @register_to_config
    def __init__(self, latent_dim: int = 40, clip_dim: int = 1024, sync_dim: int = 768, text_dim: int = 1024,
                 hidden_dim: int = 448, depth: int = 12, fused_depth: int = 8, num_heads: int = 7,
                 mlp_ratio: float = 4.0, text_seq_len: int = 77, proj_style: str = "v2",
                 t_frequency_dim: int | None = None, t_max_period: float = 1.0, rope_theta: float = 10000.0,
                 use_duration: bool = False, duration_fourier_dim: int = 256, learned_empty_text: bool = False,
                 final_cond: str = "global", sample_rate: int = 44100, mel_hop: int = 512,
                 latent_downsample: int = 2, default_duration: float = 8.0, max_duration: float = 30.0,
                 sync_layout: str = "windows", context_input: bool = False, context_global: bool = False,
                 context_semantic: bool = False, timing_sync: bool = False):
        super().__init__()
        if sync_layout not in ("windows", "time"):
            raise ValueError(f"sync_layout={sync_layout!r} must be 'windows' (MMAudio) or 'time' (see sync_layout.py)")
        if proj_style not in ("v1", "v2"):
            raise ValueError(f"proj_style={proj_style!r} must be 'v1' or 'v2'")
        if final_cond not in ("global", "extended"):
            raise ValueError(f"final_cond={final_cond!r} must be 'global' or 'extended'")
        if context_global and not context_input:
            raise ValueError("context_global=True needs context_input=True (the summary is part of the context branch)")
        if context_semantic and not context_global:
            raise ValueError("context_semantic=True needs context_global=True (it is a second output of the summary)")
        if not 0 <= fused_depth < depth:
            raise ValueError(f"fused_depth={fused_depth} must be in [0, depth={depth}) (at least one joint block)")
        if hidden_dim % num_heads or (hidden_dim // num_heads) % 2:
            raise ValueError(f"hidden_dim={hidden_dim} / num_heads={num_heads} must give an even head dim")
        if not 0 < default_duration <= max_duration:
            raise ValueError(f"default_duration={default_duration} must be in (0, max_duration={max_duration}]")
        d = hidden_dim
        self.head_dim = d // num_heads

        # Input projections. v1 uses SELU after the conv projections and none after the linear ones; keeping
        # the nn.Sequential indices identical to MMAudio keeps its checkpoint keys valid.
        def act():
            return nn.SELU() if proj_style == "v1" else nn.SiLU()

        lin_act = [] if proj_style == "v1" else [nn.SiLU()]
        self.audio_input_proj = nn.Sequential(ChannelLastConv1d(latent_dim, d, 7, padding=3), act(),
                                              ConvSwiGLU(d, d * 4, kernel_size=7, padding=3))
        self.clip_input_proj = nn.Sequential(nn.Linear(clip_dim, d), *lin_act,
                                             ConvSwiGLU(d, d * 4, kernel_size=3, padding=1))
        self.sync_input_proj = nn.Sequential(ChannelLastConv1d(sync_dim, d, 7, padding=3), act(),
                                             ConvSwiGLU(d, d * 4, kernel_size=3, padding=1))
        self.text_input_proj = nn.Sequential(nn.Linear(text_dim, d), *lin_act, SwiGLU(d, d * 4))

        self.clip_cond_proj = nn.Linear(d, d)
        self.text_cond_proj = nn.Linear(d, d)
        self.global_cond_mlp = SwiGLU(d, d * 4)
        # one learned position per token of a Synchformer window (8 tokens per 16-frame window)
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, TOKENS_PER_WINDOW, sync_dim))
        self.duration_embed = (DurationEmbedding(d, duration_fourier_dim, max_duration) if use_duration else None)

        self.t_embed = TimestepEmbedding(d, t_frequency_dim or d, t_max_period)
        n_joint = depth - fused_depth
        # In the last joint block the video/text streams only serve keys and values (nothing reads them later).
        self.joint_blocks = nn.ModuleList(
            [JointBlock(d, num_heads, mlp_ratio, pre_only=(i == n_joint - 1)) for i in range(n_joint)])
        self.fused_blocks = nn.ModuleList(
            [StreamBlock(d, num_heads, mlp_ratio, kernel_size=3) for _ in range(fused_depth)])
        self.final_layer = FinalBlock(d, latent_dim)
        self.context_embed = ContextEmbedding(latent_dim, d, context_global, context_semantic) if context_input else None
        self.sync_timing = TimingSync(sync_dim) if timing_sync else None

        # Latent statistics of the VAE (normalise before the transformer); identity until a checkpoint sets them.
        self.register_buffer("latent_mean", torch.zeros(1, 1, latent_dim))
        self.register_buffer("latent_std", torch.ones(1, 1, latent_dim))
        # Placeholders for missing modalities and the CFG negative (Algorithm 1: e_v, e_t).
        self.empty_string_feat = nn.Parameter(torch.zeros(text_seq_len, text_dim), requires_grad=learned_empty_text)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, sync_dim))

        self._rope = RopeCache(self.head_dim, rope_theta)
        self.initialize_weights()

    # ----------------------------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """DiT/MMAudio init: Xavier linears, adaLN-Zero (every block starts as identity), zero output layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        for m in self.modules():
            if isinstance(m, (StreamBlock, FinalBlock)):
                nn.init.zeros_(m.adaLN_modulation[-1].weight)
                nn.init.zeros_(m.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.conv.weight)
        nn.init.zeros_(self.final_layer.conv.bias)
        if self.context_embed is not None:  # starts as a no-op: the model computes what it did without context
            self.context_embed.zero_outputs()

    # ----------------------------------------------------------------------------------------------------------
    # Lengths and normalisation
    # ----------------------------------------------------------------------------------------------------------
    def sequence_lengths(self, duration: float | None = None) -> SequenceLengths:
        """Latent / video / sync token counts for ``duration`` seconds (default: the training length)."""
        c = self.config
        return sequence_lengths(c.default_duration if duration is None else duration, sample_rate=c.sample_rate,
                                mel_hop=c.mel_hop, latent_downsample=c.latent_downsample,
                                max_duration=c.max_duration)

    @property
    def latent_rate(self) -> float:
        """Audio latent frames per second."""
        c = self.config
        return c.sample_rate / c.mel_hop / c.latent_downsample

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """VAE latents → the unit-variance space the flow is trained in (not in place)."""
        return (x - self.latent_mean.to(x)) / self.latent_std.to(x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Generated latents → VAE latent space (not in place)."""
        return x * self.latent_std.to(x) + self.latent_mean.to(x)

    # ----------------------------------------------------------------------------------------------------------
    # Conditions (computed once per generation)
    # ----------------------------------------------------------------------------------------------------------
    def _check_features(self, name: str, x: torch.Tensor | None, dim: int, batch: int | None) -> None:
        if x is None:
            return
        if x.ndim != 3:
            raise MMDiTInputError(f"{name} must be (batch, tokens, {dim}), got shape {tuple(x.shape)}")
        if x.shape[-1] != dim:
            raise MMDiTInputError(f"{name} has {x.shape[-1]} channels but this model expects {dim}; use the "
                                  f"encoder this checkpoint was trained with")
        if batch is not None and x.shape[0] != batch:
            raise MMDiTInputError(f"{name} has batch {x.shape[0]} but the other inputs have batch {batch}")
        if x.shape[1] == 0:
            raise MMDiTInputError(f"{name} has no tokens")

    def _project(self, clip_f: torch.Tensor, sync_f: torch.Tensor, text_f: torch.Tensor, latent_seq_len: int,
                 text_mask: torch.Tensor | None):
        """Stream projections and pooled features: the part of the conditioning that is per input, not per t."""
        b, ns = sync_f.shape[:2]
        sync_f = sync_f.view(b, ns // TOKENS_PER_WINDOW, TOKENS_PER_WINDOW, -1) + self.sync_pos_emb
        sync_f = sync_f.flatten(1, 2)  # (B, Ns, Cs)

        time_layout = self.config.sync_layout == "time"
        if time_layout:
            sync_f = overlap_average(sync_f)  # (B, Ns/2 + 4, Cs): one token per 2-frame slot, in time order

        clip_f = self.clip_input_proj(clip_f)  # (B, Nc, D)
        sync_f = self.sync_input_proj(sync_f)  # (B, Ns, D)
        text_f = self.text_input_proj(text_f)  # (B, Nt, D)

        # sync tokens → latent rate, added to the audio stream's per-token adaLN condition
        if time_layout:
            sync_f = resample_to_latents(sync_f, latent_seq_len, self.latent_rate)  # (B, N, D)
        else:  # MMAudio: stretch the window-major sequence
            sync_f = F.interpolate(sync_f.transpose(1, 2), size=latent_seq_len, mode="nearest-exact").transpose(1, 2)

        clip_c = self.clip_cond_proj(clip_f.mean(dim=1))  # (B, D)
        if text_mask is None:
            text_pool = text_f.mean(dim=1)
        else:
            w = text_mask.to(text_f.dtype)[..., None]  # (B, Nt, 1)
            text_pool = (text_f * w).sum(1) / w.sum(1).clamp_min(1.0)
        text_c = self.text_cond_proj(text_pool)  # (B, D)
        return clip_f, sync_f, text_f, clip_c + text_c

    def _global(self, pooled: torch.Tensor, seconds_start, seconds_total) -> torch.Tensor:
        if self.duration_embed is not None:
            pooled = pooled + self.duration_embed(seconds_start, seconds_total).to(pooled.dtype)
        return self.global_cond_mlp(pooled)  # (B, D)

    def _resolve_lengths(self, duration, latent_seq_len) -> tuple[int, SequenceLengths, float]:
        """Latent length and the lengths used for missing modalities; also the clip's total seconds."""
        if duration is not None:
            lens = self.sequence_lengths(duration)
            return (lens.latent if latent_seq_len is None else int(latent_seq_len)), lens, lens.duration
        if latent_seq_len is None:
            lens = self.sequence_lengths(None)
            return lens.latent, lens, lens.duration
        seconds = int(latent_seq_len) / self.latent_rate
        if seconds > self.config.max_duration + 1.0 / self.latent_rate:
            raise DurationError(f"latent_seq_len={latent_seq_len} is {seconds:.2f} s, above this model's limit of "
                                f"{self.config.max_duration:g} s")
        lens = self.sequence_lengths(min(max(seconds, 16 / 25), self.config.max_duration))
        return int(latent_seq_len), lens, seconds

    def prepare_conditions(self, clip_f: torch.Tensor | None = None, sync_f: torch.Tensor | None = None,
                           text_f: torch.Tensor | None = None, *, duration: float | None = None,
                           latent_seq_len: int | None = None,
                           seconds_start: float | Sequence[float] | torch.Tensor | None = 0.0,
                           seconds_total: float | Sequence[float] | torch.Tensor | None = None,
                           text_mask: torch.Tensor | None = None, batch_size: int | None = None,
                           has_video: torch.Tensor | None = None, has_text: torch.Tensor | None = None,
                           has_clip: torch.Tensor | None = None, context: torch.Tensor | None = None,
                           context_known: torch.Tensor | None = None) -> PreparedConditions:
        """Project the conditioning once per generation.

        Args:
            clip_f: semantic video features (B, Nc, clip_dim), or None for "no video" (learned placeholder).
            sync_f: Synchformer features (B, Ns, sync_dim) with Ns a multiple of 8, or None (placeholder).
            text_f: text features (B, Nt, text_dim), or None (the empty-text placeholder).
            duration: seconds to generate; sets the latent length (and the placeholder lengths).
            latent_seq_len: explicit latent length (overrides the one derived from ``duration``).
            seconds_start, seconds_total: timing for the duration embedding (Kling-Foley); ``seconds_total``
                defaults to the clip's own duration. Scalars or one value per batch item.
            text_mask: (B, Nt) bool, True for real tokens, when the text features are padded.
            batch_size: needed only when every modality is missing.
            has_video, has_text: optional (B,) bool; items marked False use the learned placeholders in a
                batch where others have the modality (Algorithm 1's per-sample substitution; also how
                training drops modalities).
            has_clip: optional (B,) bool like ``has_video`` for the semantic features only (sync kept): TC-VTA.
            context, context_known: known audio (B, N, latent_dim) in the normalised latent space and its mask
                (B, N) bool (True = known). Needs ``context_input``; the mask is mirrored onto the video features
                (known spans see the learned empty features, as in training).
        """
        given = [x for x in (clip_f, sync_f, text_f) if x is not None]
        batch = given[0].shape[0] if given else (batch_size or 1)
        if batch_size is not None and batch_size != batch:
            raise MMDiTInputError(f"batch_size={batch_size} does not match the features' batch {batch}")
        c = self.config
        self._check_features("clip_f", clip_f, c.clip_dim, batch)
        self._check_features("sync_f", sync_f, c.sync_dim, batch)
        self._check_features("text_f", text_f, c.text_dim, batch)
        if sync_f is not None and sync_f.shape[1] % TOKENS_PER_WINDOW:
            raise MMDiTInputError(f"sync_f has {sync_f.shape[1]} tokens; Synchformer gives 8 per window, so it must "
                                  f"be a multiple of 8")
        if text_mask is not None:
            if text_f is None or tuple(text_mask.shape) != tuple(text_f.shape[:2]):
                raise MMDiTInputError(f"text_mask must be (batch, text tokens) = "
                                      f"{None if text_f is None else tuple(text_f.shape[:2])}, got {tuple(text_mask.shape)}")
            text_mask = text_mask.to(device=self.device, dtype=torch.bool)
        n_lat, lens, total = self._resolve_lengths(duration, latent_seq_len)
        if n_lat <= 0:
            raise MMDiTInputError(f"latent_seq_len={n_lat} must be positive")

        dev, dt = self.device, self.dtype
        clip_in = (clip_f.to(dev, dt) if clip_f is not None
                   else self.empty_clip_feat[None].expand(batch, lens.clip, -1))
        sync_in = (sync_f.to(dev, dt) if sync_f is not None
                   else self.empty_sync_feat[None].expand(batch, lens.sync, -1))
        text_in = (text_f.to(dev, dt) if text_f is not None
                   else self.empty_string_feat[None].expand(batch, -1, -1))
        if self.sync_timing is not None and sync_f is not None and (clip_f is None or has_clip is not None):
            timing = self.sync_timing(sync_in)  # TC-VTA: the items without semantic features keep only timing
            sync_in = timing if clip_f is None else torch.where(
                self._item_mask("has_clip", has_clip, batch)[:, None, None], sync_in, timing)
        if has_video is not None:
            keep = self._item_mask("has_video", has_video, batch)[:, None, None]  # (B, 1, 1)
            clip_in = torch.where(keep, clip_in, self.empty_clip_feat[None].to(dt))
            sync_in = torch.where(keep, sync_in, self.empty_sync_feat[None].to(dt))
        if has_clip is not None:
            keep = self._item_mask("has_clip", has_clip, batch)[:, None, None]
            clip_in = torch.where(keep, clip_in, self.empty_clip_feat[None].to(dt))
        if has_text is not None:
            text_in, text_mask = self._substitute_text(text_in, text_mask,
                                                       self._item_mask("has_text", has_text, batch))
        context_emb = context_global = context_semantic = None
        if context_known is not None:
            context_emb, context_global, context_semantic, clip_in, sync_in = self._inject_context(
                context, context_known, clip_in, sync_in, n_lat)
        clip_p, sync_p, text_p, pooled = self._project(clip_in, sync_in, text_in, n_lat, text_mask)

        start = total_s = None
        if self.duration_embed is not None:
            start = as_seconds(0.0 if seconds_start is None else seconds_start, batch, name="seconds_start",
                               device=dev)
            total_s = as_seconds(total if seconds_total is None else seconds_total, batch, name="seconds_total",
                                 device=dev)
        return PreparedConditions(clip_f=clip_p, sync_f=sync_p, text_f=text_p,
                                  global_c=self._global(pooled, start, total_s), text_mask=text_mask,
                                  seconds_start=start, seconds_total=total_s, clip_seq_len=clip_in.shape[1],
                                  sync_seq_len=sync_in.shape[1], context_emb=context_emb,
                                  context_global=context_global, context_semantic=context_semantic)

    @property
    def has_context_input(self) -> bool:
        return self.context_embed is not None

    def _inject_context(self, context, known, clip_in, sync_in, n_lat):
        """The context branch's embedding and summary, and the video features with known spans replaced by the learned
        empty features (weights from the latent mask by linear interpolation at each feature's time)."""
        if self.context_embed is None:
            raise MMDiTInputError("this model has no context pathway (context_input=False); use the training-free "
                                  "context path (sampling.context) instead of passing context to the model")
        b = clip_in.shape[0]
        if context is None or tuple(context.shape) != (b, n_lat, self.config.latent_dim) or \
                tuple(known.shape) != (b, n_lat):
            raise MMDiTInputError(f"context must be (batch, frames, latent_dim) = {(b, n_lat, self.config.latent_dim)} "
                                  f"with context_known (batch, frames), got "
                                  f"{None if context is None else tuple(context.shape)} and {tuple(known.shape)}")
        dev, dt = self.device, self.dtype
        known = known.to(dev, torch.bool)
        emb, summary, semantic = self.context_embed(context.to(dev, dt), known)  # (B, N, D), (B, D) or None ×2
        w_clip = known_at_times(known, clip_times(clip_in.shape[1], device=dev), self.latent_rate)  # (B, Nc)
        w_sync = known_at_times(known, sync_token_times(sync_in.shape[1], device=dev), self.latent_rate)
        clip_in = torch.lerp(clip_in, self.empty_clip_feat[None].to(dt).expand_as(clip_in), w_clip[..., None].to(dt))
        sync_in = torch.lerp(sync_in, self.empty_sync_feat[None].to(dt).expand_as(sync_in), w_sync[..., None].to(dt))
        return emb, summary, semantic, clip_in, sync_in

    def _item_mask(self, name: str, mask: torch.Tensor, batch: int) -> torch.Tensor:
        mask = torch.as_tensor(mask, device=self.device).reshape(-1).to(torch.bool)
        if mask.numel() != batch:
            raise MMDiTInputError(f"{name} has {mask.numel()} values for a batch of {batch}; give one bool per item")
        return mask

    def _substitute_text(self, text: torch.Tensor, mask: torch.Tensor | None, keep: torch.Tensor):
        """Replace the text of items with ``keep`` False by the placeholder; lengths may differ, so both are
        padded to the longer one and the padding is masked out."""
        b, nt = text.shape[:2]
        empty = self.empty_string_feat[None].expand(b, -1, -1).to(text.dtype)
        ne = empty.shape[1]
        n = max(nt, ne)
        m_text = mask if mask is not None else torch.ones(b, nt, dtype=torch.bool, device=text.device)
        m_empty = torch.ones(b, ne, dtype=torch.bool, device=text.device)
        text = torch.where(keep[:, None, None], F.pad(text, (0, 0, 0, n - nt)), F.pad(empty, (0, 0, 0, n - ne)))
        mask = torch.where(keep[:, None], F.pad(m_text, (0, n - nt), value=False),
                           F.pad(m_empty, (0, n - ne), value=False))
        return text, (None if bool(mask.all()) else mask)

    def get_empty_conditions(self, batch_size: int, *, like: PreparedConditions | None = None,
                             duration: float | None = None, latent_seq_len: int | None = None,
                             clip_seq_len: int | None = None, sync_seq_len: int | None = None,
                             negative_text_f: torch.Tensor | None = None,
                             negative_text_mask: torch.Tensor | None = None) -> PreparedConditions:
        """Unconditional branch for CFG: learned empty video/sync features and the stored empty text (or a
        negative prompt's features). Lengths and timing are copied from ``like`` (the conditional branch) when
        given, so the two can be batched; otherwise from ``duration``/the explicit lengths.

        The placeholders are identical for every item, so they are projected once and expanded.
        """
        if like is not None:
            latent_seq_len = like.latent_seq_len
            clip_seq_len, sync_seq_len = like.clip_seq_len, like.sync_seq_len
            if like.batch_size != batch_size:
                raise MMDiTInputError(f"batch_size={batch_size} does not match like.batch_size={like.batch_size}")
        n_lat, lens, total = self._resolve_lengths(duration, latent_seq_len)
        n_clip = clip_seq_len or lens.clip
        n_sync = sync_seq_len or lens.sync
        if n_sync % TOKENS_PER_WINDOW:
            raise MMDiTInputError(f"sync_seq_len={n_sync} must be a multiple of 8")
        if negative_text_f is not None:
            self._check_features("negative_text_f", negative_text_f, self.config.text_dim, None)
            if negative_text_f.shape[0] not in (1, batch_size):
                raise MMDiTInputError(f"negative_text_f has batch {negative_text_f.shape[0]}; give 1 or {batch_size}")
        text_1 = negative_text_f is None or negative_text_f.shape[0] == 1
        text = (self.empty_string_feat[None] if negative_text_f is None
                else negative_text_f.to(self.device, self.dtype))
        mask = None if negative_text_mask is None else negative_text_mask.to(self.device, torch.bool)
        nb = 1 if text_1 else batch_size
        clip_p, sync_p, text_p, pooled = self._project(
            self.empty_clip_feat[None].expand(nb, n_clip, -1), self.empty_sync_feat[None].expand(nb, n_sync, -1),
            text, n_lat, mask)
        if text_1:
            clip_p, sync_p, text_p = (v.expand(batch_size, -1, -1) for v in (clip_p, sync_p, text_p))
            pooled = pooled.expand(batch_size, -1)
            if mask is not None:
                mask = mask.expand(batch_size, -1)
        start = total_s = None
        if self.duration_embed is not None:
            if like is not None and like.seconds_start is not None:
                start, total_s = like.seconds_start, like.seconds_total
            else:
                start = as_seconds(0.0, batch_size, name="seconds_start", device=self.device)
                total_s = as_seconds(total, batch_size, name="seconds_total", device=self.device)
        # the known audio is part of the input, not a guided condition: the unconditional branch keeps it
        return PreparedConditions(clip_f=clip_p, sync_f=sync_p, text_f=text_p,
                                  global_c=self._global(pooled, start, total_s), text_mask=mask,
                                  seconds_start=start, seconds_total=total_s, clip_seq_len=n_clip,
                                  sync_seq_len=n_sync, context_emb=None if like is None else like.context_emb,
                                  context_global=None if like is None else like.context_global,
                                  context_semantic=None if like is None else like.context_semantic)

    # ----------------------------------------------------------------------------------------------------------
    # Per-step work
    # ----------------------------------------------------------------------------------------------------------
    def predict_flow(self, latent: torch.Tensor, t: torch.Tensor | float,
                     conditions: PreparedConditions) -> torch.Tensor:
        """Velocity (data − noise) at flow time ``t`` (scalar or (B,), 0 = noise, 1 = data) for ``latent``
        (B, N, latent_dim) in the normalised space. Returns the velocity in ``latent``'s dtype."""
        if latent.ndim != 3 or latent.shape[-1] != self.config.latent_dim:
            raise MMDiTInputError(f"latent must be (batch, frames, {self.config.latent_dim}), got {tuple(latent.shape)}")
        b, n, _ = latent.shape
        if n != conditions.latent_seq_len or b != conditions.batch_size:
            raise MMDiTInputError(f"latent (batch {b}, {n} frames) does not match the prepared conditions (batch "
                                  f"{conditions.batch_size}, {conditions.latent_seq_len} frames); prepare them with "
                                  f"latent_seq_len={n} or the matching duration")
        t = torch.as_tensor(t, device=self.device, dtype=torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise MMDiTInputError(f"t has {t.numel()} values for a batch of {b}")

        x = self.audio_input_proj(latent.to(self.device, self.dtype))  # (B, N, D)
        if conditions.context_emb is not None:
            x = x + conditions.context_emb  # FoleyGenEx: W_x·x_t + W_c·[context; mask]
        clip_f, text_f = conditions.clip_f, conditions.text_f
        global_c = self.t_embed(t) + conditions.global_c
        if conditions.context_global is not None:
            global_c = global_c + conditions.context_global
        if conditions.context_semantic is not None:
            clip_f = clip_f + conditions.context_semantic[:, None]
        global_c = global_c[:, None]  # (B, 1, D)
        extended_c = global_c + conditions.sync_f  # (B, N, D)

        n_clip = clip_f.shape[1]
        latent_rot = self._rope.get(n, 1.0, x.device)
        # aligned RoPE: video frame i sits at audio position i·N/Nc
        clip_rot = self._rope.get(n_clip, n / n_clip, x.device)
        key_mask = None
        if conditions.text_mask is not None:
            key_mask = torch.cat([torch.ones(b, n + n_clip, dtype=torch.bool, device=x.device),
                                  conditions.text_mask], dim=1)  # (B, N + Nc + Nt)

        for block in self.joint_blocks:
            x, clip_f, text_f = block(x, clip_f, text_f, global_c, extended_c, latent_rot, clip_rot, key_mask)
        for block in self.fused_blocks:
            x = block(x, extended_c, latent_rot)
        flow = self.final_layer(x, extended_c if self.config.final_cond == "extended" else global_c)
        return flow.to(latent.dtype)  # (B, N, latent_dim)

    def forward(self, latent: torch.Tensor, t: torch.Tensor | float, clip_f: torch.Tensor | None = None,
                sync_f: torch.Tensor | None = None, text_f: torch.Tensor | None = None, *,
                seconds_start=0.0, seconds_total=None, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One-shot velocity: :meth:`prepare_conditions` (latent length from ``latent``) + :meth:`predict_flow`."""
        cond = self.prepare_conditions(clip_f, sync_f, text_f, latent_seq_len=latent.shape[1],
                                       seconds_start=seconds_start, seconds_total=seconds_total,
                                       text_mask=text_mask, batch_size=latent.shape[0])
        return self.predict_flow(latent, t, cond)
