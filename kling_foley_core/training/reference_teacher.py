"""``train_foley --reference-teacher``: AC-VTA examples trained by distillation from the model's own V2A.

An AC-VTA example (:mod:`.reference_examples`) is a clip that sounds like class A and looks like class B, with a
recording of A in front. Its flow loss names A only through one noisy sample of the clip's sound, and the part of
that loss a reference can lower is a fraction of a percent (``bench/bench_reference_use.py``): hundreds of steps do
not find it. The clip's *twin* (SynthHits ``--look-of-sound``, same seed: the same sound, events and motion, drawn
with the look of A) is an ordinary V2A clip, for which the model names A from the picture. So the teacher, a
frozen copy of the ``--init`` model, predicts the twin's velocity at the same ``x_t`` and ``t``, and the example
learns that velocity on its generated frames instead of the one-sample target: with the reference in place of the
look, make what the look would have made. The teacher reads the twin alone (no reference, no text), with the sync
stream dropped where the example drops it, so the unconditional branch CFG uses learns A's timbre too.
``--reference-text`` uses the same teacher for TC-VTA examples: the clip's caption in place of the reference.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch

from .common import TrainingError
from .dataset import encode_latents, sample_latents, video_frames

__all__ = ["ContrastSounds", "ReferenceTeacher", "text_step_frozen"]


class ReferenceTeacher:
    """A frozen copy of the model's parts and the twin clips they read (a feature cache of ``--look-of-sound``)."""

    def __init__(self, parts, twins, clips: list[dict], option: str = "--reference-teacher"):
        """``clips``: the AC-VTA clips; those with a twin in ``twins`` (:attr:`taught`) are the ones the teacher
        can set the target of. A twin must have its clip's duration and event times."""
        self.parts = copy.deepcopy(parts).eval().requires_grad_(False)
        self.twins = twins
        self.index = {c["clip_id"]: j for j, c in enumerate(twins.clips)}
        self.taught = [k for k, c in enumerate(clips) if c["clip_id"] in self.index]
        if not self.taught:
            raise TrainingError(f"{option}: none of the {len(clips)} AC-VTA clips has a twin in {twins.sources[0]}; "
                                f"render the twins with the swapped set's synthhits command plus --look-of-sound")
        for k in self.taught:
            c, t = clips[k], twins.clips[self.index[clips[k]["clip_id"]]]
            if abs(t["duration"] - c["duration"]) > 1e-6 or \
                    [e["time"] for e in t["events"]] != [e["time"] for e in c["events"]]:
                raise TrainingError(f"{option}: the twin of {c['clip_id']} has other events or another duration; "
                                    f"render it with the same seed and options as the swapped set")

    def frames(self, clips: list[dict], n_clip: int, n_sync: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The twins' semantic and sync frames of ``clips``, cut as the examples' own."""
        return video_frames(self.twins, [self.index[c["clip_id"]] for c in clips], n_clip, n_sync)

    def flow(self, encode: Callable, sem: torch.Tensor, sync: torch.Tensor, drop_sync: torch.Tensor,
             duration: float, n_ref: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(x_t, t) → v`` over the example's frames: the teacher's V2A velocity of the twins on the frames after
        the ``n_ref`` reference frames (zero on those, which the loss does not count)."""
        self.parts.to(sem.device)
        tr = self.parts.transformer
        with torch.no_grad():
            clip_f, sync_f = encode(sem, sync, self.parts)
            sync_f = torch.where(drop_sync[:, None, None], tr.empty_sync_feat[None].expand_as(sync_f), sync_f)
            n = tr.sequence_lengths(duration).latent
            cond = tr.prepare_conditions(clip_f, sync_f, None, latent_seq_len=n, seconds_start=0.0,
                                         seconds_total=duration)

        def predict(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if xt.shape[1] != n_ref + n:
                raise ValueError(f"the example has {xt.shape[1]} frames, not {n_ref} + {n}")
            with torch.no_grad():
                v = tr.predict_flow(xt[:, n_ref:], t, cond)
            return torch.cat([torch.zeros_like(xt[:, :n_ref]), v], dim=1)

        return predict


class ContrastSounds:
    """``--contrast-sound``: the swapped clips rendered with the sound of their look (SynthHits ``--sound-of-look``,
    same seed: the same frames and events). A contrast example takes its clip's frames with that sound, so the same
    frames are taught both classes and only the control (the caption, the reference) tells which."""

    def __init__(self, cache, clips: list[dict], vae, option: str = "--contrast-sound"):
        self.cache = cache
        self.index = {c["clip_id"]: j for j, c in enumerate(cache.clips)}
        for c in clips:
            j = self.index.get(c["clip_id"])
            if j is None:
                raise TrainingError(f"{option}: clip {c['clip_id']} has no counterpart in {cache.sources[0]}; render "
                                    f"the swapped set's synthhits command plus --sound-of-look")
            o = cache.clips[j]
            if abs(o["duration"] - c["duration"]) > 1e-6 or \
                    [e["time"] for e in o["events"]] != [e["time"] for e in c["events"]] or \
                    [b.get("sound_class") for b in o["objects"]] != [b.get("look_class") for b in c["objects"]]:
                raise TrainingError(f"{option}: the counterpart of {c['clip_id']} has other events, another "
                                    f"duration or sounds unlike the clip looks; render it with the swapped set's "
                                    f"seed and options plus --sound-of-look (and rebuild a training cache that "
                                    f"records no look_class)")
        self.latents = cache.latents(encode_latents(cache, vae))

    def x1(self, clips: list[dict], n: int, gen: torch.Generator, transformer) -> torch.Tensor:
        """(B, n, C) normalised latents of ``clips``' counterparts, drawn from the VAE's posterior."""
        idx = [self.index[c["clip_id"]] for c in clips]
        return transformer.normalize(sample_latents(self.cache, self.latents, idx, n, gen))


def text_step_frozen(transformer, patterns: list[str] | None) -> list:
    """``--reference-text-trains``: the transformer's parameters that the TC-VTA steps leave alone (those no pattern
    names; a pattern names a parameter or a module, ``*`` within a name)."""
    if not patterns:
        return []
    from fnmatch import fnmatch

    named = [(k, p) for k, p in transformer.named_parameters() if p.requires_grad]
    for pat in patterns:
        if not any(fnmatch(k, pat) or fnmatch(k, pat + ".*") for k, _ in named):
            raise TrainingError(f"--reference-text-trains {pat}: names no trainable parameter of the transformer "
                                f"(e.g. text_input_proj, 'joint_blocks.*.text_block')")
    return [p for k, p in named if not any(fnmatch(k, pat) or fnmatch(k, pat + ".*") for pat in patterns)]
