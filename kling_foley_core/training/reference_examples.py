"""AC-VTA training examples (FoleyGenEx §3.2): a clip that sounds unlike it looks, with a reference in front.

At inference a reference recording is VAE-encoded and prepended to the span as known frames, the sync stream gets a
surrogate of the clip's own windows in front, and the semantic video features and the text are the placeholders
(``reference.reference_conditions``). A training example is built the same way: the clip's sound class is named by
another train-split recording of that class, struck a few times, and nothing else names it (the clip's look, and so
its sync tokens, point at another class). Clips whose hits are all of one class and whose sound is swapped qualify.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.references import reference_hits
from ..models.sync_layout import TOKENS_PER_WINDOW
from ..reference import SYNC_STRIDE_S, surrogate_sync
from .common import TrainingError

__all__ = ["ReferenceBank", "check_looks", "look_classes", "pick_frames", "reference_batch", "reference_clips",
           "reference_example", "reference_frames", "reference_strides"]

MAX_STRIDES = 7  # the longest reference, in 0.32-s sync strides (2.24 s; the eval's 2-s reference gives 6)
MIN_STRIDES = 3  # the shortest (0.96 s)


def reference_clips(clips: list[dict]) -> np.ndarray:
    """Indices of the clips that can be AC-VTA examples: sound swapped, hits of one class."""
    return np.array([i for i, c in enumerate(clips) if c.get("sound_swapped") and c["events"] and
                     len({e.get("sound_class") for e in c["events"]}) == 1], dtype=np.int64)


def look_classes(clips: list[dict], pool: np.ndarray) -> dict[int, str]:
    """The class each clip of ``pool`` looks like, for those whose objects record one look (feature caches record
    ``look_class`` since ``--reference-contrast``): clip index → class."""
    out = {}
    for i in pool:
        looks = {o.get("look_class") for o in clips[int(i)]["objects"]}
        if len(looks) == 1 and None not in looks:
            out[int(i)] = looks.pop()
    return out


def check_looks(clips: list[dict], taught, looks: dict[int, str], option: str) -> None:
    """A one-line error unless every clip of ``taught`` has its look class in ``looks``."""
    missing = [int(i) for i in taught if int(i) not in looks]
    if missing:
        c = clips[missing[0]]
        raise TrainingError(f"{option}: {len(missing)} AC-VTA clips record no single look class, e.g. "
                            f"{c['clip_id']} ({sorted(str(o.get('look_class')) for o in c['objects'])}); rebuild "
                            f"its feature cache (python -m kling_foley_core.training.dataset --data SET --cache NEW)")


def pick_frames(flags: torch.Tensor, chosen: tuple[torch.Tensor, ...], other: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, ...]:
    """Per example (``flags`` (B,)), the tensors (frames, latents) of ``chosen`` where set, else those of ``other``."""
    return tuple(torch.where(flags.view(-1, *[1] * (c.dim() - 1)), c, o) for c, o in zip(chosen, other))


def reference_batch(durations: np.ndarray, pool: np.ndarray, batch_size: int, gen: torch.Generator) -> np.ndarray:
    """``batch_size`` (≤ len(pool)) clips of ``pool`` that lie next to each other in duration (so the batch's shared
    length cuts little), from a drawn start."""
    order = pool[np.argsort(durations[pool], kind="stable")]
    start = int(torch.randint(len(order) - batch_size + 1, (), generator=gen))
    return order[start:start + batch_size]


def reference_strides(gen: torch.Generator) -> int:
    """The batch's reference length in whole sync strides, drawn in MIN_STRIDES…MAX_STRIDES."""
    return int(torch.randint(MIN_STRIDES, MAX_STRIDES + 1, (), generator=gen))


class ReferenceBank:
    """Per sound class, ``per_class`` encoded references (normalised latents, MAX_STRIDES strides long) of train
    recordings: 1–3 hits at drawn times and levels, so a reference tells the class's sound, not one layout."""

    def __init__(self, latents: dict[str, torch.Tensor]):
        self.latents = latents  # class → (K, N, C)

    @classmethod
    def build(cls, bank, classes: list[str], vae, transformer, *, per_class: int, seed: int) -> "ReferenceBank":
        from ..audio.encode import encode_audio, vae_audio_rate

        rng = np.random.default_rng(seed)
        sr = vae_audio_rate(vae)[0]  # rendered at the VAE's rate, as the eval renders at the clip's
        seconds = MAX_STRIDES * SYNC_STRIDE_S
        out = {}
        for c in classes:
            if not bank.select("train", c):
                raise TrainingError(f"--reference-prob: the recording bank has no train recording of class {c!r}")
            takes = [reference_hits(bank, c, rng, sr, seconds=seconds, split="train", times=_times(rng, seconds),
                                    gain=float(rng.uniform(0.3, 0.7))) for _ in range(per_class)]
            enc = encode_audio(vae, torch.from_numpy(np.stack(takes)), sr, what=f"reference of {c}")
            n = int(round(seconds * enc.latent_rate))
            out[c] = transformer.normalize(enc.latents[..., :n].transpose(1, 2)).float()  # (K, N, C)
        return cls(out)

    def draw(self, classes: list[str], frames: int, gen: torch.Generator) -> torch.Tensor:
        """One reference per item of ``classes``, its first ``frames`` latent frames: (B, frames, C)."""
        picks = []
        for c in classes:
            k = self.latents[c]
            picks.append(k[int(torch.randint(k.shape[0], (), generator=gen)), :frames])
        return torch.stack(picks)


def _times(rng: np.random.Generator, seconds: float) -> list[float]:
    """1–3 strike times: the first early (so a short cut keeps it), the others spread over the take."""
    times = [float(rng.uniform(0.05, 0.5))]
    for _ in range(int(rng.integers(0, 3))):
        times.append(float(rng.uniform(times[-1] + 0.25, seconds - 0.1)) if times[-1] + 0.35 < seconds else times[-1])
    return sorted(set(times))


def reference_frames(strides: int, latent_rate: float) -> int:
    """Latent frames of a reference of ``strides`` sync strides (as ``reference_conditions`` cuts one)."""
    return int(round(strides * SYNC_STRIDE_S * latent_rate))


def reference_example(model, ref: torch.Tensor, x1: torch.Tensor, sync_f: torch.Tensor, duration: float,
                      strides: int, drop_sync: torch.Tensor | None = None):
    """(conditions, latents, known) of a batch of AC-VTA examples: the reference's normalised latents ``ref``
    (B, R, C) known in front of the clip's ``x1`` (B, N, C); under them a surrogate of the clip's own sync windows
    (``strides`` of them); no semantic features, no text; ``drop_sync`` (B,) puts the sync placeholder instead."""
    b, n_ref = ref.shape[:2]
    x = torch.cat([ref, x1], dim=1)
    known = torch.zeros(b, x.shape[1], dtype=torch.bool, device=x1.device)
    known[:, :n_ref] = True
    sync = torch.cat([surrogate_sync(sync_f, strides * TOKENS_PER_WINDOW), sync_f], dim=1)
    if drop_sync is not None:
        sync = torch.where(drop_sync[:, None, None], model.empty_sync_feat[None].expand_as(sync), sync)
    cond = model.prepare_conditions(None, sync, None, latent_seq_len=x.shape[1], seconds_start=0.0,
                                    seconds_total=duration + strides * SYNC_STRIDE_S, context=x, context_known=known)
    return cond, x, known
