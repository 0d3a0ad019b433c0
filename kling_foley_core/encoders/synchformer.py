"""Synchformer's visual branch: the sync-feature encoder of Kling-Foley / MMAudio / HunyuanVideo-Foley.

Synchformer (Iashin et al., 2024) is an audio-visual synchronisation model; the Foley systems keep only its video
feature extractor, a MotionFormer: a ViT-B/16 over 16-frame clips with tubelet (2x16x16) patches, so 8 temporal x
14x14 spatial tokens plus a class token, and *divided* space-time attention (each block attends over time at a
fixed patch, then over space within a frame; the class token attends to everything). A spatial aggregation layer
(a pre-norm transformer encoder layer with its own class token) pools each of the 8 frames' 196 tokens into one
vector, giving 8 tokens of 768-d per 16-frame window.

A 25 fps clip is cut into 16-frame windows with stride 8 (0.64 s windows every 0.32 s), so a clip of T frames
yields ``S = (T - 16) // 8 + 1`` windows and ``S * 8`` sync tokens (24 tokens/s). Frames are expected
already preprocessed: 224x224 (shortest-side bicubic resize + centre crop) and normalised with mean = std = 0.5.

Checkpoint: MMAudio's ``synchformer_state_dict.pth`` (also shipped with HunyuanVideo-Foley) holds the visual
branch under ``vfeat_extractor.*`` beside the audio branch and the synchronisation transformer; only the visual
keys are kept (:func:`convert_synchformer_state_dict`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..offload import execution_device, onloads
from .base import HALF_MEAN, HALF_STD, EncoderError, build_model, check_frames, needs_resize, preprocess_frames

log = logging.getLogger(__name__)

SEGMENT_FRAMES = 16
SEGMENT_STRIDE = 8
SYNC_FPS = 25.0
CHECKPOINT_URL = "https://github.com/hkchengrex/MMAudio/releases/download/v0.1/synchformer_state_dict.pth"

SYNCHFORMER_CONFIG = dict(image_size=224, patch_size=16, tubelet_size=2, num_frames=16, embed_dim=768, depth=12,
                          num_heads=12, mlp_ratio=4.0)
# Same structure, tiny sizes: 32 px, 4 frames -> 2 temporal x 2x2 spatial tokens. For fast tests.
TINY_SYNCHFORMER_CONFIG = dict(image_size=32, patch_size=16, tubelet_size=2, num_frames=4, embed_dim=32, depth=2,
                               num_heads=4, mlp_ratio=2.0)


class DividedAttention(nn.Module):
    """Attention along one axis of the (frame, patch) token grid; the class token attends to every token and
    is also prepended to each group's keys/values (MotionFormer's divided space-time attention)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int, axis: str) -> torch.Tensor:
        b, n_tok, d = x.shape  # n_tok = 1 + frames * patches, token order (frame, patch)
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n_tok, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # (B, H, 1, Dh)

        def grid(t: torch.Tensor) -> torch.Tensor:
            g = t[:, :, 1:].unflatten(2, (frames, -1))  # (B, H, F, P, Dh)
            # time: one group per patch, sequence over frames; space: one group per frame, sequence over patches
            return g.transpose(2, 3) if axis == "time" else g

        gq, gk, gv = grid(q), grid(k), grid(v)  # (B, H, G, L, Dh)
        groups = gq.shape[2]
        ck = k[:, :, :1].unsqueeze(2).expand(-1, -1, groups, -1, -1)  # (B, H, G, 1, Dh)
        cv = v[:, :, :1].unsqueeze(2).expand(-1, -1, groups, -1, -1)
        out = F.scaled_dot_product_attention(gq, torch.cat([ck, gk], 3), torch.cat([cv, gv], 3))  # (B, H, G, L, Dh)
        if axis == "time":
            out = out.transpose(2, 3)  # back to (B, H, F, P, Dh)
        out = torch.cat([cls_out, out.flatten(2, 3)], dim=2)  # (B, H, N, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, n_tok, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as nn.GELU() in the reference


class DividedSpaceTimeBlock(nn.Module):
    """Pre-norm block: time attention (norm3), then space attention (norm1), then MLP (norm2)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = DividedAttention(dim, num_heads)
        self.timeattn = DividedAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x), frames, "space")
        return x + self.mlp(self.norm2(x))


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` parameter layout (``in_proj_weight``, ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, n_query: int) -> torch.Tensor:
        """Attention output for the first ``n_query`` positions of ``x`` (keys/values: all of ``x``). A forward,
        not a helper method, so offload hooks bring the weights it reads."""
        b, n, d = x.shape
        h = self.num_heads
        wq, wkv = self.in_proj_weight.split([d, 2 * d])
        bq, bkv = self.in_proj_bias.split([d, 2 * d])
        q = F.linear(x[:, :n_query], wq, bq).view(b, n_query, h, d // h).transpose(1, 2)  # (B, H, Q, Dh)
        k, v = F.linear(x, wkv, bkv).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x (B, H, N, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, Q, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(b, n_query, d))


class SpatialAggregation(nn.Module):
    """Per-frame pooling: a pre-norm transformer encoder layer over [cls; 196 patch tokens], keeping the class
    token's output. Only that row is computed: with pre-norm, row 0 of the output depends on the other rows only
    through keys/values, so this equals the full layer's ``[:, 0]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float = 1e-6):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.self_attn = SelfAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.linear2 = nn.Linear(int(dim * mlp_ratio), dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, P, D) patch tokens of N frames -> (N, D)."""
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, 1+P, D)
        c = x[:, :1] + self.self_attn(self.norm1(x), 1)  # (N, 1, D)
        c = c + self.linear2(F.gelu(self.linear1(self.norm2(c))))
        return c[:, 0]


class PatchEmbed(nn.Module):
    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj


class MotionFormer(ModelMixin, ConfigMixin):
    """Synchformer's video feature extractor. ``forward(video (B, S, T, C, H, W)) -> (B, S, T // tubelet, D)``.

    Parameter names follow the reference (``vfeat_extractor.`` stripped), so a converted checkpoint loads strictly.
    ``patch_embed`` (2-D) is unused by the forward pass but kept because the checkpoint holds it.
    """

    @register_to_config
    def __init__(self, image_size: int = 224, patch_size: int = 16, tubelet_size: int = 2, num_frames: int = 16,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 layer_norm_eps: float = 1e-6):
        super().__init__()
        if image_size % patch_size or num_frames % tubelet_size:
            raise EncoderError(f"MotionFormer: image_size {image_size} / num_frames {num_frames} must be multiples "
                               f"of patch_size {patch_size} / tubelet_size {tubelet_size}")
        self.grid = image_size // patch_size
        self.frames = num_frames // tubelet_size  # temporal tokens per window
        n_patches = self.grid * self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, embed_dim))
        self.temp_embed = nn.Parameter(torch.zeros(1, self.frames, embed_dim))
        self.patch_embed = PatchEmbed(nn.Conv2d(3, embed_dim, patch_size, stride=patch_size))
        self.patch_embed_3d = PatchEmbed(nn.Conv3d(3, embed_dim, (tubelet_size, patch_size, patch_size),
                                                   stride=(tubelet_size, patch_size, patch_size)))
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(embed_dim, num_heads, mlp_ratio, layer_norm_eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.spatial_attn_agg = SpatialAggregation(embed_dim, num_heads, mlp_ratio, layer_norm_eps)

    @property
    def tokens_per_window(self) -> int:
        return self.frames

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, s, t, c, h, w = video.shape
        cfg = self.config
        if (t, c, h, w) != (cfg.num_frames, 3, cfg.image_size, cfg.image_size):
            raise EncoderError(
                f"MotionFormer: windows of shape (T, C, H, W) = {(t, c, h, w)}, expected "
                f"{(cfg.num_frames, 3, cfg.image_size, cfg.image_size)}; preprocess frames to {cfg.image_size} px "
                f"and cut {cfg.num_frames}-frame windows")
        x = video.reshape(b * s, t, c, h, w).transpose(1, 2)  # (BS, C, T, H, W)
        x = self.patch_embed_3d.proj(x).flatten(2).transpose(1, 2)  # (BS, t*g*g, D), token order (frame, patch)
        n_patches = self.grid * self.grid
        pos = self.pos_embed[:, 1:].repeat(1, self.frames, 1) + self.temp_embed.repeat_interleave(n_patches, 1)
        pos = torch.cat([self.pos_embed[:, :1], pos], dim=1)  # (1, 1+t*g*g, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos  # (BS, 1+t*g*g, D)
        for block in self.blocks:
            x = block(x, self.frames)
        x = self.norm(x[:, 1:])  # (BS, t*g*g, D), class token dropped
        x = self.spatial_attn_agg(x.reshape(b * s * self.frames, n_patches, -1))  # (BS*t, D)
        return x.view(b, s, self.frames, -1)  # (B, S, t, D)


# --------------------------------------------------------------------------------------------------------------
# checkpoint
# --------------------------------------------------------------------------------------------------------------


def convert_synchformer_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full Synchformer checkpoint (``vfeat_extractor.*`` + audio branch + sync transformer) -> MotionFormer keys.

    Also accepts an already-converted (bare) MotionFormer state dict.
    """
    from ..compat.checkpoints import CheckpointError, strip_prefix

    sd = strip_prefix(sd, ("module.", "_orig_mod."))
    prefix = "vfeat_extractor."
    if any(k.startswith(prefix) for k in sd):
        out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        dropped = len(sd) - len(out)
        if dropped:
            log.info("Synchformer: kept %d visual-branch tensors, dropped %d (audio branch, sync transformer)",
                     len(out), dropped)
        return out
    if "patch_embed_3d.proj.weight" in sd:
        return dict(sd)
    raise CheckpointError(
        "Synchformer checkpoint holds no 'vfeat_extractor.*' keys (first keys: "
        f"{', '.join(list(sd)[:4])}); expected MMAudio's synchformer_state_dict.pth ({CHECKPOINT_URL})")


def load_motionformer(path: str | Path | None = None, *, config: dict | None = None,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> MotionFormer:
    """MotionFormer from a Synchformer checkpoint, or with random weights when ``path`` is None."""
    from ..compat.checkpoints import read_state_dict

    config = dict(config or SYNCHFORMER_CONFIG)
    sd = None
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            cands = [p / "synchformer_state_dict.pth", p / "synchformer_state_dict.safetensors",
                     p / "diffusion_pytorch_model.safetensors"]
            found = next((c for c in cands if c.is_file()), None)
            if found is None:
                raise EncoderError(f"sync encoder: folder '{p}' has no synchformer_state_dict.pth; download it "
                                   f"from {CHECKPOINT_URL}")
            if found.name == "diffusion_pytorch_model.safetensors":
                return MotionFormer.from_pretrained(str(p), torch_dtype=dtype).to(device).eval()
            p = found
        elif not p.is_file():
            raise EncoderError(f"sync encoder: checkpoint '{p}' does not exist; download synchformer_state_dict.pth "
                               f"from {CHECKPOINT_URL}")
        sd = convert_synchformer_state_dict(read_state_dict(p))
    return build_model(MotionFormer, config, sd, what="Synchformer (MotionFormer visual branch)", dtype=dtype,
                       device=device, generator=generator)


# --------------------------------------------------------------------------------------------------------------
# windowing and the encoder
# --------------------------------------------------------------------------------------------------------------


def num_sync_windows(num_frames: int, segment: int = SEGMENT_FRAMES, stride: int = SEGMENT_STRIDE) -> int:
    """Windows for a clip of ``num_frames`` frames: ``(T - 16) // 8 + 1`` (DESIGN's ``sync_seq_len / 8``);
    a clip shorter than one window still gives one (padded with its last frame)."""
    if num_frames <= 0:
        return 0
    return max(1, (num_frames - segment) // stride + 1)


def encode_sync_frames(model: MotionFormer, frames: torch.Tensor, *, batch_size: int = 4,
                       stride: int | None = None,
                       transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Preprocessed 25 fps frames ``[T, C, H, W]`` or ``[B, T, C, H, W]`` -> sync tokens ``[B, S*t, D]``.

    ``transform``, if given, is applied to each batch of windows ``[n, 16, C, H, W]`` on the model's device
    before the forward (the encoder passes its uint8 -> normalised float step here, so the clip itself stays uint8).

    Windows of ``model.config.num_frames`` (16) frames every ``stride`` (default half a window: 8); trailing frames that do not
    fill a window are dropped, as in the reference. A clip shorter than one window is padded by repeating its
    last frame (logged). ``batch_size`` windows (over batch and time) run per forward, bounding memory.
    """
    if batch_size < 1:
        raise EncoderError(f"sync encoder: batch_size must be >= 1, got {batch_size}")
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    if frames.ndim != 5:
        raise EncoderError(f"sync encoder: expected frames [T, C, H, W] or [B, T, C, H, W], got {tuple(frames.shape)}")
    seg = model.config.num_frames
    stride = stride or seg // 2
    b, t = frames.shape[:2]
    if t == 0:
        raise EncoderError("sync encoder: got 0 frames; the clip is empty (at least 1 frame at 25 fps is needed)")
    if t < seg:
        log.warning("sync encoder: clip has %d frames (< %d, %.2f s at 25 fps); padding with its last frame",
                    t, seg, seg / SYNC_FPS)
        frames = torch.cat([frames, frames[:, -1:].expand(-1, seg - t, -1, -1, -1)], dim=1)
        t = seg
    n_win = (t - seg) // stride + 1
    index = [(bi, si) for bi in range(b) for si in range(n_win)]
    param = next(model.parameters())
    device = execution_device(model)
    outs = []
    for i in range(0, len(index), batch_size):
        chunk = torch.stack([frames[bi, si * stride : si * stride + seg] for bi, si in index[i : i + batch_size]])
        if transform is not None:
            chunk = transform(chunk.to(device=device))  # (n, 16, C, H, W) float32
        chunk = chunk.to(device=device, dtype=param.dtype).unsqueeze(1)  # (n, 1, 16, C, H, W)
        outs.append(model(chunk).float()[:, 0])  # (n, t, D)
    tokens = torch.cat(outs)  # (B*S, t, D)
    return tokens.view(b, n_win * tokens.shape[1], -1)  # (B, S*t, D)


class SynchformerEncoder(ModelMixin):
    """Sync encoder: raw 25 fps frames -> ``[B, S*8, 768]`` sync tokens (24 per second).

    A diffusers model (``device``, ``dtype``, offload hooks): ``save_pretrained`` writes the MotionFormer's folder
    and ``from_pretrained`` reads one, so a pipeline keeps it through a save/load round trip."""

    name = "synchformer"
    fps = SYNC_FPS
    mean = HALF_MEAN
    std = HALF_STD

    def __init__(self, model: MotionFormer, *, batch_size: int = 4):
        super().__init__()
        self.model = model
        self.batch_size = batch_size

    def save_pretrained(self, save_directory, **kwargs) -> None:
        self.model.save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "SynchformerEncoder":
        return cls(MotionFormer.from_pretrained(pretrained_model_name_or_path, **kwargs).eval())

    @property
    def device(self) -> torch.device:
        return execution_device(self)

    @property
    def dim(self) -> int:
        return self.model.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def tokens_per_window(self) -> int:
        return self.model.tokens_per_window

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 / float 0..1 frames -> shortest-side resize to 224 + centre crop, normalised to [-1, 1]."""
        return preprocess_frames(frames, size=self.image_size, mean=self.mean, std=self.std, mode="shortest",
                                 what="sync frames")

    @onloads
    @torch.inference_mode()
    def encode(self, frames: torch.Tensor, *, batch_size: int | None = None, preprocessed: bool = False) -> torch.Tensor:
        """25 fps frames ``[T, C, H, W]`` or ``[B, T, C, H, W]`` (uint8 0..255, float 0..1, or normalised pixels
        with ``preprocessed=True``) -> sync tokens ``[B, S*8, 768]``.

        uint8 frames already at the model's size (what the video loader gives) stay uint8: each batch of windows
        is normalised on the model's device in one fused pass right before its forward. Anything else is
        preprocessed once up front (interpolating overlapping windows twice would cost more)."""
        bs = batch_size or self.batch_size
        if preprocessed:
            return encode_sync_frames(self.model, frames, batch_size=bs)
        check_frames(frames, what="sync frames")
        if frames.dtype == torch.uint8 and not needs_resize(frames, self.image_size):
            return encode_sync_frames(self.model, frames, batch_size=bs, transform=self.preprocess)
        return encode_sync_frames(self.model, self.preprocess(frames), batch_size=bs)
