"""Native CLIP towers (vision and text) with open_clip's state-dict layout.

open_clip needs torchvision, which cannot live beside the CPU torch wheel, so the towers are written here with
exactly open_clip's parameter names (``conv1.weight``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer.resblocks.N.{ln_1, attn.in_proj_weight/bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``,
``ln_post``, ``proj``; text: ``token_embedding``, ``positional_embedding``, ``ln_final``, ``text_projection``).
An open_clip checkpoint (the ``visual.*`` half for the vision tower, the rest for the text tower) therefore
loads strictly with no renaming, and a transformers ``CLIPModel`` checkpoint loads through
:func:`convert_hf_clip_state_dict`.

Presets: MetaCLIP ViT-bigG-14-quickgelu (Kling-Foley's visual encoder) and DFN5B-CLIP-ViT-H-14-384 (MMAudio's
visual and text encoder; quick-GELU, 378-px grid fed with 384-px frames exactly as MMAudio does: the stride-14
patch conv simply ignores the last 6 pixel rows/columns).
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, EncoderError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# presets (open_clip model_configs; the text towers are those of the same CLIP models)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPreset:
    vision: dict
    text: dict
    input_size: int  # pixels fed to the tower
    resize_mode: str  # "shortest" (resize + centre crop) or "squash"
    mean: tuple = OPENAI_CLIP_MEAN
    std: tuple = OPENAI_CLIP_STD
    open_clip_name: str | None = None  # model name (and pretrained tag) for open_clip, when importable
    open_clip_pretrained: str | None = None


CLIP_PRESETS: dict[str, ClipPreset] = {
    "metaclip-vit-bigg-14-quickgelu": ClipPreset(
        vision=dict(image_size=224, patch_size=14, width=1664, layers=48, head_width=104,
                    mlp_width=int(1664 * 4.9231), output_dim=1280, quick_gelu=True),
        text=dict(context_length=77, vocab_size=49408, width=1280, heads=20, layers=32, output_dim=1280,
                  quick_gelu=True),
        input_size=224, resize_mode="shortest",
        open_clip_name="ViT-bigG-14-quickgelu", open_clip_pretrained="metaclip_fullcc",
    ),
    "dfn5b-clip-vit-h-14-384": ClipPreset(
        vision=dict(image_size=378, patch_size=14, width=1280, layers=32, head_width=80,
                    mlp_width=5120, output_dim=1024, quick_gelu=True),
        text=dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=24, output_dim=1024,
                  quick_gelu=True),
        # MMAudio squashes every frame to 384x384 (open_clip's own preprocess would use 378).
        input_size=384, resize_mode="squash",
        open_clip_name="hf-hub:apple/DFN5B-CLIP-ViT-H-14-384",
    ),
    "tiny-clip": ClipPreset(
        vision=dict(image_size=56, patch_size=14, width=64, layers=2, head_width=16, mlp_width=256,
                    output_dim=32, quick_gelu=True),
        text=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2, output_dim=32,
                  quick_gelu=True),
        input_size=56, resize_mode="shortest",
    ),
}


# --------------------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------------------


class QuickGELU(nn.Module):
    """OpenAI CLIP's activation; the MetaCLIP and DFN5B checkpoints were trained with it (not exact GELU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ClipAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names, run through SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise EncoderError(f"CLIP tower: width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int, quick_gelu: bool, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = ClipAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class ClipTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_width: int, quick_gelu: bool, eps: float):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_width, quick_gelu, eps) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


# --------------------------------------------------------------------------------------------------------------
# towers
# --------------------------------------------------------------------------------------------------------------


class ClipVisionTower(ModelMixin, ConfigMixin):
    """open_clip ``VisionTransformer`` (class-token pooling, ``ln_post`` before pooling, projection ``proj``)."""

    @register_to_config
    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        width: int = 768,
        layers: int = 12,
        head_width: int = 64,
        mlp_width: int = 3072,
        output_dim: int = 512,
        quick_gelu: bool = False,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.grid = image_size // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid * self.grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=layer_norm_eps)
        self.transformer = ClipTransformer(width, layers, width // head_width, mlp_width, quick_gelu, layer_norm_eps)
        self.ln_post = nn.LayerNorm(width, eps=layer_norm_eps)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, pixels: torch.Tensor, *, return_tokens: bool = False):
        """Normalised pixels ``[B, 3, H, W]`` -> projected class embedding ``[B, output_dim]``
        (and, with ``return_tokens``, the post-norm patch tokens ``[B, grid*grid, width]``)."""
        x = self.conv1(pixels)  # (B, W, g, g)
        if x.shape[-2:] != (self.grid, self.grid):
            p = self.config.patch_size
            raise EncoderError(
                f"CLIP vision tower: pixels {tuple(pixels.shape[-2:])} give a {tuple(x.shape[-2:])} patch grid, the "
                f"checkpoint expects {self.grid}x{self.grid}; resize frames to {self.grid * p}..{self.grid * p + p - 1} px"
            )
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (B, 1+g*g, W)
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x)
        pooled = x[:, 0] @ self.proj  # (B, output_dim)
        return (pooled, x[:, 1:]) if return_tokens else pooled


class ClipTextTower(ModelMixin, ConfigMixin):
    """open_clip ``TextTransformer`` (causal), returning every token's hidden state after ``ln_final``.

    That per-token output is what MMAudio conditions on (its ``patch_clip`` hack), not the pooled embedding.
    """

    @register_to_config
    def __init__(
        self,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
        mlp_width: int | None = None,
        output_dim: int | None = 512,
        quick_gelu: bool = False,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer = ClipTransformer(width, layers, heads, mlp_width or 4 * width, quick_gelu, layer_norm_eps)
        self.ln_final = nn.LayerNorm(width, eps=layer_norm_eps)
        # Unused by the per-token features; kept (when the checkpoint has it) so open_clip files load strictly.
        self.text_projection = nn.Parameter(torch.randn(width, output_dim) * width**-0.5) if output_dim else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, L]`` (L <= context_length) -> hidden states after ``ln_final`` ``[B, L, width]``."""
        n = ids.shape[1]
        if n > self.config.context_length:
            raise EncoderError(f"CLIP text tower: {n} tokens exceed context_length {self.config.context_length}")
        x = self.token_embedding(ids) + self.positional_embedding[:n]  # (B, L, W)
        # The causal mask is built here, not kept as a buffer, so meta-device init + assign-load stays complete.
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
        x = self.transformer(x, attn_mask=causal)
        return self.ln_final(x)


# --------------------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------------------

_WEIGHT_FILES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin",
)


@dataclass
class ClipCheckpoint:
    state_dict: dict[str, torch.Tensor]  # full model, open_clip key names
    model_cfg: dict | None = None  # open_clip "model_cfg" when the folder holds open_clip_config.json
    preprocess_cfg: dict | None = None


def _hf_vision_cfg_to_open_clip(cfg: dict) -> dict:
    return dict(image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=cfg["hidden_size"],
                layers=cfg["num_hidden_layers"], head_width=cfg["hidden_size"] // cfg["num_attention_heads"],
                mlp_width=cfg["intermediate_size"], quick_gelu=cfg.get("hidden_act", "quick_gelu") == "quick_gelu",
                layer_norm_eps=cfg.get("layer_norm_eps", 1e-5))


def convert_hf_clip_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPModel`` / ``CLIPVisionModelWithProjection`` / ``CLIPTextModel`` keys -> open_clip keys."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    # transformers 5 saves CLIPTextModel / CLIPVisionModel keys without the "text_model."/"vision_model." prefix
    bare = "visual." if "embeddings.patch_embedding.weight" in sd else ""
    for key, value in sd.items():
        if key.startswith(("embeddings.", "encoder.", "final_layer_norm.", "pre_layrnorm.", "post_layernorm.")):
            prefix, rest = bare, key
        elif key.startswith("vision_model."):
            prefix, rest = "visual.", key[len("vision_model."):]
        elif key.startswith("text_model."):
            prefix, rest = "", key[len("text_model."):]
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
            continue
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
            continue
        else:
            continue  # logit_scale, position_ids
        if rest.startswith("encoder.layers."):
            idx, sub = rest[len("encoder.layers."):].split(".", 1)
            base = f"{prefix}transformer.resblocks.{idx}."
            if sub.startswith("self_attn.") and sub.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((base, sub.rsplit(".", 1)[1]), {})[sub.split(".")[1][0]] = value
                continue
            sub = (sub.replace("self_attn.out_proj", "attn.out_proj").replace("layer_norm1", "ln_1")
                   .replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[base + sub] = value
            continue
        simple = {
            "embeddings.class_embedding": "class_embedding",
            "embeddings.patch_embedding.weight": "conv1.weight",
            "embeddings.position_embedding.weight": "positional_embedding",
            "embeddings.token_embedding.weight": "token_embedding.weight",
            "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",
            "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias",
            "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias",
        }
        if rest in simple:
            out[prefix + simple[rest]] = value
    for (base, kind), parts in qkv.items():
        out[f"{base}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def read_clip_checkpoint(path: str | Path) -> ClipCheckpoint:
    """An open_clip file, a ``local-dir:`` / open_clip folder (``open_clip_config.json`` + weights), or a
    transformers CLIP folder (``config.json`` + ``model.safetensors``), returned with open_clip key names."""
    from ..compat.checkpoints import read_state_dict

    text = str(path)
    if text.startswith("local-dir:"):
        text = text[len("local-dir:"):]
    p = Path(text).expanduser()
    if not p.exists():
        raise EncoderError(f"CLIP checkpoint: '{p}' does not exist; pass an open_clip .safetensors/.bin file or folder")
    model_cfg = preprocess_cfg = None
    hf_cfg = None
    if p.is_dir():
        oc = p / "open_clip_config.json"
        if oc.is_file():
            cfg = json.loads(oc.read_text())
            model_cfg, preprocess_cfg = cfg.get("model_cfg"), cfg.get("preprocess_cfg")
        elif (p / "config.json").is_file():
            hf_cfg = json.loads((p / "config.json").read_text())
        weights = next((p / f for f in _WEIGHT_FILES if (p / f).is_file()), None)
        if weights is None:
            raise EncoderError(f"CLIP checkpoint: folder '{p}' holds none of {', '.join(_WEIGHT_FILES)}")
        p = weights
    sd = read_state_dict(p)
    if any(k.startswith(("vision_model.", "text_model.", "embeddings.")) for k in sd):
        sd = convert_hf_clip_state_dict(sd)
        if hf_cfg is not None and model_cfg is None:
            model_cfg = _hf_cfg_to_open_clip(hf_cfg)
    return ClipCheckpoint(sd, model_cfg, preprocess_cfg)


def _hf_cfg_to_open_clip(hf_cfg: dict) -> dict:
    """transformers CLIPConfig / CLIPVisionConfig / CLIPTextConfig -> an open_clip-style ``model_cfg``."""
    kind = hf_cfg.get("model_type", "")
    vcfg = hf_cfg.get("vision_config") or (hf_cfg if kind == "clip_vision_model" else None)
    tcfg = hf_cfg.get("text_config") or (hf_cfg if kind == "clip_text_model" else None)
    out: dict = {"embed_dim": hf_cfg.get("projection_dim") or (vcfg or tcfg or {}).get("projection_dim", 512)}
    if vcfg:
        out["vision_cfg"] = _hf_vision_cfg_to_open_clip(vcfg)
    if tcfg:
        out["text_cfg"] = dict(context_length=tcfg.get("max_position_embeddings", 77),
                               vocab_size=tcfg.get("vocab_size", 49408), width=tcfg["hidden_size"],
                               heads=tcfg["num_attention_heads"], layers=tcfg["num_hidden_layers"],
                               mlp_width=tcfg.get("intermediate_size"),
                               quick_gelu=tcfg.get("hidden_act", "quick_gelu") == "quick_gelu",
                               layer_norm_eps=tcfg.get("layer_norm_eps", 1e-5))
    out["quick_gelu"] = bool((vcfg or tcfg or {}).get("hidden_act", "quick_gelu") == "quick_gelu")
    return out


def vision_config_from_open_clip(model_cfg: dict) -> dict:
    """open_clip ``model_cfg`` (``embed_dim``, ``quick_gelu``, ``vision_cfg``) -> :class:`ClipVisionTower` kwargs."""
    if "vision_cfg" not in model_cfg:
        raise EncoderError("CLIP checkpoint: its config describes no vision tower (a text-only CLIP model?)")
    v = model_cfg["vision_cfg"]
    width = v["width"]
    mlp_width = v.get("mlp_width") or int(width * v.get("mlp_ratio", 4.0))
    return dict(image_size=v["image_size"], patch_size=v["patch_size"], width=width, layers=v["layers"],
                head_width=v.get("head_width", 64), mlp_width=mlp_width,
                output_dim=model_cfg.get("embed_dim") or v.get("output_dim"),
                quick_gelu=bool(v.get("quick_gelu", model_cfg.get("quick_gelu", False))),
                layer_norm_eps=v.get("layer_norm_eps", 1e-5))


def vision_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision tower's half of a full CLIP state dict (``visual.*``), or ``sd`` itself when already bare."""
    if any(k.startswith("visual.") for k in sd):
        return {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return dict(sd)


def text_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's half of a full open_clip state dict (everything but ``visual.*`` and the logit scale)."""
    drop = ("visual.", "logit_scale", "logit_bias", "attn_mask")
    return {k: v for k, v in sd.items() if not k.startswith(drop)}


def text_config_from_open_clip(model_cfg: dict, default: dict) -> dict:
    """open_clip ``model_cfg`` (``text_cfg``) -> :class:`ClipTextTower` kwargs (``default`` where it is silent)."""
    t = model_cfg.get("text_cfg")
    if not t:
        return dict(default)
    return dict(context_length=t.get("context_length", 77), vocab_size=t.get("vocab_size", 49408), width=t["width"],
                heads=t["heads"], layers=t["layers"], mlp_width=t.get("mlp_width") or int(t["width"] * t.get("mlp_ratio", 4.0)),
                output_dim=model_cfg.get("embed_dim", default.get("output_dim")),
                quick_gelu=bool(t.get("quick_gelu", model_cfg.get("quick_gelu", False))),
                layer_norm_eps=t.get("layer_norm_eps", 1e-5))
