"""Semantic visual encoders (8 fps frames -> per-frame features ``[B, N, D]``).

* CLIP family, native towers with open_clip's key layout (``clip_vit.py``):
  - ``metaclip-vit-bigg-14-quickgelu`` - Kling-Foley's encoder (MetaCLIP ViT-bigG/14, quick-GELU, 224 px, 1280-d);
  - ``dfn5b-clip-vit-h-14-384`` - MMAudio's encoder (DFN5B CLIP ViT-H/14, 384-px squashed frames, 1024-d);
  - ``tiny-clip`` - same code, toy sizes, random weights (tests, smoke runs).
  The feature is the L2-normalised projected image embedding, as MMAudio's ``encode_image(normalize=True)``.
  When ``open_clip`` is importable and no local file is given, the hub model is built through open_clip instead.
* SigLIP / SigLIP2 via transformers (HunyuanVideo-Foley: ``google/siglip2-base-patch16-512``, 512-px squashed
  frames, mean = std = 0.5, the vision model's pooled output, 768-d).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin

from .base import HALF_MEAN, HALF_STD, EncoderError, VisualEncoder, build_model
from .clip_vit import (
    CLIP_PRESETS, ClipVisionTower, read_clip_checkpoint, vision_config_from_open_clip, vision_state_dict,
)

log = logging.getLogger(__name__)


def open_clip_available() -> bool:
    try:
        import open_clip  # noqa: F401
    except Exception:  # ImportError, or torchvision failing to load beside a CPU torch
        return False
    return True


class ClipVisualEncoder(VisualEncoder, ModelMixin):
    """Native CLIP vision tower + its preprocessing; features are normalised projected class embeddings.

    ``save_pretrained`` writes the tower's folder plus ``encoder_config.json`` (name and preprocessing);
    ``from_pretrained`` reads it back (a folder without that file gets the open_clip defaults)."""

    ENCODER_CONFIG = "encoder_config.json"

    def __init__(self, tower: ClipVisionTower, *, name: str = "clip", input_size: int | None = None,
                 resize_mode: str = "shortest", mean=None, std=None, normalize: bool = True):
        super().__init__()
        self.tower = tower
        self.name = name
        self.dim = tower.config.output_dim
        self.image_size = input_size or tower.config.image_size
        self.resize_mode = resize_mode
        if mean is not None:
            self.mean = tuple(mean)
        if std is not None:
            self.std = tuple(std)
        self.normalize = normalize

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        f = self.tower(pixels)  # (M, D)
        return F.normalize(f, dim=-1) if self.normalize else f

    def save_pretrained(self, save_directory, **kwargs) -> None:
        self.tower.save_pretrained(save_directory, **kwargs)
        self.save_settings(save_directory)

    def save_settings(self, save_directory) -> None:
        """Write ``encoder_config.json`` (name and preprocessing) beside the tower's files."""
        settings = dict(name=self.name, input_size=self.image_size, resize_mode=self.resize_mode, mean=list(self.mean),
                        std=list(self.std), normalize=self.normalize)
        (Path(save_directory) / self.ENCODER_CONFIG).write_text(json.dumps(settings, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ClipVisualEncoder":
        tower = ClipVisionTower.from_pretrained(pretrained_model_name_or_path, **kwargs).eval()
        settings = Path(pretrained_model_name_or_path) / cls.ENCODER_CONFIG
        return cls(tower, **(json.loads(settings.read_text()) if settings.is_file() else {}))


class OpenClipVisualEncoder(VisualEncoder):
    """An ``open_clip`` model's image encoder (used when open_clip is installed and a hub id is asked for)."""

    def __init__(self, model, *, name: str, dim: int, input_size: int, resize_mode: str, mean, std,
                 normalize: bool = True):
        super().__init__()
        self.model = model
        self.name, self.dim, self.image_size, self.resize_mode = name, dim, input_size, resize_mode
        self.mean, self.std, self.normalize = tuple(mean), tuple(std), normalize

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels, normalize=self.normalize)


def load_clip_visual(name: str, path: str | Path | None = None, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                     normalize: bool = True) -> VisualEncoder:
    """A CLIP visual encoder by preset ``name`` from ``path`` (open_clip file, ``local-dir:``/open_clip folder,
    or transformers CLIP folder). ``tiny-clip`` without a path gets random weights from ``generator``."""
    if name not in CLIP_PRESETS:
        raise EncoderError(f"CLIP visual encoder: unknown preset {name!r}; choose one of {', '.join(CLIP_PRESETS)}")
    preset = CLIP_PRESETS[name]
    common = dict(name=name, input_size=preset.input_size, resize_mode=preset.resize_mode, normalize=normalize)
    if path is None:
        if name.startswith("tiny"):
            tower = build_model(ClipVisionTower, preset.vision, None, what=name, dtype=dtype, device=device,
                                generator=generator)
            return ClipVisualEncoder(tower, mean=preset.mean, std=preset.std, **common)
        if preset.open_clip_name and open_clip_available():
            return _load_open_clip(name, preset, dtype=dtype, device=device, normalize=normalize)
        hint = (f"or install the 'openclip' extra to fetch {preset.open_clip_name}" if preset.open_clip_name else "")
        raise EncoderError(f"visual encoder {name!r}: no checkpoint given; pass path= an open_clip checkpoint file "
                           f"or folder (open_clip_config.json + weights) {hint}".rstrip())
    if str(path).startswith("hf-hub:"):
        if not open_clip_available():
            raise EncoderError(f"visual encoder {name!r}: path={str(path)!r} is a hub id, which needs open_clip; "
                               "install the 'openclip' extra or download the checkpoint and pass its folder")
        preset = CLIP_PRESETS[name]
        from dataclasses import replace

        return _load_open_clip(name, replace(preset, open_clip_name=str(path), open_clip_pretrained=None),
                               dtype=dtype, device=device, normalize=normalize)
    ckpt = read_clip_checkpoint(path)
    config = vision_config_from_open_clip(ckpt.model_cfg) if ckpt.model_cfg else dict(preset.vision)
    mean, std = preset.mean, preset.std
    if ckpt.preprocess_cfg:
        mean = tuple(ckpt.preprocess_cfg.get("mean", mean))
        std = tuple(ckpt.preprocess_cfg.get("std", std))
    tower = build_model(ClipVisionTower, config, vision_state_dict(ckpt.state_dict),
                        what=f"CLIP vision tower {name!r} from '{path}'", dtype=dtype, device=device)
    if tower.grid != preset.input_size // config["patch_size"]:
        common["input_size"] = config["image_size"]  # a checkpoint of another resolution: feed its own size
    return ClipVisualEncoder(tower, mean=mean, std=std, **common)


def _load_open_clip(name, preset, *, dtype, device, normalize) -> VisualEncoder:
    import open_clip

    if preset.open_clip_pretrained:
        model = open_clip.create_model(preset.open_clip_name, pretrained=preset.open_clip_pretrained)
    else:
        model = open_clip.create_model(preset.open_clip_name)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return OpenClipVisualEncoder(model, name=name, dim=preset.vision["output_dim"], input_size=preset.input_size,
                                 resize_mode=preset.resize_mode, mean=preset.mean, std=preset.std,
                                 normalize=normalize)


# --------------------------------------------------------------------------------------------------------------
# SigLIP / SigLIP2 (transformers)
# --------------------------------------------------------------------------------------------------------------


class SiglipVisualEncoder(VisualEncoder):
    """transformers ``SiglipVisionModel`` (fixed resolution; ``google/siglip2-base-patch16-512`` is one) or
    ``Siglip2VisionModel`` (NaFlex; frames are squashed to a square and patchified here). Feature: the
    attention-pooled output, which is what ``get_image_features`` returns."""

    mean = HALF_MEAN
    std = HALF_STD
    resize_mode = "squash"

    def __init__(self, model, *, name: str = "siglip2"):
        super().__init__()
        self.model = model
        self.name = name
        cfg = model.config
        self.dim = cfg.hidden_size
        self.naflex = cfg.model_type.startswith("siglip2")
        if self.naflex:
            side = int(math.isqrt(cfg.num_patches))
            self.image_size = side * cfg.patch_size
        else:
            self.image_size = cfg.image_size

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.naflex:
            return self.model(pixel_values=pixels).pooler_output  # (M, D)
        p = self.model.config.patch_size
        m, c, h, w = pixels.shape
        # Siglip2ImageProcessor's patch order: (row, col) patches, each flattened as (py, px, channel).
        patches = pixels.view(m, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(m, -1, p * p * c)
        mask = torch.ones(patches.shape[:2], dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[h // p, w // p]] * m, dtype=torch.long, device=pixels.device)
        return self.model(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes).pooler_output


def load_siglip_visual(path: str | Path | None = None, *, name: str = "siglip2-base-patch16-512",
                       dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> VisualEncoder:
    """SigLIP(2) vision model from a local folder (full SiglipModel or vision-only) or a hub id."""
    from transformers import AutoConfig, SiglipVisionModel, Siglip2VisionModel

    source = str(path) if path is not None else "google/siglip2-base-patch16-512"
    local = Path(source).expanduser()
    if path is not None and not local.exists() and ("/" not in source or source.startswith((".", "/", "~"))):
        raise EncoderError(f"visual encoder {name!r}: '{source}' does not exist; pass a transformers SigLIP folder "
                           "(config.json + model.safetensors) or a hub id")
    try:
        cfg = AutoConfig.from_pretrained(str(local) if local.exists() else source)
    except OSError as exc:
        raise EncoderError(f"visual encoder {name!r}: cannot load '{source}' ({str(exc).splitlines()[0]}); "
                           "download it and pass the local folder as path=") from None
    kind = cfg.model_type
    cls = Siglip2VisionModel if kind.startswith("siglip2") else SiglipVisionModel
    if not kind.startswith("siglip"):
        raise EncoderError(f"visual encoder {name!r}: '{source}' is a {kind!r} model, not SigLIP/SigLIP2")
    model = cls.from_pretrained(str(local) if local.exists() else source, dtype=dtype)
    return SiglipVisualEncoder(model.to(device).eval().requires_grad_(False), name=name)

