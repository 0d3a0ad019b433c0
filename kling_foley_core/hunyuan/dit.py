"""HunyuanVideo-Foley diffusion transformer (the "TV2A" MM-DiT of arXiv 2508.16930) as a diffusers model.

Inputs of one forward, in the model's *native* convention (as released):
    x          (B, C, N)  DAC-VAE latents, channels first (C = 128, N = 50 per second in the real model)
    t          (B,)       native time in [0, 1000], 1000 = pure noise
    clip_feat  (B, M, Dv) SigLIP2 frame features (8 fps; M = 64 for 8 s)
    sync_feat  (B, S, Ds) Synchformer tokens (S = 8 per 16-frame window at 25 fps; 192 for 8 s)
    text_feat  (B, L, Dt) CLAP text tokens
and the output is the native velocity ``noise − data`` (B, C, N).

The library's samplers use the opposite direction (t = 0 noise → 1 data, v = data − noise). The mapping lives in
one place, :meth:`HunyuanFoleyDiT.predict_flow`: ``t_native = 1000·(1 − t)`` and ``v = −v_native``, which makes
Euler on the library grid step-for-step identical to the reference FlowMatchDiscreteScheduler(reverse=True).
Latents stay channels-first (B, C, N) everywhere in this family, because that is what the DAC-VAE decodes.

Conditioning that does not change across steps (text/visual projections, the upsampled sync features) is
computed once by :meth:`prepare_conditions` into a :class:`HunyuanFoleyConditions`; only the timestep path and
the transformer run per step.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .dit_blocks import FinalLayer, RopeSet, SingleStreamBlock, TripleStreamBlock
from .layers import (ConvMLP, SwiGLU, TimestepEmbedder, nearest_exact_index, resample_tokens, rope_for_length,
                     rope_tables)

log = logging.getLogger(__name__)

NATIVE_T_MAX = 1000.0  # the released model's time scale: t_native = 1000 is noise, 0 is data

# The two released sizes (configs/hunyuanvideo-foley-{xxl,xl}.yaml) and a toy for tests.
PRESETS: dict[str, dict] = {
    "xxl": dict(depth_triple_blocks=18, depth_single_blocks=36, hidden_size=1536, num_heads=12),
    "xl": dict(depth_triple_blocks=12, depth_single_blocks=24, hidden_size=1408, num_heads=11),
    "tiny": dict(depth_triple_blocks=2, depth_single_blocks=2, hidden_size=64, num_heads=2, sync_feat_dim=24,
                 condition_dim=32, clip_dim=40, audio_vae_latent_dim=16, text_length=7, clip_length=8,
                 sync_length=24),
}

# Keys of the reference YAML ``model_kwargs`` that describe training only (REPA alignment heads are not part of
# the inference network and have no parameters in the released files) or fixed choices.
_TRAINING_ONLY_KEYS = {"depth_triple_ssl_encoder", "depth_single_ssl_encoder", "use_repa_with_audiossl",
                       "enable_learnable_empty_visual_feat", "cross_attention", "attn_mode", "embedder_type",
                       "condition_projection", "rope_dim_list", "model_name", "model_type", "model_precision"}


class HunyuanConfigError(ValueError):
    """An unusable model configuration."""


@dataclass
class HunyuanFoleyConditions:
    """Per-sample conditioning, prepared once and reused at every sampling step.

    text (B, L, D) and visual (B, M, D) are already projected to the model width; sync (B, N, D) is the
    Synchformer path upsampled to the latent length N (None when the config uses no sync features).
    """

    text: torch.Tensor
    visual: torch.Tensor
    sync: torch.Tensor | None
    latent_len: int

    @property
    def batch_size(self) -> int:
        return self.text.shape[0]

    def batch_cat(self, other: "HunyuanFoleyConditions") -> "HunyuanFoleyConditions":
        """Concatenate along the batch (cond ⊕ uncond run in one forward)."""
        if other.latent_len != self.latent_len:
            raise ValueError(f"cannot batch conditions for {self.latent_len} and {other.latent_len} latent frames")
        parts = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "latent_len":
                parts[f.name] = a
            elif a is None or b is None:
                if (a is None) != (b is None):
                    raise ValueError(f"cannot batch conditions: '{f.name}' is missing on one side")
                parts[f.name] = None
            else:
                if a.shape[1:] != b.shape[1:]:
                    raise ValueError(f"cannot batch conditions: '{f.name}' shapes {tuple(a.shape)} vs {tuple(b.shape)}"
                                     f" (cond and uncond need the same duration and text length; otherwise run CFG unbatched)")
                parts[f.name] = torch.cat([a, b], 0)
        return HunyuanFoleyConditions(**parts)

    def to(self, device=None, dtype=None) -> "HunyuanFoleyConditions":
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)
        return HunyuanFoleyConditions(mv(self.text), mv(self.visual), mv(self.sync), self.latent_len)


class HunyuanFoleyDiT(ModelMixin, ConfigMixin):
    """Triple-stream blocks (audio ⊕ visual joint attention with interleaved RoPE, text cross-attention), then
    audio-only blocks; Synchformer features added to the audio tokens and to the per-token adaLN condition."""

    _no_split_modules = ["TripleStreamBlock", "SingleStreamBlock"]

    @register_to_config
    def __init__(
        self,
        depth_triple_blocks: int = 18,
        depth_single_blocks: int = 36,
        hidden_size: int = 1536,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        mlp_act_type: str = "gelu_tanh",
        qkv_bias: bool = True,
        qk_norm: bool = True,
        qk_norm_type: str = "rms",
        interleaved_audio_visual_rope: bool = True,
        sync_modulation: bool = False,  # per-token adaLN of the audio stream; no released model, reference crashes
        add_sync_feat_to_audio: bool = True,
        sync_feat_dim: int = 768,
        sync_in_ksz: int = 1,
        condition_dim: int = 768,
        clip_dim: int = 768,
        audio_vae_latent_dim: int = 128,
        audio_frame_rate: float = 50.0,
        patch_size: int = 1,
        rope_theta: float = 10000.0,
        text_length: int = 77,
        clip_length: int = 64,
        sync_length: int = 192,
        use_attention_mask: bool = False,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise HunyuanConfigError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        if patch_size != 1:
            raise HunyuanConfigError(f"patch_size={patch_size}: only 1 is supported (all released models use 1)")
        if use_attention_mask:
            raise HunyuanConfigError("use_attention_mask=True is not supported (no released model uses a text mask)")
        if sync_in_ksz not in (1, 3):
            raise HunyuanConfigError(f"sync_in_ksz={sync_in_ksz} must be 1 or 3")
        d = hidden_size
        self.head_dim = d // num_heads

        self.audio_embedder = nn.Module()
        self.audio_embedder.proj = nn.Conv1d(audio_vae_latent_dim, d, kernel_size=1)
        self.visual_proj = SwiGLU(clip_dim, d, d)
        self.cond_in = nn.Module()
        self.cond_in.linear_1 = nn.Linear(condition_dim, d)
        self.cond_in.act_1 = nn.SiLU()
        self.cond_in.linear_2 = nn.Linear(d, d)
        self.time_in = TimestepEmbedder(d)
        if sync_modulation or add_sync_feat_to_audio:
            self.sync_in = nn.Sequential(nn.Linear(sync_feat_dim, d), nn.SiLU(),
                                         ConvMLP(d, 4 * d, kernel_size=sync_in_ksz, padding=sync_in_ksz // 2))
            # one learned offset per token position inside a Synchformer window (8 tokens per window)
            self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, 8, sync_feat_dim))
        self.triple_blocks = nn.ModuleList([
            TripleStreamBlock(d, num_heads, mlp_ratio, mlp_act_type, qk_norm, qk_norm_type, qkv_bias)
            for _ in range(depth_triple_blocks)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(d, num_heads, mlp_ratio)
                                            for _ in range(depth_single_blocks)])
        self.final_layer = FinalLayer(d, audio_vae_latent_dim)
        # learned "no video" features used for classifier-free guidance
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, sync_feat_dim))

    # ------------------------------------------------------------------------------------------------ configs
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HunyuanFoleyDiT":
        if name not in PRESETS:
            raise HunyuanConfigError(f"preset '{name}' is unknown; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def config_from_reference(cls, model_kwargs: dict) -> dict:
        """Map the reference YAML's ``model_kwargs`` onto this class's arguments (training-only keys dropped)."""
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = [k for k in model_kwargs if k not in allowed and k not in _TRAINING_ONLY_KEYS]
        if unknown:
            raise HunyuanConfigError(f"reference config keys not understood: {', '.join(sorted(unknown))}")
        if model_kwargs.get("rope_dim_list") not in (None, []):
            raise HunyuanConfigError("rope_dim_list must be null (1-D RoPE over the full head dim)")
        return {k: v for k, v in model_kwargs.items() if k in allowed}

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of activations: the dtype of the (never quantised) output bias."""
        return self.final_layer.linear.bias.dtype

    @property
    def latent_channels(self) -> int:
        return self.config.audio_vae_latent_dim

    def latent_length(self, duration_s: float) -> int:
        """Latent frames for a clip: ``int(duration · audio_frame_rate)`` (50 Hz for the 48 kHz DAC-VAE), as the
        reference sizes its noise (the tiny epsilon only absorbs float error such as 5.3·50 = 264.999…)."""
        return int(duration_s * self.config.audio_frame_rate + 1e-6)

    @staticmethod
    def feature_lengths(duration_s: float, clip_fps: float = 8.0, sync_fps: float = 25.0) -> dict[str, int]:
        """Token counts the encoders produce for a clip of ``duration_s`` seconds: SigLIP2 frames at 8 fps and
        Synchformer tokens (8 per 16-frame window, stride 8, at 25 fps) — 64 and 192 for the 8 s training clips."""
        frames = int(duration_s * sync_fps + 1e-6)
        if frames < 16:
            raise ValueError(f"duration {duration_s} s is too short: Synchformer needs at least 16 frames at "
                             f"{sync_fps:g} fps (0.64 s)")
        return {"clip_len": int(duration_s * clip_fps + 1e-6), "sync_len": ((frames - 16) // 8 + 1) * 8}

    # -------------------------------------------------------------------------------------------- conditions
    def _sync_tokens(self, sync_feat: torch.Tensor, latent_len: int) -> torch.Tensor:
        b, s, c = sync_feat.shape
        if s % 8:
            raise ValueError(f"sync_feat has {s} tokens; Synchformer gives 8 per window, so it must be a multiple of 8")
        if c != self.config.sync_feat_dim:
            raise ValueError(f"sync_feat has {c} channels; this model expects {self.config.sync_feat_dim}")
        x = (sync_feat.view(b, s // 8, 8, c) + self.sync_pos_emb).view(b, s, c)
        x = self.sync_in(x.to(self.compute_dtype))  # (B, S, D)
        return resample_tokens(x, latent_len)  # (B, N, D)

    def prepare_conditions(self, clip_feat: torch.Tensor, sync_feat: torch.Tensor | None, text_feat: torch.Tensor,
                           latent_len: int) -> HunyuanFoleyConditions:
        """Project the encoder features once. Shapes: clip (B, M, Dv), sync (B, S, Ds), text (B, L, Dt)."""
        if clip_feat.shape[-1] != self.config.clip_dim:
            raise ValueError(f"clip_feat has {clip_feat.shape[-1]} channels; this model expects {self.config.clip_dim}"
                             f" (SigLIP2 features)")
        if text_feat.shape[-1] != self.config.condition_dim:
            raise ValueError(f"text_feat has {text_feat.shape[-1]} channels; this model expects "
                             f"{self.config.condition_dim} (CLAP text features)")
        if clip_feat.shape[0] != text_feat.shape[0]:
            raise ValueError(f"clip_feat batch {clip_feat.shape[0]} != text_feat batch {text_feat.shape[0]}")
        dt = self.compute_dtype
        c = self.cond_in
        text = c.linear_2(c.act_1(c.linear_1(text_feat.to(dt))))  # (B, L, D)
        visual = self.visual_proj(clip_feat.to(dt))  # (B, M, D)
        sync = None
        if self.config.sync_modulation or self.config.add_sync_feat_to_audio:
            if sync_feat is None:
                raise ValueError("sync_feat is required: this model adds Synchformer features to the audio tokens")
            sync = self._sync_tokens(sync_feat, latent_len)
        return HunyuanFoleyConditions(text=text, visual=visual, sync=sync, latent_len=int(latent_len))

    def empty_clip(self, batch_size: int, length: int) -> torch.Tensor:
        return self.empty_clip_feat.unsqueeze(0).expand(batch_size, length, -1)  # (B, M, Dv)

    def empty_sync(self, batch_size: int, length: int) -> torch.Tensor:
        return self.empty_sync_feat.unsqueeze(0).expand(batch_size, length, -1)  # (B, S, Ds)

    def get_empty_conditions(self, text_feat: torch.Tensor, *, batch_size: int, clip_len: int, sync_len: int,
                             latent_len: int) -> HunyuanFoleyConditions:
        """Unconditional branch for CFG: learned empty visual/sync features and the given negative-text features.

        The released model stores no empty text embedding: the reference feeds the CLAP features of the negative
        prompt, so ``text_feat`` (1 or B, L, Dt) is those features; a batch of one is expanded.
        """
        if text_feat.shape[0] not in (1, batch_size):
            raise ValueError(f"uncond text_feat batch {text_feat.shape[0]} must be 1 or {batch_size}")
        text_feat = text_feat.expand(batch_size, -1, -1)
        return self.prepare_conditions(self.empty_clip(batch_size, clip_len), self.empty_sync(batch_size, sync_len),
                                       text_feat, latent_len)

    # ------------------------------------------------------------------------------------------------- RoPE
    def _rope(self, n_audio: int, n_visual: int, n_text: int, device) -> RopeSet:
        hd, theta = self.head_dim, self.config.rope_theta
        single = rope_for_length(n_audio, hd, theta, device)
        if self.config.interleaved_audio_visual_rope:
            # audio token i sits at 2i, the visual token resampled to slot i at 2i+1 (nearest-exact both ways)
            up = nearest_exact_index(n_visual, n_audio, device)  # (N,) visual source of each audio slot
            down = nearest_exact_index(n_audio, n_visual, device)  # (M,) slot read back for each visual token
            self_audio = rope_tables(2.0 * torch.arange(n_audio, device=device), hd, theta)
            self_visual = rope_tables(2.0 * down + 1.0, hd, theta)
            gather = up[down]
            if torch.equal(gather, torch.arange(n_visual, device=device)):
                gather = None
        else:
            # separate grids, visual positions stretched to the audio time scale
            self_audio = single
            self_visual = rope_for_length(n_visual, hd, theta, device, freq_scaling=n_audio / n_visual)
            gather = None
        return RopeSet(self_audio=self_audio, self_visual=self_visual, visual_gather=gather, cross_audio=single,
                       cross_visual=rope_for_length(n_visual, hd, theta, device),
                       cross_text=rope_for_length(n_text, hd, theta, device), single=single)

    # ---------------------------------------------------------------------------------------------- forward
    def forward_native(self, x: torch.Tensor, t_native: torch.Tensor, conditions: HunyuanFoleyConditions
                       ) -> torch.Tensor:
        """Velocity ``noise − data`` (B, C, N) for latents x (B, C, N) at native times t (B,) in [0, 1000]."""
        b, c, n = x.shape
        if c != self.config.audio_vae_latent_dim:
            raise ValueError(f"latents have {c} channels; this model expects {self.config.audio_vae_latent_dim}")
        if n != conditions.latent_len:
            raise ValueError(f"latents have {n} frames but the conditions were prepared for {conditions.latent_len}")
        if conditions.batch_size != b:
            raise ValueError(f"latent batch {b} != conditions batch {conditions.batch_size}")
        dt = self.compute_dtype
        vec = self.time_in(t_native.reshape(-1).expand(b) if t_native.numel() == 1 else t_native)  # (B, D)
        audio = self.audio_embedder.proj(x.to(dt)).transpose(1, 2)  # (B, N, D)
        text, visual = conditions.text, conditions.visual
        rope = self._rope(n, visual.shape[1], text.shape[1], x.device)

        audio_vec = None
        if self.config.sync_modulation:
            audio_vec = conditions.sync + vec.unsqueeze(1)  # (B, N, D) per-token adaLN for the audio stream
        for i, block in enumerate(self.triple_blocks):
            if i == 0 and self.config.add_sync_feat_to_audio and not self.config.sync_modulation:
                audio = audio + conditions.sync
            audio, visual = block(audio, text, visual, vec, rope, audio_vec)

        # the audio-only blocks and the final layer are modulated per token by (timestep + sync features)
        token_vec = vec.unsqueeze(1) if conditions.sync is None else conditions.sync + vec.unsqueeze(1)  # (B, N|1, D)
        for block in self.single_blocks:
            audio = block(audio, token_vec, rope.single)
        out = self.final_layer(audio, token_vec)  # (B, N, C)
        return out.transpose(1, 2)  # (B, C, N)

    def forward(self, x: torch.Tensor, t: torch.Tensor, clip_feat: torch.Tensor, text_feat: torch.Tensor,
                sync_feat: torch.Tensor | None = None) -> torch.Tensor:
        """Reference-style call with raw features, native time and native velocity (for parity and debugging)."""
        cond = self.prepare_conditions(clip_feat, sync_feat, text_feat, x.shape[-1])
        return self.forward_native(x, t, cond)

    # ---------------------------------------------------------------------- the library's sampler interface
    @staticmethod
    def to_native_time(t: torch.Tensor) -> torch.Tensor:
        """Library time (0 noise → 1 data) to the released model's time (1000 noise → 0 data)."""
        return NATIVE_T_MAX * (1.0 - t)

    def predict_flow(self, x: torch.Tensor, t: torch.Tensor, conditions: HunyuanFoleyConditions) -> torch.Tensor:
        """Library convention: x (B, C, N) at t ∈ [0, 1] (0 = noise) → v = data − noise (B, C, N), fp32.

        The native network predicts ``noise − data`` at ``1000·(1 − t)``; both flips happen here and only here.
        """
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        v_native = self.forward_native(x, self.to_native_time(t), conditions)
        return -v_native.float()
