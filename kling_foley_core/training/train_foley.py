"""Train the MM-DiT and its small encoders end to end with flow matching (Kling-Foley Algorithm 1).

One step, for a batch of clips of similar length (length buckets; the batch is cut to its shortest clip, so no
padding is needed and the latent/frame/sync lengths are exactly those the pipeline derives for that duration):

1. latents: a draw from the frozen Mel-VAE's posterior (mean + std·ε, precomputed moments), normalised by the
   dataset's per-channel latent statistics (stored in the MM-DiT's ``latent_mean``/``latent_std`` buffers);
2. conditions: the visual tower on the 8 fps frames, the MotionFormer on 16-frame windows (stride 8) of the
   25 fps frames, the word-level text encoder on the caption — all trainable;
3. modality dropout (pairwise training): per clip, the video is replaced by the learned empty clip/sync
   features with probability ``--p-drop-video``, the text with probability ``--p-drop-text`` (half of those by
   the learned text placeholder, half by the encoding of the empty prompt, which is what the pipeline feeds
   for ``prompt=""``); both drop together often enough that classifier-free guidance has a trained
   unconditional branch;
4. duration embeddings: ``seconds_start = 0``, ``seconds_total`` = the clip's duration (as at inference);
5. loss: flow matching, ``x_t = t·x1 + (1 − t)·x0``, target ``x1 − x0``, logit-normal ``t``; EMA of all weights.
   Optional terms: the auxiliary heads on the sync tokens, the joint Mono2Stereo, FoleyGenEx's masked loss with a
   context (``--context-prob``; ``--swapped-captions`` sets when a clip that sounds unlike it looks keeps its
   caption) and the level loss of the decoded prediction (``--level-weight``, :mod:`.level_loss`).

    python -m kling_foley_core.training.train_foley --data DIR --vae RUN/final/vae --out RUN2 --steps 6000

Outputs ``RUN2/final/{transformer,visual_encoder,sync_encoder,text_encoder}`` (EMA weights, ``save_pretrained``),
resumable checkpoints, ``metrics.jsonl`` and ``loss.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .common import (cli_main, CHECKPOINTS, EMA, MetricLog, StepCounter, Timer, TrainingError, add_common_args,
                     check_common_args, end_step, lr_at, make_accelerator, progress, resume_from, save_checkpoint,
                     set_lr, step_generator, write_json)
from ..data.recordings import SOUND_CLASSES
from ..models.context_embed import sync_token_starts
from ..models.duration import SYNC_STRIDE as STRIDE, SYNC_WINDOW as WINDOW
from ..models.sync_layout import TOKENS_PER_WINDOW
from .cache_set import open_caches
from .dataset import FeatureCache, LatentTable, batch_for_step, encode_latents, sample_latents, video_frames
from .reference_teacher import ContrastSounds, ReferenceTeacher, text_step_frozen
from .timing_setup import fit_run_timing
from .reference_examples import (ReferenceBank, check_looks, look_classes, pick_frames, reference_batch,
                                 reference_clips, reference_example, reference_frames, reference_strides)
from ..reference import SYNC_STRIDE_S

log = logging.getLogger(__name__)

FREEZABLE = ("visual_encoder", "sync_encoder", "text_encoder", "transformer")  # transformer: all but its context
# pathway, which then trains alone as an adapter (without known audio the model computes what its --init did)
# drawn in loss.png
CURVES = ["loss", "aux_sync", "aux_pan", "aux_class", "aux_level", "mono2stereo", "level", "grad_norm"]


class FoleyObjective(nn.Module):
    """The jointly trained parts and the flow-matching loss as ``forward`` (so DDP sees one module call)."""

    def __init__(self, parts, p_drop_video: float, p_drop_text: float, aux_sync_weight: float = 0.0,
                 mono2stereo: nn.Module | None = None, aux_pan_weight: float = 0.0, aux_class_weight: float = 0.0,
                 aux_sync_pos_weight: float = 4.0, p_drop_clip: float = 0.0, context_prob: float = 0.0,
                 context_span: tuple[float, float] = (0.7, 1.0), context_prefix: float = 0.0,
                 frozen: tuple[str, ...] = (), aux_level_weight: float = 0.0,
                 level_decoder=None, swapped_captions: str = "without-context", swapped_roles: str = "drawn"):
        super().__init__()
        self.parts = parts
        # --level-weight: the frozen Mel-VAE decoder the level loss decodes through (a plain attribute, so it is
        # neither trained nor saved with the objective)
        object.__setattr__(self, "level_decoder", level_decoder)
        # --reference-teacher: the frozen copy that sets the AC-VTA examples' target (set by ``run``; a plain
        # attribute, so it is neither trained nor saved)
        object.__setattr__(self, "teacher", None)
        # encoders held at their --init weights (no gradient, no activations kept for a backward pass)
        self.frozen = frozenset(frozen)
        for name in self.frozen:
            getattr(parts, name).requires_grad_(False)
        if "transformer" in self.frozen:
            parts.transformer.context_embed.requires_grad_(True)
        self.p_drop_video, self.p_drop_text = p_drop_video, p_drop_text
        self.swapped_captions = swapped_captions  # when a swapped clip keeps its caption: "always" / "without-context"
        self.swapped_roles = swapped_roles  # "controls": swapped clips only as AC-VTA or TC-VTA examples
        # FoleyGenEx: semantic features dropped on their own (TC-VTA: timing from sync, timbre from text) and
        # multimodal dynamic masking (a context on part of the latent, mirrored on the video features)
        self.p_drop_clip = p_drop_clip
        self.context_prob, self.context_span, self.context_prefix = context_prob, context_span, context_prefix
        self.aux_sync_weight = aux_sync_weight
        self.aux_sync_pos_weight = aux_sync_pos_weight
        # training-only head: does this sync token's 2-frame span contain a contact? (not exported)
        self.sync_head = nn.Linear(parts.sync_encoder.dim, 1) if aux_sync_weight > 0 else None
        # training-only head: where on screen (pan −1…1) is the contact of a token that holds one?
        self.pan_head = nn.Linear(parts.sync_encoder.dim, 1) if aux_pan_weight > 0 else None
        # training-only head: which sound class (the object's look) makes the contact of such a token?
        self.class_head = nn.Linear(parts.sync_encoder.dim, len(SOUND_CLASSES)) if aux_class_weight > 0 else None
        # training-only head: how loud (gain in units of 10 dB) is the contact of such a token? Its speed sets it
        self.loud_head = nn.Linear(parts.sync_encoder.dim, 1) if aux_level_weight > 0 else None
        # Mono2Stereo trained jointly: its loss is what teaches the visual features where objects are (the
        # mono flow-matching loss has no use for x-positions)
        self.mono2stereo = mono2stereo

    def encode_video(self, sem: torch.Tensor, sync: torch.Tensor, parts=None) -> tuple[torch.Tensor, torch.Tensor]:
        """sem ``(B, Nc, 3, S, S)`` and sync ``(B, T, 3, S, S)`` frames in [0, 1] → ``(B, Nc, Dc)``, ``(B, Ns, Ds)``,
        by the trained parts or by ``parts`` (the reference teacher's frozen copy)."""
        from ..encoders.base import normalize_frames

        parts = self.parts if parts is None else parts
        vis = parts.visual_encoder
        b, nc = sem.shape[:2]
        pix = normalize_frames(sem.flatten(0, 1), vis.mean, vis.std)  # (B·Nc, 3, S, S)
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and "visual_encoder" not in self.frozen):
            clip_f = vis.encode_pixels(pix).view(b, nc, -1)  # (B, Nc, Dc)
        x = sync * 2.0 - 1.0  # Synchformer frames in [-1, 1]
        windows = x.unfold(1, WINDOW, STRIDE).permute(0, 1, 5, 2, 3, 4)  # (B, W, 16, 3, S, S)
        with torch.set_grad_enabled(grad and "sync_encoder" not in self.frozen):
            tokens = parts.sync_encoder.model(windows)  # (B, W, 8, Ds)
        return clip_f, tokens.flatten(1, 2)  # (B, W·8, Ds)

    def sync_aux_loss(self, sync_f: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
        """BCE of the contact head on every sync token (hits: (B, Ns) 0/1; contacts are rare, so positives are
        up-weighted by ``aux_sync_pos_weight``; a lower value makes a contact seen where there is none cost more)."""
        logits = self.sync_head(sync_f)[..., 0]  # (B, Ns)
        return nn.functional.binary_cross_entropy_with_logits(
            logits, hits, pos_weight=torch.tensor(self.aux_sync_pos_weight, device=logits.device))

    def pan_aux_loss(self, sync_f: torch.Tensor, hits: torch.Tensor, pans: torch.Tensor) -> torch.Tensor:
        """Squared error of the pan head on the tokens that hold a contact (pans: (B, Ns) in −1…1)."""
        pred = torch.tanh(self.pan_head(sync_f)[..., 0])  # (B, Ns)
        return ((pred - pans) ** 2 * hits).sum() / hits.sum().clamp_min(1.0)

    def loud_aux_loss(self, sync_f: torch.Tensor, hits: torch.Tensor, louds: torch.Tensor) -> torch.Tensor:
        """Squared error of the loudness head on the tokens that hold a contact (louds: (B, Ns), 2·log10 gain)."""
        pred = self.loud_head(sync_f)[..., 0]  # (B, Ns)
        return ((pred - louds) ** 2 * hits).sum() / hits.sum().clamp_min(1.0)

    def class_aux_loss(self, sync_f: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the class head on the tokens that hold a contact (classes: (B, Ns), −100 elsewhere)."""
        logits = self.class_head(sync_f)  # (B, Ns, K)
        if not (classes >= 0).any():
            return logits.sum() * 0.0
        return nn.functional.cross_entropy(logits.flatten(0, 1), classes.flatten(), ignore_index=-100)

    def forward(self, x1: torch.Tensor, sem: torch.Tensor, sync: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor, empty_ids: torch.Tensor, empty_mask: torch.Tensor, duration: float,
                gen: torch.Generator, hits: torch.Tensor | None = None,
                stereo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                pans: torch.Tensor | None = None, classes: torch.Tensor | None = None,
                keep_text: torch.Tensor | None = None, louds: torch.Tensor | None = None,
                reference: tuple | None = None, text_control: tuple | None = None) -> tuple[torch.Tensor, ...]:
        """(flow-matching loss, auxiliary contact loss, Mono2Stereo loss, auxiliary pan loss, auxiliary class
        loss, level loss, auxiliary loudness loss); unused ones are 0. ``reference`` (normalised latents (B, R, C),
        sync strides, and the twins' frames for the teacher or None) makes the batch AC-VTA examples
        (:meth:`reference_loss`); ``text_control`` (the twins' frames, contrast flags or None) TC-VTA examples
        (:meth:`text_control_loss`)."""
        from ..sampling import flow_matching_loss
        from ..sampling.flow_matching import context_masks, masked_flow_matching_loss

        model = self.parts.transformer
        b, n = x1.shape[:2]
        clip_f, sync_f = self.encode_video(sem, sync)
        aux = x1.new_zeros(())
        if self.sync_head is not None and hits is not None:
            aux = self.sync_aux_loss(sync_f, hits)
        aux_pan = x1.new_zeros(())
        if self.pan_head is not None and hits is not None and pans is not None:
            aux_pan = self.pan_aux_loss(sync_f, hits, pans)
        aux_cls = x1.new_zeros(())
        if self.class_head is not None and classes is not None:
            aux_cls = self.class_aux_loss(sync_f, classes)
        aux_loud = x1.new_zeros(())
        if self.loud_head is not None and hits is not None and louds is not None:
            aux_loud = self.loud_aux_loss(sync_f, hits, louds)
        m2s = x1.new_zeros(())
        if self.mono2stereo is not None and stereo is not None:
            from ..generation import stereo_video_features
            from ..models.mono2stereo import mono2stereo_loss

            mono, left, right = stereo  # (B, M, F) each; features are put on the F mel frames inside, as at inference
            video = stereo_video_features(self.mono2stereo, clip_f, sync_f)
            m2s = mono2stereo_loss(self.mono2stereo(mono, video), left, right)
        if reference is not None or text_control is not None:
            fm = self.reference_loss(x1, sync_f, duration, gen, *reference) if reference is not None else \
                self.text_control_loss(x1, clip_f, sync_f, ids, mask, duration, gen, *text_control)
            return fm, aux, m2s, aux_pan, aux_cls, x1.new_zeros(()), aux_loud
        # the draws in the order older runs made them: drop flags, semantics-only drop, context masks
        u = torch.rand(b, 3, generator=gen)
        drop_v = (u[:, 0] < self.p_drop_video).to(x1.device)
        drop_c = None
        if self.p_drop_clip > 0:  # semantics dropped, sync kept (drawn only when on: older runs reproduce)
            drop_c = (torch.rand(b, generator=gen) < self.p_drop_clip).to(x1.device)
        known = None
        if self.context_prob > 0:
            known = context_masks(b, n, prob=self.context_prob, span=self.context_span, generator=gen,
                                  prefix=self.context_prefix).to(x1.device)
        drop_t = text_drops(u[:, 1], self.p_drop_text, keep_text, known, self.swapped_captions)
        if self.swapped_roles == "controls" and keep_text is not None and bool(keep_text.any()):
            # the AC-VTA examples know a prefix, as a prepended reference does (CPU, like the other draws)
            forced = context_masks(b, n, prob=1.0, span=self.context_span, generator=gen, prefix=1.0)
            known, drop_t, drop_c = swapped_roles(keep_text.cpu(), torch.rand(b, generator=gen),
                                                  None if known is None else known.cpu(), forced, drop_t,
                                                  None if drop_c is None else drop_c.cpu())
            known, drop_c = known.to(x1.device), drop_c.to(x1.device)
        # the empty prompt's encoding ("no description") for half of the text-dropped clips
        empty_prompt = (drop_t & (u[:, 2] < 0.5)).to(x1.device)
        placeholder = (drop_t & (u[:, 2] >= 0.5)).to(x1.device)
        ids = torch.where(empty_prompt[:, None], empty_ids.expand_as(ids), ids)
        mask = torch.where(empty_prompt[:, None], empty_mask.expand_as(mask), mask)
        text_f = self.parts.text_encoder(ids, mask)  # (B, L, Dt)
        # learned placeholders (Algorithm 1: e_v for video and sync, e_t for text)
        clip_f = torch.where(drop_v[:, None, None], model.empty_clip_feat[None].expand_as(clip_f), clip_f)
        sync_f = torch.where(drop_v[:, None, None], model.empty_sync_feat[None].expand_as(sync_f), sync_f)
        text_f = torch.where(placeholder[:, None, None], model.empty_string_feat[None].expand_as(text_f), text_f)
        mask = mask | placeholder[:, None]
        if drop_c is not None:
            clip_f = torch.where(drop_c[:, None, None], model.empty_clip_feat[None].expand_as(clip_f), clip_f)
            if model.sync_timing is not None:  # without semantics the sync stream gives timing only (TC-VTA)
                sync_f = torch.where(drop_c[:, None, None] & ~drop_v[:, None, None], model.sync_timing(sync_f),
                                     sync_f)
        cond = model.prepare_conditions(clip_f, sync_f, text_f, latent_seq_len=n, seconds_start=0.0,
                                        seconds_total=duration, text_mask=mask,
                                        context=None if known is None else x1, context_known=known)
        seen = {}

        def predict(xt, t):
            v = model.predict_flow(xt, t, cond)
            seen.update(xt=xt, t=t, v=v)
            return v
        if known is None:
            fm = flow_matching_loss(predict, x1, generator=gen)
        else:
            fm = masked_flow_matching_loss(predict, x1, known, generator=gen)
        level = x1.new_zeros(())
        if self.level_decoder is not None:
            from ..sampling.flow_matching import data_estimate
            from .level_loss import decoded_level_loss

            level = decoded_level_loss(self.level_decoder, data_estimate(seen["xt"], seen["t"], seen["v"]), x1,
                                       seen["t"])
        return fm, aux, m2s, aux_pan, aux_cls, level, aux_loud

    def reference_loss(self, x1: torch.Tensor, sync_f: torch.Tensor, duration: float, gen: torch.Generator,
                       ref: torch.Tensor, strides: int, twins: tuple[torch.Tensor, torch.Tensor] | None = None
                       ) -> torch.Tensor:
        """The masked flow loss of AC-VTA examples (:func:`reference_examples.reference_example`: conditioned as the
        reference mode is at inference). The sync stream is dropped with the video's probability, which trains the
        unconditional branch (the context alone) that CFG uses. With ``twins`` (their semantic and sync frames)
        the target is the reference teacher's velocity (:mod:`.reference_teacher`)."""
        from ..sampling.flow_matching import masked_flow_matching_loss

        model = self.parts.transformer
        drop_v = (torch.rand(x1.shape[0], generator=gen) < self.p_drop_video).to(x1.device)
        cond, x, known = reference_example(model, ref.to(x1), x1, sync_f, duration, strides, drop_v)
        teacher = None
        if twins is not None:
            teacher = self.teacher.flow(self.encode_video, *twins, drop_v, duration, x.shape[1] - x1.shape[1])
        return masked_flow_matching_loss(lambda xt, t: model.predict_flow(xt, t, cond), x, known, generator=gen,
                                         teacher=teacher)

    def text_control_loss(self, x1: torch.Tensor, clip_f: torch.Tensor, sync_f: torch.Tensor, ids: torch.Tensor,
                          mask: torch.Tensor, duration: float, gen: torch.Generator,
                          twins: tuple[torch.Tensor, torch.Tensor], contrast: torch.Tensor | None = None,
                          semantics: torch.Tensor | None = None) -> torch.Tensor:
        """TC-VTA examples (``--reference-text``), conditioned as the eval's TC-VTA is: the caption names the sound,
        the sync stream shows another class's look, no semantic features and no known audio. The sync stream is
        dropped with the video's probability (the caption alone: TTA). The target is the reference teacher's V2A
        velocity of ``twins`` (the twin's look names the caption's class). A ``contrast`` (B,) example is V2A of
        its frames (the caller gives it the twin's, or with ``--contrast-sound`` the clip's own): no prompt, its semantic features (where the teacher drops the
        sync stream it keeps them: so does the example); where ``semantics`` (B,) is False it has none, as the
        TC-VTA example has none: the two then differ by the caption alone."""
        from ..sampling.flow_matching import masked_flow_matching_loss

        model = self.parts.transformer
        b = x1.shape[0]
        drop_v = (torch.rand(b, generator=gen) < self.p_drop_video).to(x1.device)
        sync_f = torch.where(drop_v[:, None, None], model.empty_sync_feat[None].expand_as(sync_f), sync_f)
        text_f = self.parts.text_encoder(ids, mask)
        own, clip_f = clip_f, model.empty_clip_feat[None].expand_as(clip_f)
        if contrast is not None:  # V2A as the pipeline runs it without a prompt (the teacher's own conditions)
            text_f = torch.where(contrast[:, None, None], model.empty_string_feat[None].expand_as(text_f), text_f)
            mask = mask | contrast[:, None]
            keep = contrast if semantics is None else contrast & semantics
            clip_f = torch.where(keep[:, None, None], own, clip_f)
        if model.sync_timing is not None:  # the examples without semantic features read timing only
            blind = ~drop_v if contrast is None else ~drop_v & ~keep
            sync_f = torch.where(blind[:, None, None], model.sync_timing(sync_f), sync_f)
        cond = model.prepare_conditions(clip_f, sync_f, text_f, latent_seq_len=x1.shape[1], seconds_start=0.0,
                                        seconds_total=duration, text_mask=mask)
        teacher = self.teacher.flow(self.encode_video, *twins, drop_v, duration, 0)
        known = torch.zeros(x1.shape[:2], dtype=torch.bool, device=x1.device)  # every frame generated
        return masked_flow_matching_loss(lambda xt, t: model.predict_flow(xt, t, cond), x1, known, generator=gen,
                                         teacher=teacher)


def text_drops(u: torch.Tensor, p_drop: float, swapped: torch.Tensor | None, known: torch.Tensor | None,
               swapped_captions: str = "without-context") -> torch.Tensor:
    """Which clips lose their caption: a uniform draw ``u`` (B,) under ``p_drop``, except clips whose sound is not
    the one their objects' look implies (``swapped``). Without known audio the caption is their only cue to the
    sound, so dropping it would teach that looks mislead. With known audio (``known`` (B, N)) a dropped caption
    teaches to take the timbre from the context (AC-VTA), unless ``swapped_captions`` is "always"."""
    drop = u.cpu() < p_drop
    if swapped is None:
        return drop
    keep = swapped.cpu().bool()
    if known is not None and swapped_captions != "always":
        keep = keep & ~known.any(1).cpu()
    return drop & ~keep


def swapped_roles(swapped: torch.Tensor, u: torch.Tensor, known: torch.Tensor | None, forced: torch.Tensor,
                  drop_t: torch.Tensor, drop_c: torch.Tensor | None):
    """``--swapped-roles controls``: a clip whose sound is not its look's is shown only as a control example, never
    in V2A's conditions, so the semantic features never contradict the sound. With ``u < 0.5`` it is an AC-VTA
    example (part of its own sound known, from ``forced`` (B, N) where it has no context yet; no caption; no
    semantics), else a TC-VTA one (its caption; no semantics; no context). Returns (known, drop_t, drop_c)."""
    swapped = swapped.bool()
    ac, tc = swapped & (u < 0.5), swapped & (u >= 0.5)
    base = torch.zeros_like(forced) if known is None else known
    has = base.any(1)
    known = torch.where((ac & ~has)[:, None], forced, base)
    known = torch.where(tc[:, None], torch.zeros_like(known), known)
    drop_t = (drop_t.bool() | ac) & ~tc
    drop_c = (torch.zeros_like(swapped) if drop_c is None else drop_c.bool()) | swapped
    return known, drop_t, drop_c


def token_targets(events: list[dict], n_windows: int) -> tuple[torch.Tensor, ...]:
    """Per sync token (token j of window w spans frames 8w + 2j, 8w + 2j + 1: tubelets of 2 at 25 fps): contact
    0/1 (a hit's time falls in that 80 ms span), the pan of its hit(s) (mean if two), the sound-class index of
    its first hit in :data:`SOUND_CLASSES` order (−100, "ignore", for tokens without a contact or with an unknown
    class) and the loudness of its hit(s) as 2·log10 of the mean gain (0 where no gain is recorded)."""
    starts = sync_token_starts(n_windows * TOKENS_PER_WINDOW)
    hits, pan_sum, gain_sum = torch.zeros(len(starts)), torch.zeros(len(starts)), torch.zeros(len(starts))
    classes = torch.full((len(starts),), -100, dtype=torch.long)
    index = {c: i for i, c in enumerate(SOUND_CLASSES)}
    for e in events:
        inside = (starts <= e["time"]) & (e["time"] < starts + 2 / 25.0)
        hits += inside.float()
        pan_sum += inside.float() * float(e.get("pan", 0.0))
        gain_sum += inside.float() * float(e.get("gain", 1.0))
        k = index.get(e.get("sound_class"), -100)
        classes = torch.where(inside & (classes < 0), torch.tensor(k), classes)
    louds = 2.0 * torch.log10((gain_sum / hits.clamp_min(1.0)).clamp_min(1e-4)) * (hits > 0)
    return hits.clamp(max=1.0), pan_sum / hits.clamp_min(1.0), classes, louds


def batch_duration(cache: FeatureCache, idx: np.ndarray, gen: torch.Generator, min_duration: float,
                   max_duration: float) -> float:
    """The batch's duration: a length drawn uniformly in [min, max] seconds (on the 25 fps frame grid), capped by
    the shortest clip of the bucket. Cutting clips at the end keeps them valid clips (the video is cut with the
    audio), spreads training over every length up to the longest, and halves the average cost of a step."""
    shortest = float(min(cache.clips[int(i)]["duration"] for i in idx))
    u = float(torch.rand((), generator=gen))
    target = round((min_duration + u * (max_duration - min_duration)) * 25) / 25
    return min(shortest, max(target, min_duration))


def sync_frame_count(lens) -> int:
    """25 fps frames under the sync windows of a span of ``lens`` (``sequence_lengths``)."""
    return (lens.sync // 8 - 1) * STRIDE + WINDOW


def load_batch(cache: FeatureCache, latents: LatentTable, idx: np.ndarray, transformer, gen: torch.Generator,
               text_encoder, duration: float) -> dict:
    """Tensors of one bucketed batch, all cut to ``duration`` seconds."""
    d = float(duration)
    lens = transformer.sequence_lengths(d)
    x1 = transformer.normalize(sample_latents(cache, latents, idx, lens.latent, gen))  # (B, N, C)
    sem, sync = video_frames(cache, idx, lens.clip, sync_frame_count(lens))

    ids, mask = text_encoder.tokenize([cache.caption(int(i)) for i in idx])
    empty_ids, empty_mask = text_encoder.tokenize([""])
    targets = [token_targets(cache.clips[int(i)]["events"], lens.sync // 8) for i in idx]
    hits = torch.stack([t[0] for t in targets])  # (B, Ns)
    pans = torch.stack([t[1] for t in targets])  # (B, Ns)
    classes = torch.stack([t[2] for t in targets])  # (B, Ns)
    louds = torch.stack([t[3] for t in targets])  # (B, Ns)
    n_mel = min(2 * lens.latent, min(cache.clips[int(i)]["mel"][1] for i in idx))  # the mel frames of d seconds
    stereo = tuple(torch.stack([torch.from_numpy(cache.mel(int(i), ch)[:, :n_mel]) for i in idx])
                   for ch in ("mono", "left", "right"))  # 3 × (B, M, F)
    keep_text = torch.tensor([bool(cache.clips[int(i)].get("sound_swapped", False)) for i in idx])
    return dict(x1=x1, sem=sem, sync=sync, ids=ids, mask=mask, empty_ids=empty_ids,
                empty_mask=empty_mask, duration=d, hits=hits, stereo=stereo, pans=pans,
                classes=classes, keep_text=keep_text, louds=louds)


def reference_setup(args, cache: FeatureCache, vae, transformer):
    """``--reference-prob``: the clips that can be AC-VTA examples, the encoded references of their classes (None
    with ``--reference-text 1``, whose steps draw none), and with ``--reference-contrast`` the class each clip looks
    like (clip index → class; else empty)."""
    from ..data.recordings import load_bank

    pool = reference_clips(cache.clips)
    if len(pool) < args.batch_size:
        raise TrainingError(f"--reference-prob {args.reference_prob}: only {len(pool)} clips sound unlike they look "
                            f"with hits of one class, fewer than --batch-size {args.batch_size}; add a set rendered "
                            f"with `synthhits --p-swap-sound 1 --objects 1 1`")
    looks = look_classes(cache.clips, pool) if args.reference_contrast > 0 else {}
    if args.reference_text >= 1:  # every such step is a TC-VTA one: no reference is ever drawn
        log.info("--reference-prob %g: %d TC-VTA clips", args.reference_prob, len(pool))
        return pool, None, looks
    classes = sorted({cache.clips[int(i)]["events"][0]["sound_class"] for i in pool} | set(looks.values()))
    refs = ReferenceBank.build(load_bank(args.recordings, fetch=False), classes, vae, transformer,
                               per_class=args.reference_per_class, seed=args.seed)
    log.info("--reference-prob %g: %d AC-VTA clips, %d references of %d classes", args.reference_prob, len(pool),
             args.reference_per_class * len(classes), len(classes))
    return pool, refs, looks


def contrast_examples(b: dict, idx: np.ndarray, cache, sounds: list[str], twins: tuple, looks: dict[int, str], own,
                      text_step: bool, prob: float, gen: torch.Generator, transformer) -> tuple:
    """``--reference-contrast``: which examples of the batch ``b`` (clips ``idx``) are contrast examples, drawn
    with chance ``prob`` (flags (B,)), and what they change. Without ``own`` (``--contrast-sound``) a TC-VTA one is
    V2A of the twin (its frames put into ``b``); else the teacher reads the clip itself, which has the sound of its
    look where ``own`` gives it (its latent put into ``b``), and an AC-VTA one takes a reference of its look.
    Returns (flags, which TC-VTA contrast examples keep their semantic features or None, reference classes, the
    teacher's frames)."""
    contrast = torch.rand(len(idx), generator=gen) < prob
    semantics = None
    if text_step and own is None:  # the twin as V2A, no caption: the look names the class
        b["sem"], b["sync"] = pick_frames(contrast, twins, (b["sem"], b["sync"]))
        return contrast, semantics, sounds, twins
    if not text_step:
        sounds = [looks[int(i)] if c else s for i, c, s in zip(idx, contrast.tolist(), sounds)]
    twins = pick_frames(contrast, (b["sem"], b["sync"]), twins)
    if own is not None:  # with the sound of its look
        x1 = own.x1([cache.clips[int(i)] for i in idx], b["x1"].shape[1], gen, transformer)
        b["x1"] = pick_frames(contrast, (x1,), (b["x1"],))[0]
        if text_step:  # half keep their semantic features (V2A as the pipeline runs it)
            semantics = torch.rand(len(idx), generator=gen) < 0.5
    return contrast, semantics, sounds, twins


def reference_only(cache, sets: int) -> np.ndarray:
    """(clips,) bool: the clips of the last ``sets`` caches (``--reference-sets``)."""
    members = getattr(cache, "members", [cache])
    n_ref = sum(len(m) for m in members[len(members) - sets:]) if sets else 0
    return np.arange(len(cache)) >= len(cache) - n_ref


def reference_step(prob: float, gen: torch.Generator) -> int:
    """The reference's length in sync strides if this step's batch is AC-VTA examples, else 0."""
    if prob <= 0 or float(torch.rand((), generator=gen)) >= prob:
        return 0
    return reference_strides(gen)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.train_foley",
                                 description="Train the MM-DiT + small encoders with flow matching on SynthHits.")
    add_common_args(ap, steps=6000, batch_size=16, lr=5e-4)
    ap.add_argument("--vae", type=Path, required=True, help="trained Mel-VAE folder (train_mel_vae's final/vae)")
    ap.add_argument("--p-drop-video", type=float, default=0.1)
    ap.add_argument("--p-drop-text", type=float, default=0.5)
    ap.add_argument("--p-drop-clip", type=float, default=0.0,
                    help="drop only the semantic video features (sync kept) with this probability: trains TC-VTA "
                         "(timing from the video, timbre from the text)")
    ap.add_argument("--context-prob", type=float, default=0.0,
                    help="FoleyGenEx masking: share of clips given a known context on part of the latent (the "
                         "paper: 0.7, i.e. context zeroed with p 0.3); needs transformer.context_input=true")
    ap.add_argument("--context-span", type=float, nargs=2, default=(0.7, 1.0), metavar=("MIN", "MAX"),
                    help="share of a clip's latent frames generated (one contiguous span) when it has a context")
    ap.add_argument("--context-prefix", type=float, default=0.0,
                    help="share of the contexts whose generated span runs to the clip's end (only a prefix known, as "
                         "in Foley extension and AC-VTA); the rest are placed uniformly")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--min-duration", type=float, default=2.0, help="shortest training crop (s)")
    ap.add_argument("--max-duration", type=float, default=10.0, help="longest training crop (s)")
    ap.add_argument("--aux-sync-weight", type=float, default=0.0,
                    help="weight of an auxiliary contact-detection loss on the sync tokens (labels: the clips' "
                         "hit times); 0 = flow matching only")
    ap.add_argument("--aux-sync-pos-weight", type=float, default=4.0,
                    help="weight of the contact tokens in that loss against the others (contacts are rare; lower "
                         "makes a contact seen where objects only hover cost more)")
    ap.add_argument("--aux-pan-weight", type=float, default=0.0,
                    help="weight of an auxiliary loss that makes the sync tokens of a contact tell its x-position "
                         "(labels: the hits' pans); 0 = off")
    ap.add_argument("--aux-class-weight", type=float, default=0.0,
                    help="weight of an auxiliary loss that makes the sync tokens of a contact tell the sound class of "
                         "the object that makes it (labels: the hits' classes); 0 = off")
    ap.add_argument("--aux-level-weight", type=float, default=0.0,
                    help="weight of an auxiliary loss that makes the sync tokens of a contact tell how loud it is "
                         "(labels: the hits' gains, which their contact speed sets); 0 = off")
    ap.add_argument("--mono2stereo-weight", type=float, default=0.0,
                    help="train Mono2Stereo jointly (on the visual features) with this loss weight; 0 = off")
    ap.add_argument("--level-weight", type=float, default=0.0,
                    help="weight of the level loss: frame levels of the predicted clean latent, decoded by the "
                         "frozen --vae, against the true latent's (training/level_loss.py; 0 = off)")
    ap.add_argument("--swapped-captions", choices=["without-context", "always"], default="without-context",
                    help="when a clip whose sound is not its look's keeps its caption: only without known audio "
                         "(default; with it, a dropped caption teaches AC-VTA) or always")
    ap.add_argument("--swapped-roles", choices=["drawn", "controls"], default="drawn",
                    help="how swapped clips are shown: with the batch's drawn conditions (default) or only as control "
                         "examples, half AC-VTA (own sound partly known, no caption, no semantic features) and half "
                         "TC-VTA (caption, no semantic features, no context); overrides --swapped-captions for them")
    ap.add_argument("--reference-prob", type=float, default=0.0,
                    help="share of steps whose batch is AC-VTA examples: clips that sound unlike they look (hits of "
                         "one class), each with another train recording of its sound in front as the only cue to "
                         "the timbre, conditioned as the reference mode is at inference; needs the context pathway")
    ap.add_argument("--reference-teacher", type=Path, default=None, metavar="CACHE",
                    help="feature cache of the AC-VTA clips' twins (their synthhits command plus --look-of-sound): the "
                         "examples learn the velocity a frozen copy of the --init model predicts for the twin (V2A, "
                         "its look naming the sound) instead of the one-sample target")
    ap.add_argument("--reference-contrast", type=float, default=0.0,
                    help="with --reference-teacher: share of its examples made contrast examples. An AC-VTA one gets "
                         "a reference of the class the clip *looks* like and learns the teacher's V2A of the clip "
                         "itself, so the same frames call for either class and only the reference tells which; a "
                         "TC-VTA one (--reference-text) is V2A of the twin (no caption), so the look still names "
                         "the class when no text does (0 = off)")
    ap.add_argument("--contrast-sound", type=Path, default=None, metavar="CACHE",
                    help="with --reference-contrast: the swapped set rendered with SynthHits --sound-of-look (its "
                         "frames with the sound of their look). A contrast example then keeps its clip's frames and "
                         "learns that sound (the teacher's V2A of the clip): the same frames call for either class. "
                         "Half of the TC-VTA ones have no semantic features, so they differ from a TC-VTA example "
                         "by the caption alone")
    ap.add_argument("--reference-text", type=float, default=0.0,
                    help="with --reference-teacher: share of the AC-VTA steps made TC-VTA examples instead: the "
                         "clip's caption in place of the reference (no known audio, no semantic features; the sync "
                         "stream dropped with --p-drop-video, which leaves the caption alone: TTA), learning the "
                         "teacher's V2A of the twin (0 = off)")
    ap.add_argument("--reference-text-trains", nargs="+", default=None, metavar="PATTERN",
                    help="with --reference-text: the transformer's parameters its TC-VTA steps update (names or "
                         "modules, * within a name, e.g. text_input_proj text_cond_proj 'joint_blocks.*.text_block'); "
                         "the rest holds still on those steps, so the sync stream's reading stays V2A's (default: all)")
    ap.add_argument("--reference-weight", type=float, default=1.0,
                    help="weight of the AC-VTA examples' loss (with --reference-teacher it is about 1/50 of the flow "
                         "loss, so a transformer trained on both batches needs about 30-50 for the two to pull alike)")
    ap.add_argument("--reference-per-class", type=int, default=32,
                    help="encoded references kept per sound class for --reference-prob (drawn layouts and levels)")
    ap.add_argument("--reference-sets", type=int, default=0,
                    help="the last this many --data/--cache sets give only AC-VTA examples (--reference-prob), never "
                         "ordinary batches (so adding them leaves the share of swapped clips there as it was)")
    ap.add_argument("--recordings", type=Path, default=None,
                    help="recording bank for --reference-prob (default: the one SynthHits renders from)")
    ap.add_argument("--swapped-repeat", type=int, default=1,
                    help="show each swapped clip this many times per epoch (1 = as often as the others)")
    ap.add_argument("--hitfree-repeat", type=int, default=1,
                    help="show each hit-free clip this many times per epoch (1 = as often as the others); more "
                         "teaches that an object which moves without touching anything makes no sound")
    ap.add_argument("--freeze", nargs="+", default=[], choices=FREEZABLE, metavar="PART",
                    help=f"hold these parts at their --init weights ({', '.join(FREEZABLE)}): e.g. the video "
                         f"encoders while training on clips whose sound is not the one their objects' look implies, "
                         f"so the encoders keep telling the class from the look; 'transformer' holds the MM-DiT "
                         f"but its context pathway, which then trains alone (an adapter: generation without known "
                         f"audio stays exactly the --init's)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from the parts of an earlier run's final folder (a new optimiser and schedule)")
    ap.add_argument("--override", action="append", default=[], metavar="PART.KEY=VALUE",
                    help="change a size of foley-tiny, e.g. transformer.depth=4 (JSON value)")
    return ap


def parse_overrides(items: list[str]) -> dict[str, dict]:
    from ..default_model.components import FOLEY_TINY

    out: dict[str, dict] = {}
    for it in items:
        key, sep, val = it.partition("=")
        part, dot, name = key.partition(".")
        if not sep or not dot or part not in FOLEY_TINY:
            raise TrainingError(f"--override {it!r}: use PART.KEY=VALUE with PART one of {sorted(FOLEY_TINY)}")
        try:
            out.setdefault(part, {})[name] = json.loads(val)
        except json.JSONDecodeError:
            out.setdefault(part, {})[name] = val
    return out


def build_parts(vocabulary: list[str], overrides: dict[str, dict], seed: int, sizes: dict[str, dict] | None = None):
    """The jointly trained parts at foley-tiny's sizes (or the ``sizes`` a run recorded) plus ``overrides``."""
    from ..default_model import components as C

    sizes = sizes or {}

    def kw(part):
        return {**sizes.get(part, {}), **overrides.get(part, {})}

    torch.manual_seed(seed)  # module initialisers use the global RNG: make the start reproducible
    return C.FoleyTrainBundle(transformer=C.build_transformer(**kw("transformer")),
                              visual_encoder=C.build_visual_encoder(**kw("visual_encoder")),
                              sync_encoder=C.build_sync_encoder(**kw("sync_encoder")),
                              text_encoder=C.build_text_encoder(vocabulary, **kw("text_encoder")))


def run_sizes(overrides: dict[str, dict]) -> dict[str, dict]:
    """The part sizes a run trains (foley-tiny's plus overrides), recorded so an export rebuilds the same parts."""
    from ..default_model.components import config

    return {part: config(part, **overrides.get(part, {}))
            for part in ("transformer", "visual_encoder", "sync_encoder", "text_encoder", "mono2stereo")}


def build_joint_mono2stereo(parts, m2s_cfg: dict):
    """Mono2Stereo reading the features it is configured for (Synchformer tokens or semantic features)."""
    from ..default_model.components import build_mono2stereo

    source = parts.sync_encoder if m2s_cfg.get("video_features") == "sync" else parts.visual_encoder
    return build_mono2stereo(**{**m2s_cfg, "video_dim": source.dim})


def load_parts(parts, folder: Path) -> set[str]:
    """Copy the weights of a ``final`` folder (``export_parts``) into freshly built parts (strict); returns the
    transformer's optional branches the folder lacks (new to this run)."""
    from ..compat.checkpoints import load_state_dict_strict, read_state_dict

    fresh = set()
    targets = {"transformer": parts.transformer, "visual_encoder": parts.visual_encoder.tower,
               "sync_encoder": parts.sync_encoder.model, "text_encoder": parts.text_encoder}
    for name, module in targets.items():
        f = folder / name / "diffusion_pytorch_model.safetensors"
        if not f.is_file():
            raise TrainingError(f"--init {folder}: no {name}/diffusion_pytorch_model.safetensors; pass a "
                                f"train_foley final folder")
        sd = read_state_dict(f)
        for branch in ("context_embed", "sync_timing") if name == "transformer" else ():
            if getattr(module, branch, None) is not None:
                # a branch new to this run keeps its initial weights (the context pathway's zero outputs are a
                # no-op at first; a new timing head is fitted before the first step)
                new = {f"{branch}.{k}": v for k, v in getattr(module, branch).state_dict().items()}
                if any(k not in sd for k in new):
                    fresh.add(branch)
                sd.update({k: v for k, v in new.items() if k not in sd})
        load_state_dict_strict(module, sd, what=f"--init {name}")
    return fresh


AUX_HEADS = ("sync_head", "pan_head", "class_head", "loud_head")
AUX_FILE = "aux_heads.safetensors"  # the training-only heads, kept beside the final parts so --init resumes them


def save_aux_heads(objective: FoleyObjective, folder: Path) -> None:
    from safetensors.torch import save_file

    sd = {f"{name}.{k}": v.detach().cpu().contiguous() for name in AUX_HEADS
          if getattr(objective, name, None) is not None for k, v in getattr(objective, name).state_dict().items()}
    if sd:
        save_file(sd, str(folder / AUX_FILE))


def load_aux_heads(objective: FoleyObjective, folder: Path) -> list[str]:
    """Load the heads this run uses from an --init folder's aux_heads file; returns the names loaded (a head the
    file lacks, or an older folder without the file, starts from random)."""
    from ..compat.checkpoints import load_state_dict_strict, read_state_dict

    f = folder / AUX_FILE
    sd = read_state_dict(f) if f.is_file() else {}
    loaded = []
    for name in AUX_HEADS:
        head = getattr(objective, name, None)
        part = {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")}
        if head is not None and part:
            load_state_dict_strict(head, part, what=f"--init {AUX_FILE} {name}")
            loaded.append(name)
    return loaded


def export_parts(parts, out: Path) -> None:
    """save_pretrained of each part (the encoders' inner ModelMixin towers)."""
    parts.transformer.save_pretrained(out / "transformer")
    parts.visual_encoder.tower.save_pretrained(out / "visual_encoder")
    parts.sync_encoder.model.save_pretrained(out / "sync_encoder")
    parts.text_encoder.save_pretrained(out / "text_encoder")


def run(args) -> Path:
    from ..default_model.text_encoder import build_vocabulary
    from ..models.mel_vae_kling import KlingMelVAE
    from .level_loss import latent_decoder

    check_common_args(args)
    if not 0.64 <= args.min_duration <= args.max_duration:
        raise TrainingError(f"--min-duration {args.min_duration} / --max-duration {args.max_duration}: need "
                            f"0.64 <= min <= max seconds")
    lo, hi = args.context_span
    if not 0.0 < lo <= hi <= 1.0:
        raise TrainingError(f"--context-span {lo} {hi}: need 0 < MIN <= MAX <= 1 (the generated share of a clip)")
    for name in ("p_drop_video", "p_drop_text", "p_drop_clip", "context_prob"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise TrainingError(f"--{name.replace('_', '-')}={getattr(args, name)} must be in [0, 1)")
    if not 0.0 <= args.reference_prob <= 1.0:
        raise TrainingError(f"--reference-prob={args.reference_prob} must be in [0, 1] (a share of the steps)")
    if not 0 <= args.reference_sets < len(args.data) or (args.reference_sets and args.reference_prob == 0):
        raise TrainingError(f"--reference-sets={args.reference_sets}: give fewer than the {len(args.data)} --data "
                            f"sets, and only with --reference-prob > 0")
    if args.reference_teacher is not None and (args.reference_prob == 0 or args.init is None):
        raise TrainingError(f"--reference-teacher {args.reference_teacher}: needs --reference-prob > 0 and --init "
                            f"(the teacher is a frozen copy of the --init model)")
    if not 0.0 <= args.reference_contrast < 1.0 or (args.reference_contrast and args.reference_teacher is None):
        raise TrainingError(f"--reference-contrast={args.reference_contrast}: give a share in [0, 1), with "
                            f"--reference-teacher (the contrast examples' target is the teacher's V2A)")
    if not 0.0 <= args.reference_text <= 1.0 or (args.reference_text and args.reference_teacher is None):
        raise TrainingError(f"--reference-text={args.reference_text}: give a share in [0, 1], with "
                            f"--reference-teacher (the TC-VTA examples' target is the teacher's V2A of the twin)")
    if args.contrast_sound is not None and args.reference_contrast == 0:
        raise TrainingError(f"--contrast-sound {args.contrast_sound}: needs --reference-contrast > 0 (the share of "
                            f"the examples it gives their look's sound)")
    if args.reference_text_trains and args.reference_text == 0:
        raise TrainingError(f"--reference-text-trains {' '.join(args.reference_text_trains)}: needs --reference-text "
                            f"> 0 (it names what the TC-VTA steps train)")
    if not args.reference_weight > 0:
        raise TrainingError(f"--reference-weight={args.reference_weight} must be > 0")
    if args.reference_per_class < 1:
        raise TrainingError(f"--reference-per-class={args.reference_per_class} must be at least 1")
    if not 0.0 <= args.context_prefix <= 1.0:
        raise TrainingError(f"--context-prefix={args.context_prefix} must be in [0, 1] (a share of the contexts)")
    for name in ("aux_sync_weight", "aux_pan_weight", "aux_class_weight", "mono2stereo_weight", "level_weight",
                 "aux_level_weight"):
        if not getattr(args, name) >= 0.0:
            raise TrainingError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 0 (0 turns that loss off)")
    if not args.aux_sync_pos_weight > 0.0:
        raise TrainingError(f"--aux-sync-pos-weight={args.aux_sync_pos_weight} must be > 0 (1 = contacts and "
                            f"non-contacts weigh the same; default 4)")
    for name in ("hitfree_repeat", "swapped_repeat"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1 (1 = no oversampling)")
    if args.swapped_roles == "controls" and args.context_prob == 0:
        raise TrainingError("--swapped-roles controls needs the context pathway for its AC-VTA examples: give "
                            "--context-prob > 0 (and --override transformer.context_input=true)")
    if not (Path(args.vae) / "config.json").is_file():
        raise TrainingError(f"--vae {args.vae}: no Mel-VAE folder (config.json + weights); train one with "
                            f"`python -m kling_foley_core.training.train_mel_vae`")
    if args.freeze and args.init is None:
        raise TrainingError(f"--freeze {' '.join(args.freeze)} needs --init (a frozen part must start from trained "
                            f"weights, not random ones)")
    overrides = parse_overrides(args.override)
    accelerator = make_accelerator()
    out = Path(args.out)
    cache = open_caches(args.data, args.cache, image_size=args.image_size, gains=args.aux_level_weight > 0)
    vae = KlingMelVAE.from_pretrained(str(args.vae)).eval()
    if accelerator.is_main_process:
        tag = encode_latents(cache, vae)
    accelerator.wait_for_everyone()
    tag = encode_latents(cache, vae)
    latents = cache.latents(tag)

    cfg_path = out / "config.json"
    if args.resume and cfg_path.is_file():
        vocabulary = json.loads(cfg_path.read_text())["vocabulary"]  # the text encoder's table must not move
    elif args.init is not None:
        vocabulary = list(json.loads((Path(args.init) / "text_encoder" / "config.json").read_text())["vocabulary"])
    else:
        vocabulary = build_vocabulary([c["caption"] for c in cache.clips])
    sizes = run_sizes(overrides)
    parts = build_parts(vocabulary, overrides, args.seed)
    fresh = load_parts(parts, Path(args.init)) if args.init is not None else {"context_embed", "sync_timing"}
    if parts.visual_encoder.image_size != cache.image_size or parts.sync_encoder.image_size != cache.image_size:
        raise TrainingError(f"the encoders take {parts.visual_encoder.image_size}-px frames but the cache holds "
                            f"{cache.image_size}-px frames; pass --image-size {parts.visual_encoder.image_size}")
    tr = parts.transformer
    if args.init is None:  # a new model normalises latents by this dataset's statistics; an --init keeps its own
        with torch.no_grad():
            tr.latent_mean.copy_(torch.tensor(latents.stats["mean"]).view(1, 1, -1))
            tr.latent_std.copy_(torch.tensor(latents.stats["std"]).view(1, 1, -1))
    if accelerator.is_main_process:
        write_json(cfg_path, {"trainer": "foley", "args": {k: str(v) for k, v in vars(args).items()},
                              "overrides": overrides, "sizes": sizes, "vocabulary": vocabulary,
                              "vae_tag": tag,
                              "cache": cache.sources, "num_clips": len(cache)})
    m2s = None
    if args.mono2stereo_weight > 0:
        m2s_cfg = sizes["mono2stereo"]
        m2s = build_joint_mono2stereo(parts, m2s_cfg)
        init_cfg = Path(args.init or "") / "mono2stereo" / "config.json"
        if args.init is not None and init_cfg.is_file() and \
                json.loads(init_cfg.read_text()).get("video_features", "semantic") == m2s_cfg["video_features"]:
            from ..compat.checkpoints import load_state_dict_strict, read_state_dict

            load_state_dict_strict(m2s, read_state_dict(Path(args.init) / "mono2stereo" /
                                                        "diffusion_pytorch_model.safetensors"), what="--init mono2stereo")
    if "transformer" in args.freeze and parts.transformer.context_embed is None:
        raise TrainingError("--freeze transformer trains only the context pathway, which this model lacks: add "
                            "--override transformer.context_input=true")
    for name in ("context_prob", "reference_prob"):
        if getattr(args, name) > 0 and parts.transformer.context_embed is None:
            raise TrainingError(f"--{name.replace('_', '-')} {getattr(args, name)} needs the context pathway: add "
                                f"--override transformer.context_input=true")
    pool, refs, looks, own = None, None, {}, None
    if args.reference_prob > 0:
        pool, refs, looks = reference_setup(args, cache, vae, parts.transformer)
    objective = FoleyObjective(parts, args.p_drop_video, args.p_drop_text, args.aux_sync_weight, m2s,
                               args.aux_pan_weight, args.aux_class_weight, args.aux_sync_pos_weight,
                               p_drop_clip=args.p_drop_clip, context_prob=args.context_prob,
                               context_span=tuple(args.context_span), context_prefix=args.context_prefix,
                               frozen=tuple(args.freeze), aux_level_weight=args.aux_level_weight,
                               level_decoder=None if args.level_weight == 0 else latent_decoder(vae, parts.transformer),
                               swapped_captions=args.swapped_captions, swapped_roles=args.swapped_roles)
    if args.reference_teacher is not None:  # a copy of the --init weights, taken before --resume loads others
        twins = FeatureCache(args.reference_teacher)
        if twins.image_size != cache.image_size:
            raise TrainingError(f"--reference-teacher {args.reference_teacher}: its frames are {twins.image_size} px, "
                                f"the training cache's {cache.image_size} px; build it with the same --image-size")
        teacher = ReferenceTeacher(parts, twins, [cache.clips[int(i)] for i in pool])
        if len(teacher.taught) < args.batch_size:
            raise TrainingError(f"--reference-teacher {args.reference_teacher}: only {len(teacher.taught)} AC-VTA "
                                f"clips have a twin there, fewer than --batch-size {args.batch_size}")
        log.info("--reference-teacher: %d of the %d AC-VTA clips have a twin in %s; the examples are those, and "
                 "learn their twins' V2A velocity", len(teacher.taught), len(pool), args.reference_teacher)
        pool = pool[teacher.taught]
        if args.reference_contrast > 0 and args.reference_text < 1:  # AC-VTA steps take the look's references
            check_looks(cache.clips, pool, looks, "--reference-contrast")
        object.__setattr__(objective, "teacher", teacher)
        if args.contrast_sound is not None:
            own = ContrastSounds(FeatureCache(args.contrast_sound), [cache.clips[int(i)] for i in pool], vae)
    if parts.transformer.sync_timing is not None and "sync_timing" in fresh and \
            not (args.resume and (out / "checkpoints").is_dir()):
        fit_run_timing(objective, cache, seed=args.seed)
    text_frozen = text_step_frozen(parts.transformer, args.reference_text_trains)
    if args.init is not None:
        heads = load_aux_heads(objective, Path(args.init))
        log.info("--init: auxiliary heads %s", ", ".join(heads) if heads else "start from random (none saved)")
    ema_m2s = EMA(m2s, args.ema) if m2s is not None else None
    n_params = sum(p.numel() for p in parts.parameters() if p.requires_grad)
    log.info("foley-tiny: %.2f M trainable parameters (%s)", n_params / 1e6, ", ".join(
        f"{k} {sum(p.numel() for p in m.parameters()) / 1e6:.2f} M" for k, m in parts.named_children()))
    ema = EMA(parts, args.ema)
    opt = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=args.lr,
                            betas=(0.9, 0.99), weight_decay=args.weight_decay)
    objective, opt = accelerator.prepare(objective, opt)
    counter = StepCounter()
    accelerator.register_for_checkpointing(ema, counter)
    if ema_m2s is not None:
        accelerator.register_for_checkpointing(ema_m2s)
    start = resume_from(accelerator, out, args.resume, counter)
    metrics = MetricLog(out, enabled=accelerator.is_main_process)
    metrics.truncate(start)
    raw = accelerator.unwrap_model(objective)
    durations = cache.durations
    repeats = np.where([len(c["events"]) == 0 for c in cache.clips], args.hitfree_repeat, 1) * \
        np.where([bool(c.get("sound_swapped", False)) for c in cache.clips], args.swapped_repeat, 1) * \
        ~reference_only(cache, args.reference_sets)
    bar = progress(args.steps, start, args.no_progress or not accelerator.is_main_process, "foley")
    timer = Timer()
    end = end_step(args)
    for step in range(start, end):
        gen = step_generator(args.seed, step, accelerator.process_index)
        strides = reference_step(args.reference_prob, gen)  # drawn only when on: older runs reproduce
        text_step = bool(strides) and args.reference_text > 0 and \
            float(torch.rand((), generator=gen)) < args.reference_text  # a TC-VTA step (drawn only when on)
        if strides:
            idx = reference_batch(durations, pool, args.batch_size, gen)
            room = float(tr.config.max_duration) - strides * SYNC_STRIDE_S  # the reference goes in front
            d = batch_duration(cache, idx, gen, args.min_duration, min(args.max_duration, room))
        else:
            idx = batch_for_step(durations, args.batch_size, args.seed, step, rank=accelerator.process_index,
                                 world=accelerator.num_processes, repeats=repeats)
            d = batch_duration(cache, idx, gen, args.min_duration, args.max_duration)
        b = load_batch(cache, latents, idx, raw.parts.transformer, gen, raw.parts.text_encoder, d)
        set_lr(opt, lr_at(step, args.lr, args.warmup, args.steps))
        dev = accelerator.device
        reference = text_control = None
        if strides:
            sounds = [cache.clips[int(i)]["events"][0]["sound_class"] for i in idx]
            twins = None
            if raw.teacher is not None:
                lens = tr.sequence_lengths(b["duration"])
                twins = raw.teacher.frames([cache.clips[int(i)] for i in idx], lens.clip, sync_frame_count(lens))
                contrast = semantics = None
                if args.reference_contrast > 0:  # contrast examples: the same look calls for another class
                    contrast, semantics, sounds, twins = contrast_examples(
                        b, idx, cache, sounds, twins, looks, own, text_step,
                        args.reference_contrast, gen, tr)
                    contrast, semantics = contrast.to(dev), None if semantics is None else semantics.to(dev)
                twins = tuple(f.to(dev) for f in twins)
            if text_step:
                text_control = (twins, contrast, semantics)
            else:
                reference = (refs.draw(sounds, reference_frames(strides, tr.latent_rate), gen).to(dev), strides,
                             twins)
        loss, aux, m2s_loss, aux_pan, aux_cls, level, aux_loud = objective(
            b["x1"].to(dev), b["sem"].to(dev), b["sync"].to(dev), b["ids"].to(dev), b["mask"].to(dev),
            b["empty_ids"].to(dev), b["empty_mask"].to(dev), b["duration"], gen, b["hits"].to(dev),
            tuple(x.to(dev) for x in b["stereo"]), b["pans"].to(dev), b["classes"].to(dev), b["keep_text"].to(dev),
            b["louds"].to(dev), reference=reference, text_control=text_control)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss * (args.reference_weight if strides else 1.0) + args.aux_sync_weight * aux +
                             args.mono2stereo_weight * m2s_loss + args.aux_pan_weight * aux_pan +
                             args.aux_class_weight * aux_cls + args.level_weight * level +
                             args.aux_level_weight * aux_loud)
        if text_step and text_frozen:  # --reference-text-trains: the rest of the transformer holds still
            for prm in text_frozen:
                prm.grad = None
        gnorm = accelerator.clip_grad_norm_(objective.parameters(), 1.0)
        opt.step()
        ema.update(raw.parts)
        if ema_m2s is not None:
            ema_m2s.update(raw.mono2stereo)
        counter.step = step + 1
        if (step + 1) % args.log_every == 0 or step == start:
            metrics.write(step + 1, {"loss": float(loss.detach()), "aux_sync": float(aux.detach()),
                                     "mono2stereo": float(m2s_loss.detach()), "aux_pan": float(aux_pan.detach()),
                                     "aux_class": float(aux_cls.detach()), "level": float(level.detach()),
                                     "aux_level": float(aux_loud.detach()),
                                     "grad_norm": float(gnorm), "ac_vta": int(bool(strides) and not text_step),
                                     "tc_vta": int(text_step),
                                     "duration": b["duration"], "lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", d=f"{b['duration']:.1f}s")
        bar.update(1)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_checkpoint(accelerator, out, step + 1)
            metrics.plot(CURVES, title="foley-tiny flow matching")
    bar.close()
    if end < args.steps:
        log.info("stopped at step %d of %d; continue with --resume latest", end, args.steps)
        return out / CHECKPOINTS
    if accelerator.is_main_process:
        export_parts(ema.averaged(raw.parts).eval(), out / "final")
        save_aux_heads(raw, out / "final")
        if ema_m2s is not None:
            ema_m2s.averaged(raw.mono2stereo).eval().save_pretrained(out / "final" / "mono2stereo")
        metrics.plot(CURVES, title="foley-tiny flow matching")
        log.info("foley: %d steps in %.0f s; EMA weights in %s", args.steps - start, timer.seconds(), out / "final")
    return out / "final"


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
