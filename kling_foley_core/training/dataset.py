"""SynthHits clips → training examples, with everything that never changes precomputed into a feature cache.

A SynthHits folder (``python -m kling_foley_core.data.synthhits``) holds 44.1 kHz stereo audio and 112-px frames.
The trainers need, per clip: the 16 kHz log-mels of the mono downmix and of each channel (Mel-VAE, Mono2Stereo),
the frames the pipeline's video loader would hand the encoders (8 fps semantic frames, 25 fps sync frames, both
resized once to the encoders' input size by the library's own timestamp sampler, ``sample_image_batch``), the
caption and the events. :func:`build_cache` computes these once and appends them to flat binary files that are
memory-mapped at training time (a few GB for thousands of clips stay on disk, not in RAM):

    cache/meta.json                   per-clip offsets, durations, captions, events; the cache's settings
    cache/mel_mono.bin  (ΣF, 80) f16  log10-mels (16 kHz front-end) of the mean downmix
    cache/mel_left.bin / mel_right.bin
    cache/sem.bin       (ΣNc, S, S, 3) u8   8 fps frames, [0, 1] ↔ 0..255
    cache/sync.bin      (ΣNs, S, S, 3) u8   25 fps frames
    cache/latents-TAG.bin (ΣN, 2·C) f32     Mel-VAE posterior mean ⊕ std (written by :func:`encode_latents`)

The cache lives outside the repository (default ``~/.cache/kling_foley/features/<dataset>-<hash>``).

    python -m kling_foley_core.training.dataset --data DIR [--cache DIR] [--image-size 48]
    python -m kling_foley_core.training.dataset --merge CACHE CACHE [...] --cache OUT   # join built caches
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio.resample import fft_resample
from .common import TrainingError, epoch_permutation, write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SAMPLE_RATE = 16000
MEL_PRESET = "16k"


def default_cache_root() -> Path:
    env = os.environ.get("KLING_FOLEY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kling_foley" / "features"


def _dataset_files(data: Path) -> list[Path]:
    shards = sorted(data.glob("shard-*.npz"))
    return shards if shards else sorted(p for p in data.glob("*.json") if p.name != "index.json")


def dataset_fingerprint(data: Path, image_size: int) -> str:
    h = hashlib.sha1()
    h.update(f"v{CACHE_VERSION}-{image_size}".encode())
    for p in _dataset_files(data):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}".encode())
    return h.hexdigest()[:12]


def default_cache_dir(data: Path, image_size: int) -> Path:
    data = Path(data).resolve()
    return default_cache_root() / f"{data.name}-{dataset_fingerprint(data, image_size)}"


def _iter_clips(data: Path):
    """SynthHits clips of a folder, one source file at a time (bounded memory)."""
    from ..data.synthhits import _clip_from_meta, read_mp4, read_shard

    files = _dataset_files(data)
    if not files:
        raise TrainingError(f"--data {data}: holds no shard-*.npz and no clip .json/.mp4 pairs; generate clips with "
                            f"`python -m kling_foley_core.data.synthhits --out {data} --n N`")
    for f in files:
        if f.suffix == ".npz":
            yield from read_shard(f)
        else:
            m = json.loads(f.read_text())
            frames, audio, _ = read_mp4(f.with_suffix(".mp4"), num_samples=m["num_samples"])
            yield _clip_from_meta(m, frames, audio)


class _Appender:
    """Appends arrays to a flat binary file; remembers rows written."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype):
        self.path, self.row_shape, self.dtype = path, tuple(row_shape), np.dtype(dtype)
        self.f = path.open("wb")
        self.rows = 0

    def add(self, a: np.ndarray) -> tuple[int, int]:
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.shape[1:] != self.row_shape:
            raise TrainingError(f"internal: {self.path.name} rows {a.shape[1:]} != {self.row_shape}")
        start = self.rows
        self.f.write(a.tobytes())
        self.rows += a.shape[0]
        return start, a.shape[0]

    def close(self) -> dict:
        self.f.close()
        return {"file": self.path.name, "rows": self.rows, "row_shape": list(self.row_shape), "dtype": self.dtype.str}


def clip_features(clip, image_size: int, mel) -> dict:
    """One SynthHits clip → 16 kHz mels (mono, left, right), 8/25 fps frames at ``image_size`` px (uint8)."""
    from ..video.resample import FrameSpec, sample_image_batch

    audio = torch.from_numpy(np.ascontiguousarray(clip.audio, dtype=np.float32))  # (C, N)
    if clip.sample_rate != SAMPLE_RATE:
        audio = fft_resample(audio, clip.sample_rate, SAMPLE_RATE)  # (C, N')
    if audio.shape[0] == 1:
        audio = audio.expand(2, -1)
    with torch.no_grad():
        mels = mel(torch.stack([audio.mean(0), audio[0], audio[1]]))  # (3, 80, F)
    images = torch.from_numpy(clip.frames).float().div_(255.0)  # (T, H, W, 3)
    sem_spec = FrameSpec(fps=8, size=image_size, resize="crop", output="unit")
    sync_spec = FrameSpec(fps=25, size=image_size, resize="crop", output="unit", min_frames=16)
    sampled = sample_image_batch(images, clip.fps, semantic=sem_spec, sync=sync_spec, duration=clip.duration)

    def to_u8(x: torch.Tensor) -> np.ndarray:  # (N, 3, S, S) in [0, 1] → (N, S, S, 3) uint8
        return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return {"mels": mels.numpy(), "sem": to_u8(sampled.semantic.frames), "sync": to_u8(sampled.sync.frames),
            "num_samples": int(audio.shape[-1])}


_ARRAYS = ("mel_mono", "mel_left", "mel_right", "sem", "sync")


def _part_is_whole(part_dir: Path) -> bool:
    """A part left by an earlier, interrupted build can be reused if its description and every array it lists
    (at the recorded size) are there."""
    try:
        desc = json.loads((part_dir / "part.json").read_text())
        return all((part_dir / a["file"]).stat().st_size ==
                   a["rows"] * int(np.prod(a["row_shape"])) * np.dtype(a["dtype"]).itemsize
                   for a in desc["arrays"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build_part(src: Path, part_dir: Path, image_size: int, limit: int | None) -> Path:
    """Features of the clips of one source file (a shard, or one mp4) into ``part_dir`` (atomic)."""
    from ..audio.mel import MelSpectrogram
    from ..data.synthhits import _clip_from_meta, read_mp4, read_shard

    if _part_is_whole(part_dir):
        return part_dir
    torch.set_num_threads(1)  # parts run in parallel processes
    tmp = part_dir.with_name(part_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if src.suffix == ".npz":
        clips = read_shard(src)
    else:
        m = json.loads(src.read_text())
        frames, audio, _ = read_mp4(src.with_suffix(".mp4"), num_samples=m["num_samples"])
        clips = [_clip_from_meta(m, frames, audio)]
    clips = clips[:limit] if limit is not None else clips
    mel = MelSpectrogram(MEL_PRESET)
    m, s = mel.n_mels, image_size
    files = {k: _Appender(tmp / f"{k}.bin", shape, dt) for k, shape, dt in (
        ("mel_mono", (m,), np.float16), ("mel_left", (m,), np.float16), ("mel_right", (m,), np.float16),
        ("sem", (s, s, 3), np.uint8), ("sync", (s, s, 3), np.uint8))}
    rows = []
    for clip in clips:
        f = clip_features(clip, image_size, mel)
        mel_off, n_mel = files["mel_mono"].add(f["mels"][0].T)
        files["mel_left"].add(f["mels"][1].T)
        files["mel_right"].add(f["mels"][2].T)
        sem_off, n_sem = files["sem"].add(f["sem"])
        sync_off, n_sync = files["sync"].add(f["sync"])
        rows.append({"clip_id": clip.clip_id, "caption": clip.caption, "duration": float(clip.duration),
                     "num_samples": f["num_samples"], "mel": [mel_off, n_mel], "sem": [sem_off, n_sem],
                     "sync": [sync_off, n_sync],
                     "events": [{"time": e.time, "sound_class": e.sound_class, "pan": e.pan, "gain": e.gain}
                                for e in clip.events],
                     "objects": [{"sound_class": o.get("sound_class"), "look_class": look_class(o),
                                  "x_start": o.get("x_start"), "x_end": o.get("x_end")} for o in clip.objects],
                     "sound_swapped": sound_swapped(clip.objects)})
    write_json(tmp / "part.json", {"arrays": {k: a.close() for k, a in files.items()}, "clips": rows})
    if part_dir.exists():
        shutil.rmtree(part_dir)
    os.replace(tmp, part_dir)
    return part_dir


def _concatenate(pieces: list[tuple[Path, dict]], out: Path, limit: int | None = None) -> tuple[list, dict]:
    """Append the arrays of ``pieces`` (a folder and its part.json / meta.json: ``clips`` and ``arrays``) into
    ``out/<array>.bin``; returns the clips with their offsets shifted into the joint arrays, and the array specs."""
    totals = {k: 0 for k in _ARRAYS}
    specs: dict[str, dict] = {}
    clips = []
    outs = {k: (out / f"{k}.bin").open("wb") for k in _ARRAYS}
    try:
        for folder, desc in pieces:
            for c in desc["clips"]:
                if limit is not None and len(clips) >= limit:
                    break
                c = dict(c)
                for key, name in (("mel", "mel_mono"), ("sem", "sem"), ("sync", "sync")):
                    c[key] = [c[key][0] + totals[name], c[key][1]]
                clips.append(c)
            for k in _ARRAYS:
                a = desc["arrays"][k]
                with (folder / a["file"]).open("rb") as f:
                    shutil.copyfileobj(f, outs[k])
                specs[k] = a
                totals[k] += a["rows"]
    finally:
        for f in outs.values():
            f.close()
    return clips, {k: {**specs[k], "file": f"{k}.bin", "rows": totals[k]} for k in _ARRAYS}


def _publish(pieces: list[tuple[Path, dict]], out: Path, header: dict, limit: int | None = None) -> list:
    """Join ``pieces`` (see ``_concatenate``) into the cache ``out`` (replacing it) through a staging folder, with
    ``header`` in its meta.json; returns the clips. A disk too small, or any write error, is a TrainingError and
    leaves no staging folder behind."""
    tmp = out.with_name(out.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        need = sum((src / desc["arrays"][k]["file"]).stat().st_size for src, desc in pieces for k in _ARRAYS)
        free = shutil.disk_usage(tmp).free
        if need > free:
            raise TrainingError(f"--cache {out}: the cache needs {need / 1e9:.1f} GB but its disk has "
                                f"{free / 1e9:.1f} GB free; free space (e.g. delete earlier merged caches) or "
                                f"write it onto another disk")
        clips, arrays = _concatenate(pieces, tmp, limit)
        write_json(tmp / "meta.json", {**header, "arrays": arrays, "clips": clips})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        raise TrainingError(f"--cache {out}: writing the cache failed ({e.strerror or e}); nothing was "
                            f"written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful replace
    return clips


def build_cache(data: str | Path, cache: str | Path | None = None, *, image_size: int = 48,
                overwrite: bool = False, limit: int | None = None, workers: int = 1) -> Path:
    """Precompute the features of every clip in ``data`` into ``cache`` (see the module docstring).

    Each source file becomes a part (built by ``workers`` processes, reused if an earlier build was
    interrupted); the parts are then concatenated into the flat arrays.
    """
    data = Path(data)
    if not data.is_dir():
        raise TrainingError(f"--data {data}: no such folder")
    if not 16 <= image_size <= 256:
        raise TrainingError(f"image_size={image_size} must be in 16..256 pixels (48 for the default model)")
    if workers < 1:
        raise TrainingError(f"workers={workers} must be >= 1")
    if limit is not None and limit < 1:
        raise TrainingError(f"limit={limit} must be >= 1 (or none: every clip)")
    cache = Path(cache) if cache is not None else default_cache_dir(data, image_size)
    if not overwrite and (cache / "meta.json").is_file():
        return _built(cache, image_size)
    with _one_build_at_a_time(cache):
        if not overwrite and (cache / "meta.json").is_file():  # built by another process while this one waited
            return _built(cache, image_size)
        return _build(data, cache, image_size, limit, workers, overwrite)


def _built(cache: Path, image_size: int) -> Path:
    meta = json.loads((cache / "meta.json").read_text())
    if meta.get("image_size") != image_size or meta.get("version") != CACHE_VERSION:
        raise TrainingError(f"cache {cache} was built with image_size={meta.get('image_size')}; pass another "
                            f"--cache or overwrite it")
    return cache


@contextmanager
def _one_build_at_a_time(cache: Path):
    """Several processes asking for one cache (the ranks of a multi-GPU run, two trainers on one dataset) build
    it once: the others wait on a lock beside it, then read what the first one built. The lock file is removed
    after a successful build. (Without ``fcntl``, i.e. on Windows, builds of one cache must not overlap.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock = cache.with_name(cache.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = lock.open("a")
    except OSError as e:
        raise TrainingError(f"--cache {cache}: cannot write beside it ({e.strerror or e}); pass a --cache folder "
                            f"on a writable disk") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("feature cache: another process is building %s; waiting for it", cache)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
            lock.unlink(missing_ok=True)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(data: Path, cache: Path, image_size: int, limit: int | None, workers: int, overwrite: bool) -> Path:
    sources = _dataset_files(data)
    if not sources:
        raise TrainingError(f"--data {data}: holds no shard-*.npz and no clip .json/.mp4 pairs; generate clips with "
                            f"`python -m kling_foley_core.data.synthhits --out {data} --n N`")
    parts_root = cache.with_name(cache.name + ".parts")
    if overwrite and parts_root.exists():
        shutil.rmtree(parts_root)
    parts_root.mkdir(parents=True, exist_ok=True)
    suffix = "" if limit is None else f"-limit{limit}"  # a truncated part is never reused by a full build
    jobs = [(src, parts_root / f"part-{i:05d}{suffix}") for i, src in enumerate(sources)]
    if limit is not None:  # a test convenience: at most `limit` sources (each holds at least one clip)
        jobs = jobs[:limit]
    if workers == 1:
        parts = [_build_part(src, d, image_size, limit) for src, d in jobs]
    else:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_build_part, src, d, image_size, limit) for src, d in jobs]
            parts = []
            for k, fut in enumerate(futures):
                parts.append(fut.result())
                log.info("feature cache: part %d/%d", k + 1, len(futures))
    pieces = [(part, json.loads((part / "part.json").read_text())) for part in parts]
    if not any(desc["clips"] for _, desc in pieces):
        raise TrainingError(f"--data {data}: no clips found")
    clips = _publish(pieces, cache, {"version": CACHE_VERSION, "source": str(data.resolve()),
                                     "image_size": image_size, "sample_rate": SAMPLE_RATE, "mel_preset": MEL_PRESET},
                     limit)
    shutil.rmtree(parts_root, ignore_errors=True)
    log.info("feature cache: %d clips in %s", len(clips), cache)
    return cache


def check_compatible(metas: list[tuple[Path, dict]], option: str) -> dict:
    """Caches that can be read as one: built with the same settings, and no clip in two of them. Returns the
    shared settings; a mismatch is a one-line error naming ``option`` and the cache."""
    keys = ("version", "image_size", "sample_rate", "mel_preset")
    first = {k: metas[0][1].get(k) for k in keys}
    ids: set[str] = set()
    for src, meta in metas:
        other = {k: meta.get(k) for k in keys}
        if other != first:
            raise TrainingError(f"{option} {src}: built with {other}, unlike {metas[0][0]} ({first}); rebuild it "
                                f"with the same settings")
        dup = ids.intersection(c["clip_id"] for c in meta["clips"])
        if dup:
            raise TrainingError(f"{option} {src}: clip {sorted(dup)[0]} is already in an earlier cache; use caches "
                                f"of different datasets (another --seed)")
        ids.update(c["clip_id"] for c in meta["clips"])
    return first


def merge_caches(sources: list[str | Path], out: str | Path) -> Path:
    """One cache holding the clips of several built caches (e.g. a dataset plus extra clips generated later), so
    new data needs only its own features computed. Latents are not carried over: the trainers encode them for
    the merged cache. ``out`` must not exist yet (nothing is overwritten)."""
    out = Path(out)
    if out.exists():
        raise TrainingError(f"--cache {out} already exists; merge into a new folder")
    if len(sources) < 2:
        raise TrainingError(f"--merge takes at least two caches, got {len(sources)}")
    metas = [(Path(src), FeatureCache(src).meta) for src in sources]
    first = check_compatible(metas, "--merge")
    clips = _publish(metas, out, {**first, "source": [str(m.get("source")) for _, m in metas]})
    log.info("feature cache: merged %d clips into %s", len(clips), out)
    return out


def look_class(obj: dict) -> str | None:
    """The class a SynthHits object looks like (the class whose look has its shape), or None if unknown."""
    from ..data.synthhits import LOOKS

    return next((c for c, look in LOOKS.items() if look.shape == obj.get("shape")), None)


def sound_swapped(objects: list[dict]) -> bool:
    """Whether some object sounds like another class than it looks (SynthHits ``--p-swap-sound``)."""
    from ..data.synthhits import LOOKS

    return any(o.get("sound_class") in LOOKS and look_class(o) not in (None, o["sound_class"]) for o in objects)


# ----------------------------------------------------------------------------------------------------------
# Reading the cache
# ----------------------------------------------------------------------------------------------------------
class ClipList:
    """What a training set answers from its clip descriptions alone (``self.clips``): shared by a cache and a
    :class:`~.cache_set.CacheSet`."""

    clips: list[dict]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def durations(self) -> np.ndarray:
        return np.array([c["duration"] for c in self.clips], dtype=np.float64)

    def caption(self, i: int) -> str:
        return self.clips[i]["caption"]


class FeatureCache(ClipList):
    """Memory-mapped view of a built cache."""

    def __init__(self, cache: str | Path):
        self.dir = Path(cache)
        mp = self.dir / "meta.json"
        if not mp.is_file():
            raise TrainingError(f"feature cache {self.dir} has no meta.json; build it with "
                                f"`python -m kling_foley_core.training.dataset --data DIR`")
        self.meta = json.loads(mp.read_text())
        self.clips: list[dict] = self.meta["clips"]
        self.image_size = int(self.meta["image_size"])
        self._arrays = {k: self._map(v) for k, v in self.meta["arrays"].items()}

    def _map(self, spec: dict) -> np.ndarray:
        shape = (spec["rows"], *spec["row_shape"])
        if spec["rows"] == 0:
            return np.zeros(shape, dtype=np.dtype(spec["dtype"]))
        return np.memmap(self.dir / spec["file"], dtype=np.dtype(spec["dtype"]), mode="r", shape=shape)

    @property
    def members(self) -> list["FeatureCache"]:  # a CacheSet's are several
        return [self]

    @property
    def sources(self) -> list[str]:
        return [str(self.dir)]

    def _rows(self, name: str, key: str, i: int) -> np.ndarray:
        off, n = self.clips[i][key]
        return self._arrays[name][off: off + n]

    def mel(self, i: int, channel: str = "mono") -> np.ndarray:
        """(80, F) float32 log-mel of clip ``i`` (``channel`` mono / left / right)."""
        return np.asarray(self._rows(f"mel_{channel}", "mel", i), dtype=np.float32).T

    def sem_frames(self, i: int) -> np.ndarray:
        return np.array(self._rows("sem", "sem", i))  # (Nc, S, S, 3) uint8

    def sync_frames(self, i: int) -> np.ndarray:
        return np.array(self._rows("sync", "sync", i))  # (Ns, S, S, 3) uint8

    # latents ------------------------------------------------------------------------------------------------
    def latents_path(self, tag: str) -> Path:
        return self.dir / f"latents-{tag}.bin"

    def has_latents(self, tag: str) -> bool:
        return (self.dir / f"latents-{tag}.json").is_file()

    def latents(self, tag: str) -> "LatentTable":
        spec_p = self.dir / f"latents-{tag}.json"
        if not spec_p.is_file():
            raise TrainingError(f"cache {self.dir} has no latents for VAE '{tag}'; run encode_latents first")
        spec = json.loads(spec_p.read_text())
        arr = np.memmap(self.latents_path(tag), dtype=np.float32, mode="r", shape=(spec["rows"], spec["width"]))
        return LatentTable(arr, spec["offsets"], spec["width"] // 2, spec.get("stats"))


def video_frames(cache, idx, n_clip: int, n_sync: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_clip`` semantic and ``n_sync`` sync frames of clips ``idx`` of a cache (or a
    :class:`~.cache_set.CacheSet`), as float ``(B, T, 3, S, S)`` in [0, 1]."""
    sem, sync = [], []
    for i in idx:
        i = int(i)
        s, y = cache.sem_frames(i), cache.sync_frames(i)
        if len(s) < n_clip or len(y) < n_sync:
            raise TrainingError(f"clip {cache.clips[i]['clip_id']} is shorter than its recorded duration; rebuild "
                                f"the feature cache")
        sem.append(torch.from_numpy(s[:n_clip]))
        sync.append(torch.from_numpy(y[:n_sync]))

    def frames(lst):  # uint8 (B, T, S, S, 3) → float (B, T, 3, S, S) in [0, 1]
        return torch.stack(lst).permute(0, 1, 4, 2, 3).float().div_(255.0)

    return frames(sem), frames(sync)


@dataclass
class LatentTable:
    array: np.ndarray  # (ΣN, 2C): mean ⊕ std
    offsets: list[list[int]]
    channels: int
    stats: dict | None = None  # per-channel mean/std of the posterior means (for the MM-DiT normalisation)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        off, n = self.offsets[i]
        a = np.array(self.array[off: off + n])
        return a[:, : self.channels], a[:, self.channels:]  # (N, C) mean, (N, C) std


def sample_latents(cache, latents: LatentTable, idx, n: int, gen: torch.Generator) -> torch.Tensor:
    """(B, n, C) latents of clips ``idx``: their first ``n`` frames drawn from the VAE's posterior (not normalised)."""
    x1 = []
    for i in idx:
        mean, std = latents.get(int(i))
        if mean.shape[0] < n:
            raise TrainingError(f"clip {cache.clips[int(i)]['clip_id']} is shorter than its recorded duration; "
                                f"rebuild the feature cache")
        x1.append(torch.from_numpy(mean[:n]) + torch.from_numpy(std[:n]) * torch.randn(n, mean.shape[1],
                                                                                         generator=gen))
    return torch.stack(x1)


def vae_tag(vae) -> str:
    """A short fingerprint of a VAE's weights: the latent cache is only valid for those weights."""
    h = hashlib.sha1()
    for k, v in sorted(vae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes()[:4096])
        h.update(str(float(v.float().sum())).encode())
    return h.hexdigest()[:12]


@torch.no_grad()
def encode_latents(cache, vae) -> str:
    """Encode every clip's mono mel with ``vae`` (posterior mean and std, ``(N, C)`` each) into the cache (into each
    member of a :class:`~.cache_set.CacheSet`); returns the VAE's tag."""
    tag = vae_tag(vae)
    for member in cache.members:
        _encode_into(member, vae, tag)
    return tag


def _encode_into(cache: FeatureCache, vae, tag: str) -> None:
    if cache.has_latents(tag):
        return
    vae = vae.eval()
    c = vae.latent_channels
    tmp = cache.latents_path(tag).with_suffix(".tmp")
    offsets, rows = [], 0
    s1 = np.zeros(c)
    s2 = np.zeros(c)
    v = np.zeros(c)
    with tmp.open("wb") as f:
        for i in range(len(cache)):
            mel = torch.from_numpy(cache.mel(i))[None]  # (1, 80, F)
            # The pipeline asks for ceil(d·sr/hop/2) latents, one more than F/2 when d·sr is not a multiple of
            # the hop: extend the mel by repeating its last frame (the VAE's own convention for odd lengths).
            need = 2 * math.ceil(cache.clips[i]["duration"] * SAMPLE_RATE / 256 / 2)
            if mel.shape[-1] < need:
                mel = torch.nn.functional.pad(mel, (0, need - mel.shape[-1]), mode="replicate")
            post = vae.encode(mel)
            mean = post.mean[0].T.float().numpy()  # (N, C)
            std = post.std[0].T.float().numpy() if hasattr(post, "std") else np.exp(0.5 * post.logvar[0].T.numpy())
            f.write(np.ascontiguousarray(np.concatenate([mean, std], 1), dtype=np.float32).tobytes())
            offsets.append([rows, mean.shape[0]])
            rows += mean.shape[0]
            s1 += mean.sum(0)
            s2 += (mean.astype(np.float64) ** 2).sum(0)
            v += (std.astype(np.float64) ** 2).sum(0)
    mu = s1 / rows
    # the flow is trained on posterior draws: their variance is the means' spread plus the posterior variance
    sd = np.sqrt(np.maximum(s2 / rows - mu**2 + v / rows, 1e-8))
    os.replace(tmp, cache.latents_path(tag))
    write_json(cache.dir / f"latents-{tag}.json", {"rows": rows, "width": 2 * c, "offsets": offsets,
                                                   "stats": {"mean": mu.tolist(), "std": sd.tolist()}})


# ----------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------
def length_buckets(durations: np.ndarray, batch_size: int, seed: int, epoch: int,
                   repeats: np.ndarray | None = None) -> list[np.ndarray]:
    """Batches of clips of similar duration (sorted with a random tie-break), in a shuffled order.

    Each batch is later cut to its shortest clip, so the waste is the spread within a batch (small when sorted).
    ``repeats[i]`` (default 1): how many times clip ``i`` appears per epoch (oversampling a rare kind of clip).
    """
    pool = np.arange(len(durations)) if repeats is None else np.repeat(np.arange(len(durations)), repeats)
    n = len(pool)
    if n < batch_size:
        raise TrainingError(f"--batch-size {batch_size} exceeds the number of clips ({n}); use a smaller batch")
    perm = pool[epoch_permutation(n, seed, epoch)]
    order = perm[np.argsort(durations[perm], kind="stable")]
    batches = [order[i: i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    shuffle = epoch_permutation(len(batches), seed + 1, epoch)
    return [batches[j] for j in shuffle]


def batch_for_step(durations: np.ndarray, batch_size: int, seed: int, step: int, *, rank: int = 0,
                   world: int = 1, repeats: np.ndarray | None = None) -> np.ndarray:
    """The clip indices of global step ``step`` for process ``rank`` of ``world`` (a pure function of step);
    ``repeats`` as in :func:`length_buckets`."""
    n = len(durations) if repeats is None else int(np.sum(repeats))
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise TrainingError(f"--batch-size {batch_size} exceeds the number of clips ({n}); use a "
                            f"smaller batch")
    k = step * world + rank
    epoch, pos = divmod(k, per_epoch)
    return length_buckets(durations, batch_size, seed, epoch, repeats)[pos]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.training.dataset",
                                 description="Precompute the training features of a SynthHits folder.")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes (one source shard each)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="CACHE",
                    help="instead of building: join these built caches into --cache (a new folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.merge:
            if args.cache is None or args.data is not None:
                raise TrainingError("--merge writes to --cache OUT and reads no --data; pass --cache and drop --data")
            path = merge_caches(args.merge, args.cache)
        else:
            if args.data is None:
                raise TrainingError("--data DIR is required (or --merge CACHE ... --cache OUT)")
            path = build_cache(args.data, args.cache, image_size=args.image_size, overwrite=args.overwrite,
                               limit=args.limit, workers=args.workers)
    except TrainingError as e:
        print(f"error: {e}")
        return 2
    print(f"feature cache: {path} ({len(FeatureCache(path))} clips)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
