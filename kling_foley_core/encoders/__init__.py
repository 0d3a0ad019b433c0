"""Conditioning encoders (Kling-Foley §3.1): visual semantics, Synchformer sync features, text.

Registry::

    enc = get_visual_encoder("metaclip-vit-bigg-14-quickgelu", path="G14_fullcc2.5b.safetensors")
    feats = enc.encode(frames_8fps)                    # (B, N, 1280)
    sync = get_sync_encoder("synchformer", path="synchformer_state_dict.pth").encode(frames_25fps)  # (B, S*8, 768)
    text = get_text_encoder("t5-base", path="t5-base/").encode(["dog barking"])   # TextFeatures (B, 77, 768)

``tiny-*`` names build the same code at toy sizes with random weights from ``generator`` (tests, smoke runs).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .base import EncoderError, TextEncoder, TextFeatures, VisualEncoder, preprocess_frames

# Synchformer (and through it diffusers and transformers) is imported on first use, so the registries below
# (read by the nodes' INPUT_TYPES when a workflow is validated) cost only torch.
_SYNCHFORMER_NAMES = frozenset({
    "SYNCHFORMER_CONFIG", "TINY_SYNCHFORMER_CONFIG", "MotionFormer", "SynchformerEncoder",
    "convert_synchformer_state_dict", "encode_sync_frames", "load_motionformer", "num_sync_windows",
})


def __getattr__(name: str):
    if name in _SYNCHFORMER_NAMES:
        from . import synchformer

        return getattr(synchformer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

VISUAL_ENCODERS = ("metaclip-vit-bigg-14-quickgelu", "dfn5b-clip-vit-h-14-384", "siglip2-base-patch16-512",
                   "tiny-clip", "tiny-siglip")
TEXT_ENCODERS = ("t5-base", "clip-vit-h-14", "clap", "tiny-t5", "tiny-clip")
SYNC_ENCODERS = ("synchformer", "tiny-synchformer")

_ALIASES = {
    "metaclip": "metaclip-vit-bigg-14-quickgelu", "metaclip-bigg": "metaclip-vit-bigg-14-quickgelu",
    "vit-bigg-14-quickgelu": "metaclip-vit-bigg-14-quickgelu",
    "dfn5b": "dfn5b-clip-vit-h-14-384", "mmaudio-clip": "dfn5b-clip-vit-h-14-384",
    "siglip2": "siglip2-base-patch16-512", "siglip": "siglip2-base-patch16-512",
    "t5": "t5-base", "google-t5/t5-base": "t5-base",
    "clip": "clip-vit-h-14", "clip-text": "clip-vit-h-14", "dfn5b-clip-vit-h-14-384-text": "clip-vit-h-14",
    "clap-larger-general": "clap", "laion/larger_clap_general": "clap",
}


def _canon(name: str, known: tuple[str, ...], kind: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in known:
        raise EncoderError(f"{kind} encoder {name!r} is not known; choose one of: {', '.join(known)}")
    return key


def get_visual_encoder(name: str, path: str | Path | None = None, *, dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                       **kwargs) -> VisualEncoder:
    """A semantic visual encoder by name (see ``VISUAL_ENCODERS``); ``path`` is a checkpoint file/folder."""
    key = _canon(name, VISUAL_ENCODERS, "visual")
    if key.startswith("siglip") or key == "tiny-siglip":
        from .visual import SiglipVisualEncoder, load_siglip_visual

        if key == "tiny-siglip":
            from transformers import SiglipVisionConfig, SiglipVisionModel

            cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, image_size=32, patch_size=16)
            model = SiglipVisionModel(cfg)
            from .base import random_init_

            random_init_(model, generator)
            return SiglipVisualEncoder(model.to(device=device, dtype=dtype).eval().requires_grad_(False), name=key)
        return load_siglip_visual(path, name=key, dtype=dtype, device=device)
    from .visual import load_clip_visual

    return load_clip_visual(key, path, dtype=dtype, device=device, generator=generator, **kwargs)


def get_text_encoder(name: str, path: str | Path | None = None, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                     **kwargs) -> TextEncoder:
    """A text encoder by name (see ``TEXT_ENCODERS``); ``path`` is a local folder/file or a hub id.

    Extra keywords: ``max_length``, ``padding`` (T5 / CLAP), ``normalize``, ``tokenizer`` (CLIP).
    """
    key = _canon(name, TEXT_ENCODERS, "text")
    from . import text

    if key == "t5-base":
        return text.load_t5(path, dtype=dtype, device=device, **kwargs)
    if key == "clap":
        return text.load_clap(path, dtype=dtype, device=device, **kwargs)
    if key == "clip-vit-h-14":
        return text.load_clip_text("dfn5b-clip-vit-h-14-384", path, dtype=dtype, device=device, **kwargs)
    if key == "tiny-clip":
        return text.load_clip_text("tiny-clip", path, dtype=dtype, device=device, generator=generator, **kwargs)
    # tiny-t5: byte-level tokenizer (needs no files) + a 2-layer T5 encoder with random weights
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from .base import random_init_

    model = T5EncoderModel(T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    random_init_(model, generator)
    return text.HFTextEncoder(model.to(device=device, dtype=dtype).eval().requires_grad_(False), ByT5Tokenizer(),
                              name=key, max_length=kwargs.get("max_length", 77),
                              padding=kwargs.get("padding", "max_length"))


def get_sync_encoder(name: str = "synchformer", path: str | Path | None = None, *,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None, batch_size: int = 4) -> SynchformerEncoder:
    """The Synchformer sync encoder from ``synchformer_state_dict.pth`` (``tiny-synchformer``: random, toy size)."""
    from .synchformer import TINY_SYNCHFORMER_CONFIG, SynchformerEncoder, load_motionformer

    key = _canon(name, SYNC_ENCODERS, "sync")
    if key == "synchformer":
        if path is None:
            from .synchformer import CHECKPOINT_URL

            raise EncoderError(f"sync encoder 'synchformer': pass path= synchformer_state_dict.pth ({CHECKPOINT_URL})")
        model = load_motionformer(path, dtype=dtype, device=device)
    else:
        model = load_motionformer(path, config=TINY_SYNCHFORMER_CONFIG, dtype=dtype, device=device,
                                  generator=generator)
    return SynchformerEncoder(model, batch_size=batch_size)


__all__ = [
    "EncoderError", "TextEncoder", "TextFeatures", "VisualEncoder", "preprocess_frames",
    "MotionFormer", "SynchformerEncoder", "SYNCHFORMER_CONFIG", "TINY_SYNCHFORMER_CONFIG",
    "convert_synchformer_state_dict", "encode_sync_frames", "load_motionformer", "num_sync_windows",
    "get_visual_encoder", "get_text_encoder", "get_sync_encoder",
    "VISUAL_ENCODERS", "TEXT_ENCODERS", "SYNC_ENCODERS",
]
