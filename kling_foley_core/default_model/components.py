"""``foley-tiny``: the sizes of the default model's parts and how to build each one.

Every part is one of the library's own classes at a small size (plus :class:`WordTextEncoder`), so the default
model runs through exactly the pipeline any other checkpoint does:

==================  =============================================================  ==========================
part                class and size                                                 input / output
==================  =============================================================  ==========================
visual encoder      ClipVisionTower, 48 px, patch 12 (4×4 grid), width 96, 2 layers  8 fps frames → 64-d
sync encoder        MotionFormer, 48 px, patch 24 (2×2), tubelet 2, width 64, 2 layers  16-frame windows @25 fps,
                                                                                     stride 8 → 8 tokens, 64-d
text encoder        WordTextEncoder: caption vocabulary + 256 hashed buckets, 2 layers  ≤ 24 tokens, 64-d
MM-DiT              KlingFoleyMMDiT (Kling design: duration embeddings, learned      20-d latents @ 31.25 Hz
                    placeholders, extended final adaLN, sync tokens in time
                    order), width 96, 3 heads, 2 joint + 2 audio-only blocks,
                    MLP ratio 2, max 10 s
Mel-VAE             KlingMelVAE 16 kHz (80 mels, 20-d, ×2), enc 64 / dec 128 wide  log10-mel ↔ latents
Mono2Stereo         Mono2Stereo 16k, width 64, 4 layers, linear pan law, reading the   mono mel → L/R mels
                    sync tokens (64-d, time-ordered)
vocoder             VocosVocoder("16k"): width 128, 6 ConvNeXt blocks, iSTFT head       mel → 16 kHz waveform
                    (trained, TRAINING.md); GriffinLimVocoder("16k") when the folder
                    holds no weights
==================  =============================================================  ==========================

Why these sizes: SynthHits frames are 112 px with objects 15–25 % of the frame wide, so 48 px keeps every
object's shape and colour (≥ 7 px). The sync tower sees *when* something touches the floor, and (trained with
auxiliary contact, pan and class heads, see ``training/train_foley.py``) *where* and *what*: that per-contact
information is what the MM-DiT's per-token condition and Mono2Stereo read; its 24-px tubelets (2×2 grid, 32
tokens per window) keep it 4× cheaper than the semantic tower's 4×4 grid. Training cost decided the MM-DiT:
measured on the shared 2-core CPU, a width-128, 6-block model took ~11 s CPU per batch of 8 six-second clips
(the ConvSwiGLU input projections and 1-D conv MLPs dominate), width 96 with 4 blocks ~3.7 s, so the latter is
what an hour of CPU training can afford; inference (8 s, 25 Euler steps, batched CFG) stays far below the 10 s
budget (see ``bench/bench_default_model.py``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..encoders.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["FOLEY_TINY", "IMAGE_SIZE", "build_visual_encoder", "build_sync_encoder", "build_text_encoder",
           "build_transformer", "build_vae", "build_mono2stereo", "build_vocoder", "load_vocoder", "FoleyTrainBundle"]

IMAGE_SIZE = 48
NAME = "foley-tiny"

FOLEY_TINY: dict[str, dict] = {
    "visual_encoder": dict(image_size=IMAGE_SIZE, patch_size=12, width=96, layers=2, head_width=32, mlp_width=192,
                           output_dim=64, quick_gelu=False),
    "sync_encoder": dict(image_size=IMAGE_SIZE, patch_size=24, tubelet_size=2, num_frames=16, embed_dim=64, depth=2,
                         num_heads=4, mlp_ratio=2.0),
    "text_encoder": dict(hash_buckets=256, dim=64, num_layers=2, num_heads=4, max_length=24),
    "transformer": dict(latent_dim=20, clip_dim=64, sync_dim=64, text_dim=64, text_seq_len=24, hidden_dim=96,
                        depth=4, fused_depth=2, num_heads=3, mlp_ratio=2.0, proj_style="v2", t_frequency_dim=None,
                        t_max_period=1.0, use_duration=True, duration_fourier_dim=32, learned_empty_text=True,
                        final_cond="extended", sample_rate=16000, mel_hop=256, latent_downsample=2,
                        default_duration=8.0, max_duration=10.0,
                        sync_layout="time"),
    "vae": dict(n_mels=80, latent_dim=20, hidden_dim=64, num_blocks=4, kernel_size=5, norm_groups=8,
                time_downsample=2, decoder_hidden_dim=128),  # the decoder was refitted wider (TRAINING.md §2)
    "mono2stereo": dict(n_mels=80, hidden_dim=64, num_layers=4, kernel_size=5, video_dim=64, log_base="10",
                        pan_law="linear", video_features="sync", frame_rate=62.5),
}


def config(part: str, **overrides) -> dict:
    return {**copy.deepcopy(FOLEY_TINY[part]), **overrides}


def wrap_visual_tower(tower):
    """The library's CLIP visual encoder around a tower: 8 fps, 48-px centre-cropped frames, CLIP normalisation."""
    from ..encoders.visual import ClipVisualEncoder

    return ClipVisualEncoder(tower, name=f"{NAME}-clip", input_size=tower.config.image_size, resize_mode="shortest",
                             mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, normalize=True)


def build_visual_encoder(**overrides):
    from ..encoders.clip_vit import ClipVisionTower

    return wrap_visual_tower(ClipVisionTower(**config("visual_encoder", **overrides)))


def build_sync_encoder(**overrides):
    from ..encoders.synchformer import MotionFormer, SynchformerEncoder

    model = MotionFormer(**config("sync_encoder", **overrides))
    _init_motionformer(model)
    return SynchformerEncoder(model)


@torch.no_grad()
def _init_motionformer(model) -> None:
    # MotionFormer's constructor leaves the position/class embeddings at zero (they come from a checkpoint);
    # trained from scratch they need a small random start, as ViTs use.
    for p in (model.cls_token, model.pos_embed, model.temp_embed):
        nn.init.normal_(p, std=0.02)


def build_text_encoder(vocabulary, **overrides):
    from .text_encoder import WordTextEncoder

    return WordTextEncoder(vocabulary=list(vocabulary), **config("text_encoder", **overrides))


def build_transformer(**overrides):
    from ..models.mmdit import KlingFoleyMMDiT

    return KlingFoleyMMDiT(**config("transformer", **overrides))


def build_vae(**overrides):
    from ..models.mel_vae_kling import KlingMelVAE

    return KlingMelVAE(**config("vae", **overrides))


def build_mono2stereo(**overrides):
    from ..models.mono2stereo import Mono2Stereo

    return Mono2Stereo(**config("mono2stereo", **overrides))


def build_vocoder(n_iter: int = 32):
    from ..models.vocoder_griffinlim import GriffinLimVocoder

    return GriffinLimVocoder("16k", n_iter=n_iter)


def load_vocoder(folder, n_iter: int = 32):
    """The vocoder a weights folder's ``vocoder/config.json`` names: a trained :class:`VocosVocoder` (its weights
    beside the config), else the weight-free Griffin-Lim fallback with ``n_iter`` iterations."""
    import json
    from pathlib import Path

    cfg = Path(folder) / "config.json"
    name = json.loads(cfg.read_text()).get("_class_name") if cfg.is_file() else None
    if name == "VocosVocoder":
        from ..models.vocoder_vocos import VocosVocoder

        return VocosVocoder.from_pretrained(str(folder)).eval()
    return build_vocoder(n_iter)


class FoleyTrainBundle(nn.Module):
    """The parts trained jointly by the flow-matching loss: MM-DiT + visual tower + MotionFormer + text encoder
    (one module so one optimiser, one EMA and one ``accelerator.prepare`` cover them)."""

    def __init__(self, transformer, visual_encoder, sync_encoder, text_encoder):
        super().__init__()
        self.transformer = transformer
        self.visual_encoder = visual_encoder
        self.sync_encoder = sync_encoder
        self.text_encoder = text_encoder

    def forward(self, *args, **kwargs):  # pragma: no cover - the trainer calls the parts
        raise NotImplementedError("FoleyTrainBundle is a container; call its parts")
