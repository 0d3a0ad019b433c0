"""The generation stages as plain functions: features → latents → mono mel → stereo mel → waveform.

Each function is one box of Kling-Foley's Fig. 2, so a ComfyUI node (or the pipeline) calls exactly one of them.
Conventions: latents are channels-last ``(B, N, C)`` in the transformer's normalised space while sampling, and
``(B, C, N)`` in the VAE's space afterwards (the VAE is a 1-D conv net over time); mels are ``(B, M, F)`` mono
or ``(B, 2, M, F)`` stereo; waveforms are ``(B, C, T)`` float32.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from .offload import execution_device, onload
from .sampling import CFGDenoiser, make_schedule, sample
from .sampling.context import AudioContext, ContextError, ContextVelocity, invert

log = logging.getLogger(__name__)


class GenerationError(ValueError):
    """A generation argument that cannot work (named, with the value and the fix)."""


@dataclass
class FoleyConditions:
    """Everything the MM-DiT is conditioned on, before projection (what the encoder nodes produce).

    A missing modality is None: the model's learned placeholder stands in for it.
    """

    duration: float
    clip_f: Optional[torch.Tensor] = None  # (B, Nc, clip_dim) semantic video features at 8 fps
    sync_f: Optional[torch.Tensor] = None  # (B, Ns, sync_dim) Synchformer tokens at 24 per second
    text_f: Optional[torch.Tensor] = None  # (B, Nt, text_dim)
    text_mask: Optional[torch.Tensor] = None  # (B, Nt) bool
    negative_text_f: Optional[torch.Tensor] = None  # (1|B, Nt', text_dim): replaces the empty text in CFG
    negative_text_mask: Optional[torch.Tensor] = None
    seconds_start: float = 0.0
    empty_text_f: Optional[torch.Tensor] = None  # (1, Nt, text_dim): the encoder's features of "" (for models
    # that store no empty-text placeholder, e.g. HunyuanVideo-Foley)
    context: Optional[AudioContext] = None  # known audio (Foley extension, editing, reference): sampling/context.py
    latent_frames: Optional[int] = None  # explicit latent length (a reference prepended to the target)

    @property
    def batch_size(self) -> int:
        given = [x for x in (self.clip_f, self.sync_f, self.text_f) if x is not None]
        return given[0].shape[0] if given else 1


@dataclass
class SamplerSettings:
    """How to integrate the flow: sampler name, step grid, guidance."""

    sampler: str = "euler"
    steps: int = 25
    schedule: str = "uniform"
    shift: float = 1.0
    cfg: float = 4.5
    batched_cfg: bool = True
    guidance_rescale: float = 0.0  # φ of CFG rescale (sampling/guidance.py): 0 = plain CFG
    apg_eta: float = 1.0  # η of adaptive projected guidance (sampling/guidance.py): 1 = plain CFG
    guidance: str = "all"  # what CFG's unconditional branch drops: "all" conditions (the papers), only the
    # "text" (video, sync and known audio kept), so cfg scales the prompt's own effect (TC-VTA, edits by text), or
    # only the "reference": the context summary's shares (everything else kept), so cfg scales what the known
    # audio's summary says (AC-VTA; a model whose context pathway has the summary, transformer.context_global)


def frame_specs(visual_encoder, sync_encoder):
    """What the video loader must deliver for these encoders (None where the encoder is absent).

    Frames are resized once, at load time, to each encoder's input size and kept as uint8 (a quarter of the
    memory of float frames); each encoder normalises its own batches, so its resize step is a no-op.
    """
    from .video.resample import SYNC, FrameSpec

    semantic = sync = None
    if visual_encoder is not None:
        resize = "stretch" if getattr(visual_encoder, "resize_mode", "shortest") == "squash" else "crop"
        semantic = FrameSpec(fps=visual_encoder.fps, size=visual_encoder.image_size, resize=resize, output="uint8")
    if sync_encoder is not None:
        sync = FrameSpec(fps=sync_encoder.fps, size=sync_encoder.image_size, resize="crop", output="uint8",
                         min_frames=SYNC.min_frames)
    return semantic, sync


def check_duration(duration: float, transformer) -> float:
    """A duration the model can generate, or a clear error."""
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise GenerationError(f"duration={duration!r} must be a number of seconds") from None
    from .limits import max_seconds

    limit = max_seconds(transformer.config)  # the one place the limit is decided (the runner checks it up front too)
    if not 0 < duration <= limit:
        raise GenerationError(f"duration={duration:g} s is outside this model's range (0, {limit:g}] s; "
                              f"trim the video or generate it in parts")
    return duration


def initial_noise(shape: tuple[int, ...], *, seed: int | None = None, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian noise from an explicit generator (drawn on the CPU so a seed gives the same audio everywhere)."""
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed or 0) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


@dataclass
class PreparedFlow:
    """What a transformer family needs to sample: projected conditions, the CFG branch, the noise shape and how
    sampled latents become VAE latents ``(B, C, N)``."""

    cond: object
    uncond: object
    shape: tuple[int, ...]
    to_vae: Callable[[torch.Tensor], torch.Tensor]
    from_vae: Callable[[torch.Tensor], torch.Tensor] = None  # VAE latents (B, C, N) → the sampler's layout
    time_axis: int = 1  # the frame axis of the sampler's layout


def context_path(transformer) -> str:
    """Which context path a model takes: ``pathway`` (trained FoleyGenEx injection) or ``training-free``."""
    return "pathway" if getattr(transformer, "has_context_input", False) else "training-free"


def latent_frames(transformer, cond: FoleyConditions, duration: float) -> int:
    """Latent length of the span to generate."""
    if hasattr(transformer, "forward_native"):
        return int(transformer.latent_length(duration))
    return int(cond.latent_frames or transformer.sequence_lengths(duration).latent)


def _prepare_mmdit(transformer, cond: FoleyConditions, duration: float, guided: bool, placed=None,
                   guidance: str = "all") -> PreparedFlow:
    """Kling-Foley / MMAudio MM-DiT: channels-last latents in a normalised space."""
    b = cond.batch_size

    def from_vae(x):
        return transformer.normalize(x.transpose(1, 2).to(transformer.device, torch.float32))  # (B, C, N) → (B, N, C)

    extra = {}
    if placed is not None and context_path(transformer) == "pathway":
        extra = {"context": from_vae(placed.latents), "context_known": placed.known}
    prepared = transformer.prepare_conditions(cond.clip_f, cond.sync_f, cond.text_f, duration=duration,
                                              latent_seq_len=cond.latent_frames, text_mask=cond.text_mask,
                                              seconds_start=cond.seconds_start, batch_size=b, **extra)
    uncond = None
    if guided and guidance == "text":  # only the prompt is dropped: the guided direction is the text's own
        text = (cond.negative_text_f if cond.negative_text_f is not None
                else transformer.empty_string_feat[None]).expand(b, -1, -1)
        uncond = transformer.prepare_conditions(cond.clip_f, cond.sync_f, text, duration=duration,
                                                latent_seq_len=cond.latent_frames,
                                                text_mask=None if cond.negative_text_f is None else
                                                cond.negative_text_mask, seconds_start=cond.seconds_start,
                                                batch_size=b, **extra)
    elif guided and guidance == "reference":  # only the summary's shares dropped: the guided direction is theirs
        if not extra or getattr(transformer.context_embed, "summary_out", None) is None:
            raise GenerationError("guidance='reference' guides by the context pathway's summary of the known audio: "
                                  "it needs known audio and a model with that summary (transformer.context_global); "
                                  "use guidance='all'")
        uncond = replace(prepared, context_global=None, context_semantic=None)
    elif guided:
        uncond = transformer.get_empty_conditions(b, like=prepared, negative_text_f=cond.negative_text_f,
                                                  negative_text_mask=cond.negative_text_mask)

    def to_vae(x):
        return transformer.unnormalize(x).transpose(1, 2).contiguous()  # (B, N, C) → (B, C, N)

    return PreparedFlow(prepared, uncond, (b, prepared.latent_seq_len, transformer.config.latent_dim), to_vae,
                        from_vae, time_axis=1)


def _prepare_hunyuan(transformer, cond: FoleyConditions, duration: float, guided: bool, placed=None) -> PreparedFlow:
    """HunyuanVideo-Foley DiT: channels-first DAC latents at 50 Hz; text is required (CLAP), and the uncond
    branch uses the negative prompt's features or, without one, the encoder's features of ""."""
    if cond.text_f is None or cond.clip_f is None:
        raise GenerationError("HunyuanVideo-Foley needs text (CLAP) and visual (SigLIP2) features: connect Text "
                              "Encode and Visual Encode to the Conditioning node")
    b = cond.batch_size
    n = transformer.latent_length(duration)
    prepared = transformer.prepare_conditions(cond.clip_f, cond.sync_f, cond.text_f, n)
    uncond = None
    if guided:
        neg = cond.negative_text_f if cond.negative_text_f is not None else cond.empty_text_f
        if neg is None:
            raise GenerationError("HunyuanVideo-Foley has no stored empty text: the Conditioning node needs the "
                                  "text encoder's features of the negative (or empty) prompt")
        lens = transformer.feature_lengths(duration)
        uncond = transformer.get_empty_conditions(neg, batch_size=b, clip_len=cond.clip_f.shape[1],
                                                  sync_len=cond.sync_f.shape[1] if cond.sync_f is not None
                                                  else lens["sync_len"], latent_len=n)
    return PreparedFlow(prepared, uncond, (b, transformer.latent_channels, n), lambda x: x,
                        lambda x: x.to(transformer.device, torch.float32), time_axis=2)


def prepare_flow(transformer, cond: FoleyConditions, duration: float, guided: bool, placed=None,
                 guidance: str = "all") -> PreparedFlow:
    """Dispatch on the transformer family (one place, so every sampler node works with every family).
    ``placed`` is the audio context laid on the span (models with a context pathway take it as an input);
    ``guidance`` what CFG's unconditional branch drops (:class:`SamplerSettings`)."""
    if guidance not in GUIDANCE:
        raise GenerationError(f"guidance={guidance!r} must be one of {', '.join(GUIDANCE)}")
    if hasattr(transformer, "forward_native"):  # the HunyuanVideo-Foley DiT (native time 1000 → 0)
        if guidance != "all":
            raise GenerationError(f"guidance={guidance!r} needs an MM-DiT model (Kling-Foley or MMAudio); "
                                  "HunyuanVideo-Foley guides with every condition")
        return _prepare_hunyuan(transformer, cond, duration, guided, placed)
    return _prepare_mmdit(transformer, cond, duration, guided, placed, guidance)


GUIDANCE = ("all", "text", "reference")


def generate_latents(transformer, cond: FoleyConditions, settings: SamplerSettings = SamplerSettings(), *,
                     seed: int | None = 0, generator: torch.Generator | None = None,
                     callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """Sample audio latents for ``cond``; returns VAE-space latents ``(B, C, N)``.

    Conditions are projected once and reused at every step; cond and uncond run in one batched forward unless
    ``settings.batched_cfg`` is off.
    """
    from .reference import reference_conditions

    ctx, n_drop = cond.context, 0
    if ctx is not None and ctx.mode == "reference":
        cond, n_drop = reference_conditions(transformer, cond, ctx)
        ctx = cond.context
    duration = check_duration(cond.duration, transformer)
    timesteps = make_schedule(settings.schedule, settings.steps, settings.shift)
    onload(transformer)  # an offloaded model comes to its device before its conditions are projected
    placed = None
    if ctx is not None:
        placed = ctx.placed(latent_frames(transformer, cond, duration), cond.batch_size)
        log.info("audio context (%s, %.2f s known): %s path", ctx.mode, float(placed.known[0].sum()) /
                 ctx.latent_rate, context_path(transformer))
    if cond.sync_f is not None and cond.clip_f is None and getattr(transformer, "sync_timing", None) is not None:
        log.info("no semantic features (TC-VTA or a reference): the sync stream is read for timing only "
                 "(timing_sync)")
    flow = prepare_flow(transformer, cond, duration, guided=settings.cfg > 1.0, placed=placed,
                        guidance=settings.guidance)
    velocity = CFGDenoiser(transformer, flow.cond, flow.uncond, settings.cfg, batched=settings.batched_cfg,
                           rescale=settings.guidance_rescale, apg_eta=settings.apg_eta)
    x0 = initial_noise(flow.shape, seed=seed, generator=generator, device=execution_device(transformer))
    with torch.inference_mode():
        if placed is not None:
            c = flow.from_vae(placed.latents)
            known = placed.known.to(c.device).unsqueeze(3 - flow.time_axis)  # (B, N, 1) or (B, 1, N)
            z = x0 + c if context_path(transformer) == "pathway" else x0  # FoleyGenEx: context summed with noise
            if ctx.invert:  # editing: the window starts from the existing audio's inverted latent
                unguided = CFGDenoiser(transformer, flow.cond, None, 1.0)
                x0 = invert(ContextVelocity(unguided, c, z, known), c, timesteps, callback=callback)
            velocity = ContextVelocity(velocity, c, z, known)
            x0 = velocity.start(x0)
        x1 = sample(settings.sampler, velocity, x0, timesteps, callback=callback)
        if n_drop:
            x1 = x1.narrow(flow.time_axis, n_drop, x1.shape[flow.time_axis] - n_drop)
        return flow.to_vae(x1).float()


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """VAE latents ``(B, C, N)`` → mono log-mel ``(B, M, 2N)``."""
    channels = getattr(vae, "latent_channels", None) or vae.config.get("embed_dim") or vae.config.get("latent_dim")
    if latents.ndim != 3 or latents.shape[1] != channels:
        raise GenerationError(f"latents of shape {tuple(latents.shape)} do not fit this Mel-VAE, which decodes "
                              f"(batch, {channels}, frames); use the VAE the model was trained with")
    onload(vae)
    with torch.inference_mode():
        return vae.decode(latents.to(execution_device(vae), vae.dtype)).float()


def stereo_video_features(mono2stereo, clip_f: torch.Tensor | None, sync_f: torch.Tensor | None):
    """The video features a Mono2Stereo module was trained on: semantic (8 fps) or Synchformer tokens."""
    if mono2stereo is None:
        return None
    return sync_f if getattr(mono2stereo.config, "video_features", "semantic") == "sync" else clip_f


def mel_to_stereo(mono2stereo, mel: torch.Tensor, video_f: torch.Tensor | None = None) -> torch.Tensor:
    """Mono log-mel ``(B, M, F)`` → stereo ``(B, 2, M, F)``; without a module both channels are the mono mel."""
    if mel.ndim == 4:
        return mel  # already stereo
    if mono2stereo is None:
        return torch.stack([mel, mel], dim=1)
    with torch.inference_mode():
        return mono2stereo(mel, video_f).stacked().float()  # (B, 2, M, F)


def vocode(vocoder, mel: torch.Tensor, *, num_samples: int | None = None, watermark: bool = True,
           callback=None) -> torch.Tensor:
    """Log-mel ``(B, M, F)`` or ``(B, C, M, F)`` → waveform ``(B, C, T)``, each channel vocoded on its own.

    ``num_samples`` trims (or zero-pads) to an exact length, e.g. the video's duration × sample rate.
    ``watermark`` embeds the provenance mark (:func:`finish_waveform`). ``callback(done, total)`` reports the
    chunks of a vocoder that renders long audio in chunks (the trained vocoder, Griffin-Lim); others ignore it.
    """
    if mel.ndim == 3:
        mel = mel[:, None]
    if mel.ndim != 4 or mel.shape[2] != vocoder.n_mels:
        raise GenerationError(f"mel of shape {tuple(mel.shape)} does not fit this vocoder ({vocoder.n_mels} mel "
                              f"bands); pick the vocoder of the VAE's sample rate")
    b, c = mel.shape[:2]
    onload(vocoder)
    dev = execution_device(vocoder)
    with torch.inference_mode():
        flat = mel.reshape(b * c, *mel.shape[2:]).to(dev)
        chunked = callback is not None and getattr(vocoder, "reports_chunks", False)
        wave = (vocoder(flat, callback=callback) if chunked else vocoder(flat)).float()  # (B*C, T)
    wave = wave.reshape(b, c, -1).cpu()
    if num_samples is not None:
        if wave.shape[-1] >= num_samples:
            wave = wave[..., :num_samples]
        else:
            wave = torch.nn.functional.pad(wave, (0, num_samples - wave.shape[-1]))
    return finish_waveform(wave, int(vocoder.sample_rate), watermark=watermark)


def provenance(transformer, settings: SamplerSettings, seed) -> dict:
    """The generation settings a file's provenance tag records (``mux.provenance_tags``): the model (``foley-tiny``
    for the shipped one, else its weights folder's name or class, never a full path), sampler, steps, cfg, seed
    (and APG's η when it is not plain CFG)."""
    from pathlib import Path

    from .default_model import NAME, weights_dir

    config = getattr(transformer, "config", None)
    path = config.get("_name_or_path") if hasattr(config, "get") else None
    name = type(transformer).__name__
    if path:
        folder = Path(path)
        folder = folder.parent if folder.name == "transformer" else folder
        name = NAME if folder.resolve() == Path(weights_dir()).resolve() else folder.name or name
    tag = {"model": name, "sampler": settings.sampler, "steps": int(settings.steps), "schedule": settings.schedule,
           "cfg": float(settings.cfg), "seed": int(seed)}
    if settings.apg_eta < 1.0:
        tag["apg_eta"] = float(settings.apg_eta)
    return tag


def finish_waveform(wave: torch.Tensor, sample_rate: int, *, watermark: bool = True) -> torch.Tensor:
    """The last step of every generation route (vocoder or DAC-VAE): clip to [-1, 1] and, unless ``watermark`` is
    off, embed the inaudible provenance watermark (:mod:`.audio.watermark`; Kling-Foley §8)."""
    wave = wave.clamp(-1.0, 1.0)
    if watermark:
        from .audio.watermark import embed_watermark

        wave = embed_watermark(wave, int(sample_rate))
    return wave
