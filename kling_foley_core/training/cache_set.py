"""Several feature caches read as one training set.

A trainer given ``--data A B --cache CA CB`` reads the clips of ``CA`` then ``CB`` through :class:`CacheSet`,
which answers like one :class:`~.dataset.FeatureCache`: new clips join a training set without the full copy a
``dataset --merge`` writes, and each cache keeps (and reuses) its own encoded latents. The clip order, and so
every batch, is the same as in the merged cache of the same caches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import TrainingError
from .dataset import ClipList, FeatureCache, LatentTable, build_cache, check_compatible


class CacheSet(ClipList):
    """The clips of several built caches, in order, behind the :class:`FeatureCache` reading interface."""

    def __init__(self, caches: list[FeatureCache]):
        check_compatible([(c.dir, c.meta) for c in caches], "--cache")
        self.members = caches
        self.clips: list[dict] = [clip for c in caches for clip in c.clips]
        self.image_size = caches[0].image_size
        self._where = [(k, i) for k, c in enumerate(caches) for i in range(len(c))]

    @property
    def sources(self) -> list[str]:
        return [s for c in self.members for s in c.sources]

    def _member(self, i: int) -> tuple[FeatureCache, int]:
        k, j = self._where[i]
        return self.members[k], j

    def mel(self, i: int, channel: str = "mono") -> np.ndarray:
        cache, j = self._member(i)
        return cache.mel(j, channel)

    def sem_frames(self, i: int) -> np.ndarray:
        cache, j = self._member(i)
        return cache.sem_frames(j)

    def sync_frames(self, i: int) -> np.ndarray:
        cache, j = self._member(i)
        return cache.sync_frames(j)

    def latents(self, tag: str) -> "LatentSet":
        return LatentSet([c.latents(tag) for c in self.members])


class LatentSet:
    """The latent tables of a :class:`CacheSet`'s members; ``stats`` are pooled over all their frames, exactly as
    one table over the merged cache would hold them."""

    def __init__(self, tables: list[LatentTable]):
        self.tables = tables
        self._where = [(k, i) for k, t in enumerate(tables) for i in range(len(t.offsets))]
        self.channels = tables[0].channels
        self.stats = _pooled_stats(tables) if all(t.stats for t in tables) else None

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k, j = self._where[i]
        return self.tables[k].get(j)


def _pooled_stats(tables: list[LatentTable]) -> dict:
    """Per-channel mean and std over the frames of every table, from each table's own mean, std and frame count
    (each std already holds the spread of the means plus the posterior variance)."""
    rows = np.array([t.array.shape[0] for t in tables], dtype=np.float64)[:, None]
    mean = np.array([t.stats["mean"] for t in tables], dtype=np.float64)
    std = np.array([t.stats["std"] for t in tables], dtype=np.float64)
    mu = (rows * mean).sum(0) / rows.sum()
    second = (rows * (std**2 + mean**2)).sum(0) / rows.sum()
    return {"mean": mu.tolist(), "std": np.sqrt(np.maximum(second - mu**2, 1e-8)).tolist()}


def mark_gains(cache: FeatureCache, data: Path) -> None:
    """Caches built before events recorded their ``gain`` take it from their dataset's clip metadata (in memory)."""
    old = [c for c in cache.clips if any("gain" not in e for e in c["events"])]
    if not old:
        return
    from ..data.synthhits import clip_metas

    gains = {m["clip_id"]: [e.get("gain") for e in m["events"]] for m in clip_metas(data)}
    for c in old:
        g = gains.get(c["clip_id"])
        if g is None or len(g) != len(c["events"]) or None in g:
            raise TrainingError(f"--cache {cache.dir}: clip {c['clip_id']} has no hit gains in {data}; rebuild the "
                                f"cache (python -m kling_foley_core.training.dataset --data {data} --cache NEW)")
        for e, v in zip(c["events"], g):
            e["gain"] = float(v)


def open_caches(data: list[str | Path], cache: list[str | Path] | None, *, image_size: int,
                gains: bool = False) -> FeatureCache | CacheSet:
    """The training set of ``--data`` folders, each with its ``--cache`` (built if missing; default: one per folder
    under the cache root). One folder gives its :class:`FeatureCache`, several a :class:`CacheSet`. ``gains``: every
    hit must carry its gain (taken from the dataset for older caches)."""
    data = [Path(d) for d in data]
    if cache is not None and len(cache) != len(data):
        raise TrainingError(f"--cache takes one folder per --data folder: got {len(cache)} caches for {len(data)} "
                            f"data folders (or drop --cache for the default cache of each)")
    caches = [FeatureCache(build_cache(d, None if cache is None else cache[k], image_size=image_size))
              for k, d in enumerate(data)]
    for c, d in zip(caches, data):
        mark_swapped(c, d)
        if gains:
            mark_gains(c, d)
    return caches[0] if len(caches) == 1 else CacheSet(caches)


def mark_swapped(cache: FeatureCache, data: Path) -> None:
    """Caches built before clips recorded ``sound_swapped`` take it from their dataset's ``--p-swap-sound``
    (0: no clip, 1: every clip); a mix cannot be told apart afterwards and needs its cache rebuilt."""
    old = [c for c in cache.clips if "sound_swapped" not in c]
    if not old:
        return
    index = data / "index.json"
    import json

    p = float(json.loads(index.read_text()).get("config", {}).get("p_swap_sound", 0.0)) if index.is_file() else 0.0
    if p not in (0.0, 1.0):
        raise TrainingError(f"--cache {cache.dir}: built before clips recorded whether their sound is swapped, and "
                            f"{data} swaps {p:g} of them; rebuild the cache (python -m "
                            f"kling_foley_core.training.dataset --data {data} --cache NEW)")
    for c in old:
        c["sound_swapped"] = p == 1.0
