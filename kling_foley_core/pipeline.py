"""KlingFoleyPipeline: silent video (+ optional text) → synchronized stereo audio, as a diffusers pipeline."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers import DiffusionPipeline

from .generation import (FoleyConditions, GenerationError, SamplerSettings, decode_latents, frame_specs,
                         generate_latents, mel_to_stereo, stereo_video_features, vocode)

log = logging.getLogger(__name__)


@dataclass
class FoleyOutput:
    waveform: torch.Tensor  # (B, 2, T) float32 in [-1, 1]
    sample_rate: int
    latents: torch.Tensor  # (B, C, N) VAE-space latents
    mel: torch.Tensor  # (B, 2, M, F) stereo log-mel
    duration: float


class KlingFoleyPipeline(DiffusionPipeline):
    """Components: ``transformer`` (MM-DiT), ``vae`` (Mel-VAE), ``vocoder``, and optional ``visual_encoder``,
    ``sync_encoder``, ``text_encoder``, ``mono2stereo``. A missing encoder means that modality is absent (the
    model's learned placeholder is used), so a text-only or video-only graph is the same pipeline.
    """

    model_cpu_offload_seq = "text_encoder->visual_encoder->sync_encoder->transformer->vae->mono2stereo->vocoder"
    # Encoders are public pretrained models loaded from their own files: save_pretrained skips them and
    # from_pretrained takes them as keyword arguments (as diffusers pipelines do with tokenizers).
    _optional_components = ["visual_encoder", "sync_encoder", "text_encoder", "mono2stereo"]

    def __init__(self, transformer, vae, vocoder, visual_encoder=None, sync_encoder=None, text_encoder=None,
                 mono2stereo=None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, vocoder=vocoder, visual_encoder=visual_encoder,
                              sync_encoder=sync_encoder, text_encoder=text_encoder, mono2stereo=mono2stereo)

    # 1. Check inputs -----------------------------------------------------------------------------------------
    def check_inputs(self, video, frames, fps, duration, num_inference_steps, guidance_scale, prompt):
        if video is not None and frames is not None:
            raise GenerationError("pass either video= (a file) or frames= (an IMAGE batch), not both")
        if frames is not None and fps is None:
            raise GenerationError("frames= needs fps= (the frame rate of the IMAGE batch)")
        if video is not None and not Path(video).is_file():
            raise GenerationError(f"video='{video}' does not exist; pass the path of a video file")
        if video is None and frames is None and duration is None:
            raise GenerationError("without a video, pass duration= (seconds of audio to generate)")
        if duration is not None and not float(duration) > 0:
            raise GenerationError(f"duration={duration!r} must be > 0 seconds")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise GenerationError(f"num_inference_steps={num_inference_steps!r} must be a positive integer (25)")
        if guidance_scale < 0:
            raise GenerationError(f"guidance_scale={guidance_scale!r} must be ≥ 0 (1 = off, 4.5 = papers)")
        if not isinstance(prompt, (str, list)):
            raise GenerationError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")

    # 2. Video → features ---------------------------------------------------------------------------------------
    def sample_video(self, video=None, frames=None, fps=None, start: float = 0.0, duration: float | None = None):
        from .video.loader import load_video
        from .video.resample import sample_image_batch

        semantic, sync = frame_specs(self.visual_encoder, self.sync_encoder)
        if video is not None:
            return load_video(video, semantic=semantic, sync=sync, start=start, duration=duration)
        return sample_image_batch(frames, fps, semantic=semantic, sync=sync, start=start, duration=duration)

    def encode_video(self, sampled) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        clip_f = sync_f = None
        if self.visual_encoder is not None and sampled.semantic is not None:
            clip_f = self.visual_encoder.encode(sampled.semantic.frames)  # (1, Nc, Dc)
        if self.sync_encoder is not None and sampled.sync is not None:
            sync_f = self.sync_encoder.encode(sampled.sync.frames)  # (1, Ns, Ds)
        return clip_f, sync_f

    def encode_text(self, prompt, negative_prompt) -> dict:
        """Text features for the MM-DiT: the prompt, the negative prompt, and (without one) the encoding of ""
        for model families that store no empty-text placeholder."""
        if self.text_encoder is None:
            if prompt or negative_prompt:
                log.warning("no text encoder in this pipeline: prompt and negative_prompt are ignored")
            return {}
        pos = self.text_encoder.encode([prompt] if isinstance(prompt, str) else list(prompt))
        neg = self.text_encoder.encode([negative_prompt if negative_prompt else ""])
        out = dict(text_f=pos.hidden, text_mask=pos.mask)
        if negative_prompt:
            out.update(negative_text_f=neg.hidden, negative_text_mask=neg.mask)
        else:
            out.update(empty_text_f=neg.hidden)
        return out

    @torch.no_grad()
    def __call__(self, video: str | Path | None = None, *, frames: torch.Tensor | None = None,
                 fps: float | None = None, prompt: str = "", negative_prompt: str = "",
                 duration: float | None = None, start: float = 0.0, num_inference_steps: int = 25,
                 guidance_scale: float = 4.5, sampler: str = "euler", schedule: str = "uniform", shift: float = 1.0,
                 seed: int = 0, generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None) -> FoleyOutput:
        # 1. Check inputs
        self.check_inputs(video, frames, fps, duration, num_inference_steps, guidance_scale, prompt)
        # 2. Sample the video by timestamp and encode it
        clip_f = sync_f = None
        if video is not None or frames is not None:
            sampled = self.sample_video(video, frames, fps, start, duration)
            duration = sampled.duration
            clip_f, sync_f = self.encode_video(sampled)
        # 3. Encode the text (and the negative prompt for CFG)
        cond = FoleyConditions(duration=float(duration), clip_f=clip_f, sync_f=sync_f,
                               **self.encode_text(prompt, negative_prompt))
        # 4. Denoising loop (flow matching from t = 0 noise to t = 1 data)
        settings = SamplerSettings(sampler=sampler, steps=num_inference_steps, schedule=schedule, shift=shift,
                                   cfg=guidance_scale)
        latents = generate_latents(self.transformer, cond, settings, seed=seed, generator=generator,
                                   callback=callback)
        # 5. Mel-VAE decode → mono mel → Mono2Stereo → stereo mel
        mel = mel_to_stereo(self.mono2stereo, decode_latents(self.vae, latents),
                            stereo_video_features(self.mono2stereo, clip_f, sync_f))
        # 6. Vocoder per channel, trimmed to the requested duration
        sr = int(self.vocoder.sample_rate)
        wave = vocode(self.vocoder, mel, num_samples=int(math.floor(cond.duration * sr)))
        self.maybe_free_model_hooks()
        return FoleyOutput(waveform=wave, sample_rate=sr, latents=latents, mel=mel, duration=cond.duration)
