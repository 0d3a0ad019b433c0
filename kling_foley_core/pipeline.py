"""KlingFoleyPipeline: silent video (+ optional text) → synchronized stereo audio, as a diffusers pipeline."""
from __future__ import annotations

import importlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from diffusers import DiffusionPipeline

from .generation import (GUIDANCE, FoleyConditions, GenerationError, SamplerSettings, decode_latents, frame_specs,
                         mel_to_stereo, stereo_video_features, vocode)
from .longform import generate_long_latents, plan_for
from .audio.encode import AudioInputError, encode_audio
from .audio.io import read_audio
from .audio.splice import splice_continuation, splice_windows
from .offload import align_weights
from .sampling.context import CONTEXT_MODES, ContextError, make_context

log = logging.getLogger(__name__)


def audio_mode_name(mode: str) -> str:
    """``audio_mode`` checked (FoleyGenEx's names fe / ac-vta are accepted for continue / reference)."""
    name = {"fe": "continue", "extension": "continue", "ac-vta": "reference"}.get(mode, mode)
    if name not in CONTEXT_MODES:
        raise GenerationError(f"audio_mode={mode!r} must be one of {', '.join(CONTEXT_MODES)}")
    return name


@dataclass
class FoleyOutput:
    waveform: torch.Tensor  # (B, 2, T) float32 in [-1, 1]
    sample_rate: int
    latents: torch.Tensor  # (B, C, N) VAE-space latents
    mel: torch.Tensor  # (B, 2, M, F) stereo log-mel
    duration: float


def _import_component_modules(index: Path) -> None:
    """diffusers loads a component only from a module that is already imported: import this library's modules
    that a local ``model_index.json`` names (and no other module)."""
    if not index.is_file():
        return
    for entry in json.loads(index.read_text()).values():
        if isinstance(entry, list) and entry and str(entry[0]).startswith(f"{__package__}."):
            importlib.import_module(entry[0])


class KlingFoleyPipeline(DiffusionPipeline):
    """Components: ``transformer`` (MM-DiT), ``vae`` (Mel-VAE), ``vocoder``, and optional ``visual_encoder``,
    ``sync_encoder``, ``text_encoder``, ``mono2stereo``. A missing encoder means that modality is absent (the
    model's learned placeholder is used), so a text-only or video-only graph is the same pipeline.

        pipe = KlingFoleyPipeline.from_pretrained("foley-tiny")   # the shipped default (or any saved folder)
        pipe.enable_model_cpu_offload()                            # optional, on a GPU machine
        out = pipe("clip.mp4", prompt="two knocks", num_inference_steps=25)
    """

    _offload_order = ("text_encoder", "visual_encoder", "sync_encoder", "transformer", "vae", "mono2stereo", "vocoder")
    _optional_components = ["visual_encoder", "sync_encoder", "text_encoder", "mono2stereo"]

    # accelerate's offload hooks find a module's device through its parameters, so a weight-free component
    # (the Griffin-Lim vocoder) is not offloaded: enable_*_cpu_offload moves it to the execution device instead.
    @property
    def _exclude_from_cpu_offload(self) -> list[str]:
        return [name for name, m in self.components.items()
                if isinstance(m, torch.nn.Module) and next(m.parameters(), None) is None]

    @property
    def model_cpu_offload_seq(self) -> str:
        return "->".join(n for n in self._offload_order if n not in self._exclude_from_cpu_offload)

    def __init__(self, transformer, vae, vocoder, visual_encoder=None, sync_encoder=None, text_encoder=None,
                 mono2stereo=None, apg_eta: float = 1.0):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, vocoder=vocoder, visual_encoder=visual_encoder,
                              sync_encoder=sync_encoder, text_encoder=text_encoder, mono2stereo=mono2stereo)
        # the guidance the weights were tuned for (model_index.json, as SDXL's force_zeros_for_empty_prompt):
        # foley-tiny's is 0 (adaptive projected guidance), a pipeline without the key plain CFG (1)
        self.register_to_config(apg_eta=float(apg_eta))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "KlingFoleyPipeline":
        """A saved pipeline folder, or ``"foley-tiny"`` (the default model shipped inside the package).

        Components come back frozen (``requires_grad`` off), as the library's loaders give them, and with aligned
        weights (:func:`~kling_foley_core.offload.align_weights`): both change which CPU kernels run, so a
        reloaded pipeline gives exactly the audio of the one that was saved. Encoders without a save format
        (CLIP text, SigLIP2, open_clip models) are passed as keywords, e.g. ``text_encoder=...``."""
        from .default_model import NAME, weights_dir

        if str(pretrained_model_name_or_path) == NAME:
            pretrained_model_name_or_path = weights_dir()
        _import_component_modules(Path(pretrained_model_name_or_path) / cls.config_name)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                align_weights(module).requires_grad_(False)
        return pipe

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Every component with a save format goes into ``save_directory``; one without (logged on one line)
        is left out and given to ``from_pretrained`` as a keyword when loading."""
        unsaveable = {name: m for name, m in self.components.items()
                      if m is not None and not callable(getattr(m, "save_pretrained", None))}
        for name, m in unsaveable.items():
            log.warning("save_pretrained: %s (%s) has no save format and is left out; pass it to from_pretrained "
                        "as %s=...", name, type(m).__name__, name)
        self.register_modules(**dict.fromkeys(unsaveable))
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(**unsaveable)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None):
        """diffusers' sequential offload (weights wait on the CPU and each submodule's come to ``device`` only
        while it runs), with two differences: torch's attention layers load whole (``nn.MultiheadAttention`` reads
        ``out_proj.weight`` without calling ``out_proj``, and ``nn.TransformerEncoderLayer`` takes its fused path,
        as without offload, only when it sees its weights); and a CPU ``device`` is
        taken as given (diffusers turns it into ``cpu:0``, which accelerate's hooks mishandle), so the path a GPU
        takes can be run and tested on a CPU."""
        from accelerate import cpu_offload
        from diffusers.utils.torch_utils import get_device

        self.remove_all_hooks()
        if device is None:
            device = get_device()
            if device == "cpu":
                raise RuntimeError("enable_sequential_cpu_offload needs an accelerator; none was found (pass "
                                   "device='cpu' to exercise the hooks on the CPU)")
        device = torch.device(device)
        if device.type != "cpu":
            self._offload_gpu_id = gpu_id or device.index or getattr(self, "_offload_gpu_id", 0)
            device = torch.device(device.type, self._offload_gpu_id)
        self._offload_device = device
        self.to("cpu", silence_dtype_warnings=True)
        for name, model in self.components.items():
            if not isinstance(model, torch.nn.Module):
                continue
            if name in self._exclude_from_cpu_offload:
                model.to(device)
            else:
                cpu_offload(model, device, offload_buffers=len(model._parameters) > 0,
                            preload_module_classes=["MultiheadAttention", "TransformerEncoderLayer"])

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

    def video_features(self, video, frames, fps, start, duration):
        """``(clip_f, sync_f, seconds)`` of the video; a file longer than one encoder chunk is decoded and encoded
        chunk by chunk (:func:`~.longform.encode_video_streamed`), so its frames are never all in memory."""
        from . import longform
        from .video.probe import VideoInputError, clip_span

        if video is not None:
            try:
                seconds = clip_span(video, start, duration or 0.0)[1]
            except VideoInputError as e:
                raise GenerationError(str(e)) from None
            if seconds > longform.STREAM_CHUNK_SECONDS:
                return (*longform.encode_video_streamed(video, start, seconds, visual_encoder=self.visual_encoder,
                                                         sync_encoder=self.sync_encoder), seconds)
        sampled = self.sample_video(video, frames, fps, start, duration)
        return (*self.encode_video(sampled), sampled.duration)

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

    def known_audio(self, audio, sample_rate, mode, context_seconds, edit_start, edit_end):
        """``audio`` → (waveform (B, C, T), its rate, :class:`AudioContext`), or None without audio."""
        if audio is None:
            return None
        try:
            if isinstance(audio, (str, Path)):
                wave, sample_rate = read_audio(audio, what="audio")
            else:
                wave = torch.as_tensor(audio, dtype=torch.float32)
                if sample_rate is None:
                    raise GenerationError("audio= given as a waveform needs audio_sample_rate= (its rate in Hz)")
            wave = wave[None] if wave.ndim == 2 else wave
            enc = encode_audio(self.vae, wave, int(sample_rate), what="audio")
            ctx = make_context(enc.latents, enc.latent_rate, audio_mode_name(mode), context_seconds=context_seconds,
                               edit_start=edit_start, edit_end=edit_end)
        except (AudioInputError, ContextError) as e:
            raise GenerationError(str(e)) from None
        return wave, int(sample_rate), ctx

    @staticmethod
    def _step_callback(bar, callback: Callable[[dict], None] | None) -> Callable[[dict], None]:
        inverted = [0]  # steps of an edit's inversion, which come before the sampling steps

        def on_step(info: dict) -> None:
            if info.get("phase") == "inversion":
                inverted[0] = info["step"]
            done = info.get("window", 0) * bar.total // info.get("windows", 1)  # the windows before this one
            bar.update(done + info["step"] + (0 if info.get("phase") == "inversion" else inverted[0]) - bar.n)
            if callback is not None:
                callback(info)
        return on_step

    @torch.no_grad()
    def __call__(self, video: str | Path | None = None, *, frames: torch.Tensor | None = None,
                 fps: float | None = None, prompt: str = "", negative_prompt: str = "",
                 duration: float | None = None, start: float = 0.0, num_inference_steps: int = 25,
                 guidance_scale: float = 4.5, sampler: str = "euler", schedule: str = "uniform", shift: float = 1.0,
                 seed: int = 0, generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None, video_semantics: bool = True,
                 audio: str | Path | torch.Tensor | None = None, audio_sample_rate: int | None = None,
                 audio_mode: str = "continue", context_seconds: float = 0.0, edit_start: float = 0.0,
                 edit_end: float = 0.0, watermark: bool = True, guidance: str = "all",
                 guidance_rescale: float = 0.0, apg_eta: float | None = None) -> FoleyOutput:
        """Generate stereo audio for ``video`` (a file) or ``frames`` (+ ``fps``), or for ``duration`` seconds from
        ``prompt`` alone (text to audio).

        ``video_semantics=False`` drops the video's semantic features (TC-VTA: timing from the video, timbre from
        ``prompt``). ``audio`` (a file, or a (C, T) / (B, C, T) waveform at ``audio_sample_rate``) is known audio
        (FoleyGenEx), used as ``audio_mode``: ``continue`` (it is the soundtrack's start, its last
        ``context_seconds`` (0 = all) are taken as the sound of the clip's first seconds and returned as they are,
        the rest of the clip is generated and joined to them with a 50 ms crossfade), ``edit`` (the window
        [``edit_start``, ``edit_end``] s of it is regenerated; outside it the audio is returned unchanged) or
        ``reference`` (its timbre is copied; its first ``context_seconds``, 0 = all). ``watermark=False`` leaves out
        the inaudible provenance watermark every generated soundtrack carries by default. ``guidance="text"`` makes
        classifier-free guidance drop only the prompt (video, sync and known audio stay in both branches), so
        ``guidance_scale`` strengthens the text's own effect (TC-VTA, edits by text). ``guidance_rescale`` (0-1, as
        in diffusers) pulls the guided prediction's spread back towards the conditional one's (less over-saturated,
        quieter hits at high ``guidance_scale``). ``apg_eta`` (0-1; None = the pipeline's own ``config.apg_eta``, 0
        for foley-tiny, 1 = plain CFG) keeps that share of guidance's push along the sound already there (adaptive
        projected guidance): at 0 guidance sharpens what and when without making every hit louder."""
        # 1. Check inputs
        self.check_inputs(video, frames, fps, duration, num_inference_steps, guidance_scale, prompt)
        if guidance not in GUIDANCE:
            raise GenerationError(f"guidance={guidance!r} must be one of {', '.join(GUIDANCE)}")
        if not 0.0 <= guidance_rescale <= 1.0:  # NaN fails too
            raise GenerationError(f"guidance_rescale={guidance_rescale!r} must be in [0, 1] (0 = plain CFG)")
        apg_eta = float(getattr(self.config, "apg_eta", 1.0)) if apg_eta is None else apg_eta
        if not 0.0 <= apg_eta <= 1.0:
            raise GenerationError(f"apg_eta={apg_eta!r} must be in [0, 1] (1 = plain CFG, 0 = foley-tiny's)")
        known = self.known_audio(audio, audio_sample_rate, audio_mode, context_seconds, edit_start, edit_end)
        # 2. Sample the video by timestamp and encode it
        clip_f = sync_f = None
        if video is not None or frames is not None:
            clip_f, sync_f, duration = self.video_features(video, frames, fps, start, duration)
        stereo_feats = (clip_f, sync_f)
        if not video_semantics:
            clip_f = None
        # 3. Encode the text (and the negative prompt for CFG)
        cond = FoleyConditions(duration=float(duration), clip_f=clip_f, sync_f=sync_f,
                               context=known[2] if known else None, **self.encode_text(prompt, negative_prompt))
        # 4. Denoising loop (flow matching from t = 0 noise to t = 1 data)
        settings = SamplerSettings(sampler=sampler, steps=num_inference_steps, schedule=schedule, shift=shift,
                                   cfg=guidance_scale, guidance=guidance, guidance_rescale=guidance_rescale,
                                   apg_eta=apg_eta)
        inversion = num_inference_steps if cond.context is not None and cond.context.invert else 0
        windows = len(plan_for(self.transformer, cond.duration))  # a long clip: windows joined by Foley extension
        with self.progress_bar(total=(num_inference_steps + inversion) * windows) as bar:
            latents = generate_long_latents(self.transformer, cond, settings, seed=seed, generator=generator,
                                            callback=self._step_callback(bar, callback)).latents
        # 5. Mel-VAE decode → mono mel → Mono2Stereo → stereo mel
        mel = mel_to_stereo(self.mono2stereo, decode_latents(self.vae, latents),
                            stereo_video_features(self.mono2stereo, *stereo_feats))
        # 6. Vocoder per channel, trimmed to the requested duration
        sr = int(self.vocoder.sample_rate)
        wave = vocode(self.vocoder, mel, num_samples=int(math.floor(cond.duration * sr)), watermark=watermark)
        if known and known[2].window is not None:  # edit: the original's samples outside the window
            wave = splice_windows(known[0], known[1], wave, sr, *known[2].window)
            sr = known[1]
        elif known and known[2].mode == "continue":  # Foley extension: the given audio's own samples to the seam
            original, rate, ctx = known
            wave = splice_continuation(original, rate, wave, sr, ctx.seconds, cond.duration, offset=ctx.offset)
            sr = rate
        self.maybe_free_model_hooks()
        return FoleyOutput(waveform=wave, sample_rate=sr, latents=latents, mel=mel, duration=cond.duration)
