"""Real one-shot recordings for SynthHits: fetch, decode, resample, trim to onset, classify, split.

The recordings come from Debian packages and are fetched at build time, never committed:

=================== ====================================================== =============================
package             what we use                                            licences (per file, DEP-5)
=================== ====================================================== =============================
sonic-pi-samples    ``drum_* bd_* sn_* perc_* tabla_* misc_cineboom``      CC0 (most), MIT
hydrogen-drumkits   every layer of every instrument named in drumkit.xml   GPL-2(+) / CC-BY(-SA) / CC0
ufoai-sound         ``sound/{footsteps,doors,impact}`` inside ``0snd.pk3`` GPL-2+ (optional)
=================== ====================================================== =============================

``apt-get download`` + ``dpkg -x`` need no root install; the cache folder is ``~/.cache/kling_foley/recordings``
unless the environment variable ``KLING_FOLEY_DATA`` names another one. Each package's copyright file is parsed
(DEP-5) and every recording's licence and copyright line go into ``manifest.json`` beside the processed bank.

Sound classes are assigned from names (the hydrogen instrument name from ``drumkit.xml`` plus the file name;
for the other packages the file path), tokenised (camelCase and digits split, lower case) and tested against the
ordered rules in :data:`CLASS_RULES`; the first rule that matches wins, and :data:`EXCLUDE` drops rolls, chokes,
ride bells, shakers, effects and other sounds that are not one clear strike. The mapping:

============= =============================================================================================
class         names that map to it
============= =============================================================================================
door_impact   door closing, creak, cineboom, perc/knife/nail impact (door *opening* has latch clicks: out)
footstep      ufoai ``footsteps/*`` (carpet, dirt, grass, gravel, sand, snow, stone, tile, wood, metal ...)
bell          cowbell, agogo, waterglass, glass, triangle, bell (not ride bells)
clap_snap     clap, hand clap, snap, finger snap
snare         snare, sn, sd, rimshot
cymbal        crash, ride, splash, china, cymbal, hi-hat (hh, hat, chh/ohh)
wood_knock    woodblock, clave, stick(s) (side sticks and rim clicks sound like snares: out)
drum          tom, floor tom, bongo, conga, djembe, tabla, cajon, sangban, dununba, kenkeni
kick          kick, bass drum, bd
============= =============================================================================================

Only one-shots are kept: a recording in which the evaluation's onset detector finds more than one attack
(door slams with latch clicks, heel-and-toe footsteps, re-triggering booms) is dropped, so one ground-truth
event is one audible onset; a class left with fewer than ``MIN_CLASS_RECORDINGS`` is dropped.

Train / held-out: recordings are grouped (all velocity layers of one hydrogen instrument, or ``tabla_ghe1..8``,
form one group, so a held-out sound is never a louder take of a training sound) and each group goes to
``heldout`` when the SHA-1 of its key falls below ``heldout_fraction`` — deterministic and independent of the
machine or of which other packages were fetched. A class whose groups all hashed to one side gets its
lowest-hash (or highest-hash) group moved, so every class with two or more groups has both splits.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
ENV_VAR = "KLING_FOLEY_DATA"
DEFAULT_PACKAGES = ("sonic-pi-samples", "hydrogen-drumkits", "ufoai-sound")
BANK_VERSION = 2
MIN_CLASS_RECORDINGS = 6  # a class with fewer one-shot recordings is dropped (no meaningful held-out split)

SOUND_CLASSES: dict[str, str] = {
    "wood_knock": "wooden knock (woodblock, clave, sticks)",
    "cymbal": "metal cymbal (crash, ride, splash, hi-hat)",
    "kick": "low drum thump (kick / bass drum)",
    "snare": "snare hit",
    "drum": "drum hit (toms and hand drums)",
    "bell": "bell or glass ring",
    "clap_snap": "clap or finger snap",
    "door_impact": "door bang or heavy impact",
    "footstep": "footstep",
}

EXCLUDE = re.compile(
    r"\b(empty|emptysample|fx|whistle|roll|choke|swish|flink|mute|ride bell|bell ride|ride cup|cup|paiste bell"
    r"|crash ride bell|tambourine|maraca|shake|fxshake|swoosh|swash|till|sample|side stick|sidestick|rim"
    r"|rim click|rimclick)\b"
    r"|footsteps (stand|crouch|water|splash)|bodyimpact|doors door \d+ open|open close"
)

CLASS_RULES: list[tuple[str, re.Pattern]] = [
    ("door_impact", re.compile(r"\b(door|creak|cineboom)\b|\b(perc|knife|nail) impact\b")),
    ("footstep", re.compile(r"\bfootsteps\b")),
    ("bell", re.compile(r"\b(cowbell|agogo|waterglass|glass|triangle|bell)\b")),
    ("clap_snap", re.compile(r"\b(clap|handclap|snap|snaps|fingersnap)\b")),
    ("snare", re.compile(r"\b(snare|sn|sd|rimshot)\b")),
    ("cymbal", re.compile(r"\b(hi hat|hihat|hh|hhat|hat|chh|ohh|closehihat|openhat|pedalhihat"
                          r"|crash|ride|splash|china|cymbal|cc|rc|cra)\b")),
    ("wood_knock", re.compile(r"\b(woodblock|wood block|clave|stick|woody)\b")),
    ("drum", re.compile(r"\b(bongo|conga|djembe|tabla|cajon|sangban|dununba|kenkeni|tom|toms|floortom|tomhi|ft)\b")),
    ("kick", re.compile(r"\b(kick|bass drum|bassdrum|bd|drum bass)\b")),
]

# sonic-pi-samples also ships loops, synth basses, ambiences and glitches: only these prefixes are one-shot
# acoustic strikes.
SONIC_PI_PREFIXES = ("drum_", "bd_", "sn_", "perc_", "tabla_", "misc_cineboom")
UFOAI_DIRS = ("sound/footsteps/", "sound/doors/", "sound/impact/")


class RecordingsError(ValueError):
    """Bad argument or bad recording (names the parameter or file, the value and the fix)."""


class RecordingsUnavailableError(RuntimeError):
    """The Debian packages could not be fetched (no apt-get, no network to the package mirror, ...)."""


# ----------------------------------------------------------------------------------------------------------
# Names → classes, groups and splits
# ----------------------------------------------------------------------------------------------------------
def normalize_name(text: str) -> str:
    """Lower-case token string: camelCase and letter/digit boundaries split, punctuation to spaces."""
    text = re.sub(r"\.(wav|flac|ogg|aiff?|mp3)\b", " ", text, flags=re.I)
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    text = re.sub(r"([A-Za-z])([0-9])", r"\1 \2", text)
    text = re.sub(r"([0-9])([A-Za-z])", r"\1 \2", text)
    text = re.sub(r"[^A-Za-z0-9]+", " ", text).lower()
    return " ".join(text.split())


def classify_name(text: str) -> str | None:
    """Sound class for a recording's descriptive text (instrument + file name), or None when it fits none."""
    norm = normalize_name(text)
    if EXCLUDE.search(norm):
        return None
    for name, rule in CLASS_RULES:
        if rule.search(norm):
            return name
    return None


def group_key_for(text: str) -> str:
    """Group key: the name without take numbers and velocity words, so takes of one sound stay together."""
    norm = normalize_name(text)
    norm = re.sub(r"\b(hardest|hard|med|medium|soft|softest|normal|loud|quiet)\b", " ", norm)
    norm = re.sub(r"\b[0-9]+\b", " ", norm)
    return " ".join(norm.split())


def _hash_unit(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_of(group_key: str, heldout_fraction: float = 0.25) -> str:
    """``"heldout"`` when the SHA-1 of the group key falls below ``heldout_fraction``, else ``"train"``."""
    if not 0.0 < heldout_fraction < 1.0:
        raise RecordingsError(f"heldout_fraction={heldout_fraction!r} must be in (0, 1); use e.g. 0.25")
    return "heldout" if _hash_unit(group_key) < heldout_fraction else "train"


# ----------------------------------------------------------------------------------------------------------
# Signal processing: resampling and onset trimming
# ----------------------------------------------------------------------------------------------------------
def _kaiser_sinc_table(up: int, down: int, half_taps: int, beta: float = 8.6) -> tuple[np.ndarray, int]:
    """Polyphase table ``[up, 2K]`` of a Kaiser-windowed sinc low-pass for resampling by ``up/down``."""
    cutoff = 0.94 * min(1.0, up / down)  # fraction of the input Nyquist kept (anti-aliasing when downsampling)
    k = int(math.ceil(half_taps / min(1.0, up / down)))
    j = np.arange(-k + 1, k + 1)  # tap offsets relative to floor(position)
    phases = np.arange(up) / up  # fractional part of the input position for each output phase
    tau = j[None, :] - phases[:, None]  # (up, 2K) distance from the wanted position, in input samples
    win = np.kaiser(2 * k + 1, beta)
    # Evaluate the window continuously: np.kaiser is symmetric over [-k, k]; interpolate it at tau.
    win_c = np.interp(tau, np.arange(-k, k + 1), win, left=0.0, right=0.0)
    table = cutoff * np.sinc(cutoff * tau) * win_c
    table /= table.sum(axis=1, keepdims=True)  # unity DC gain per phase
    return table.astype(np.float64), k


def resample(x: np.ndarray, sr_in: int, sr_out: int, *, half_taps: int = 32) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed sinc, zero phase) along the last axis.

    Zero phase matters here: a resampled recording's onset stays at the same time, so event times stay exact.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise RecordingsError(f"sample rates must be positive, got sr_in={sr_in}, sr_out={sr_out}")
    x = np.asarray(x, dtype=np.float64)
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = math.gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    table, k = _kaiser_sinc_table(up, down, half_taps)
    n_in = x.shape[-1]
    n_out = int(math.ceil(n_in * up / down))
    lead = x.shape[:-1]
    flat = x.reshape(-1, n_in)
    padded = np.pad(flat, ((0, 0), (k, k + 1)))
    out = np.empty((flat.shape[0], n_out), dtype=np.float64)
    taps = np.arange(-k + 1, k + 1)
    block = 1 << 15
    for start in range(0, n_out, block):
        n = np.arange(start, min(start + block, n_out), dtype=np.int64)
        base = (n * down) // up  # floor of the input position
        phase = (n * down) % up
        idx = base[:, None] + taps[None, :] + k  # (n, 2K) into the padded signal
        coeff = table[phase]  # (n, 2K)
        out[:, start : start + len(n)] = np.einsum("cnk,nk->cn", padded[:, idx], coeff)
    return out.reshape(*lead, n_out).astype(np.float32)


def measure_onset(x: np.ndarray, threshold_db: float = -30.0) -> int:
    """First sample whose magnitude reaches ``threshold_db`` relative to the recording's peak."""
    mag = np.abs(np.asarray(x))
    if mag.ndim > 1:
        mag = mag.max(axis=0)
    peak = float(mag.max()) if mag.size else 0.0
    if peak <= 0.0:
        return 0
    return int(np.argmax(mag >= peak * 10.0 ** (threshold_db / 20.0)))


@dataclass
class Recording:
    """One processed one-shot: mono float32 at ``sample_rate``, onset at sample 0, peak 1."""

    name: str  # unique id, e.g. "hydrogen-drumkits/Gimme A Hand 1.0/WoodBlock-Hard.wav"
    sound_class: str
    audio: np.ndarray  # (N,) float32
    sample_rate: int
    group: str = ""
    split: str = "train"
    source: str = ""  # package
    licence: str = ""
    copyright: str = ""
    onset_s: float = 0.0  # measured onset in the original file (seconds), trimmed away
    original_sample_rate: int = 0
    original_channels: int = 1

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    def meta(self) -> dict:
        return {
            "name": self.name, "sound_class": self.sound_class, "group": self.group, "split": self.split,
            "source": self.source, "licence": self.licence, "copyright": self.copyright,
            "onset_s": round(self.onset_s, 6), "original_sample_rate": self.original_sample_rate,
            "original_channels": self.original_channels, "samples": int(len(self.audio)),
        }


def prepare_recording(
    name: str,
    audio: np.ndarray,
    sample_rate: int,
    *,
    sound_class: str,
    target_rate: int = SAMPLE_RATE,
    group: str | None = None,
    max_seconds: float = 1.5,
    onset_threshold_db: float = -30.0,
    **meta,
) -> Recording:
    """Turn a decoded recording (``(N,)`` or ``(N, C)``/``(C, N)``) into a :class:`Recording`.

    Downmix to mono (pan comes from the scene, not the recording), resample to ``target_rate``, cut at the
    measured onset (so the onset is sample 0), keep at most ``max_seconds`` with a 50 ms fade-out, and
    normalise the peak to 1 (loudness comes from the object's speed). Raises RecordingsError when silent.
    """
    x = np.asarray(audio, dtype=np.float64)
    channels = 1
    if x.ndim == 2:
        # soundfile gives (N, C); accept (C, N) too when C is obviously the short axis.
        if x.shape[0] <= 8 and x.shape[1] > x.shape[0]:
            x = x.T
        channels = x.shape[1]
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise RecordingsError(f"recording {name!r}: audio must be 1-D or 2-D, got shape {x.shape}")
    if x.size == 0 or not np.isfinite(x).all() or np.abs(x).max() < 1e-4:
        raise RecordingsError(f"recording {name!r} is empty, silent or not finite; drop it from the bank")
    x = x - x.mean() if x.size > 1 else x  # DC offsets in a few old samples would click when mixed
    onset_in = measure_onset(x, onset_threshold_db)
    # Cut in the source rate first (cheaper resampling), keeping a margin for the filter.
    margin = 64
    keep = int(max_seconds * sample_rate) + 2 * margin
    start = max(0, onset_in - margin)
    y = resample(x[start : start + keep], sample_rate, target_rate)
    onset_out = measure_onset(y, onset_threshold_db)
    y = y[onset_out : onset_out + int(round(max_seconds * target_rate))].astype(np.float64)
    fade_in = min(16, len(y))  # 0.4 ms: removes the step of cutting mid-waveform without moving the onset
    y[:fade_in] *= np.linspace(0.0, 1.0, fade_in + 1)[1:]
    fade_out = min(int(0.05 * target_rate), len(y) // 4)
    if fade_out > 0:
        y[-fade_out:] *= 0.5 * (1 + np.cos(np.linspace(0.0, np.pi, fade_out)))
    # Trim the trailing silence (below -60 dB of the peak) to keep the bank small.
    mag = np.abs(y)
    peak = mag.max()
    above = np.nonzero(mag >= peak * 1e-3)[0]
    y = y[: max(int(above[-1]) + 1, 1)] / peak
    return Recording(
        name=name, sound_class=sound_class, audio=y.astype(np.float32), sample_rate=int(target_rate),
        group=group if group is not None else group_key_for(name),
        onset_s=onset_in / float(sample_rate), original_sample_rate=int(sample_rate),
        original_channels=int(channels), **meta,
    )


# ----------------------------------------------------------------------------------------------------------
# The bank
# ----------------------------------------------------------------------------------------------------------
@dataclass
class RecordingBank:
    """All processed recordings, with their class and split. Build from real packages or from arrays."""

    recordings: list[Recording]
    sample_rate: int = SAMPLE_RATE
    packages: dict = field(default_factory=dict)  # package -> {"version":..., "copyright_file":...}

    @classmethod
    def from_recordings(cls, recordings: Iterable[Recording], *, heldout_fraction: float = 0.25,
                        sample_rate: int | None = None, packages: dict | None = None) -> "RecordingBank":
        """Assign splits deterministically by group hash (see module doc) and return the bank."""
        recs = list(recordings)
        if not recs:
            raise RecordingsError("no recordings given: the bank would be empty")
        rates = {r.sample_rate for r in recs}
        if len(rates) != 1:
            raise RecordingsError(f"recordings have mixed sample rates {sorted(rates)}; resample them first")
        sr = rates.pop()
        if sample_rate is not None and sample_rate != sr:
            raise RecordingsError(f"sample_rate={sample_rate} but recordings are at {sr} Hz")
        by_class: dict[str, dict[str, list[Recording]]] = {}
        for r in recs:
            by_class.setdefault(r.sound_class, {}).setdefault(r.group, []).append(r)
        out: list[Recording] = []
        for cls_name in sorted(by_class):
            groups = by_class[cls_name]
            split = {g: split_of(f"{cls_name}|{g}", heldout_fraction) for g in groups}
            if len(groups) >= 2:
                ordered = sorted(groups, key=lambda g: _hash_unit(f"{cls_name}|{g}"))
                if all(s == "train" for s in split.values()):
                    split[ordered[0]] = "heldout"
                if all(s == "heldout" for s in split.values()):
                    split[ordered[-1]] = "train"
            for g in sorted(groups):
                for r in sorted(groups[g], key=lambda r: r.name):
                    out.append(replace(r, split=split[g]))
        return cls(out, sr, dict(packages or {}))

    def classes(self) -> list[str]:
        """Class names present in the bank, in :data:`SOUND_CLASSES` order (unknown classes last)."""
        present = {r.sound_class for r in self.recordings}
        known = [c for c in SOUND_CLASSES if c in present]
        return known + sorted(present - set(known))

    def select(self, split: str | None = None, sound_class: str | None = None) -> list[Recording]:
        if split not in (None, "train", "heldout"):
            raise RecordingsError(f"split={split!r}; use 'train' or 'heldout'")
        return [r for r in self.recordings
                if (split is None or r.split == split) and (sound_class is None or r.sound_class == sound_class)]

    def classes_with(self, split: str) -> list[str]:
        """Classes that have at least one recording in ``split``."""
        have = {r.sound_class for r in self.select(split)}
        return [c for c in self.classes() if c in have]

    def summary(self) -> str:
        lines = [f"{'class':<12} {'train':>6} {'heldout':>8}  licences"]
        for c in self.classes():
            tr, he = len(self.select("train", c)), len(self.select("heldout", c))
            lic = sorted({r.licence or "?" for r in self.select(None, c)})
            lines.append(f"{c:<12} {tr:>6} {he:>8}  {', '.join(lic)}")
        lines.append(f"{'total':<12} {len(self.select('train')):>6} {len(self.select('heldout')):>8}")
        return "\n".join(lines)

    # -- persistence ------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``audio.npz`` (one array per recording) and ``manifest.json`` atomically into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "version": BANK_VERSION, "sample_rate": self.sample_rate, "packages": self.packages,
            "classes": {c: SOUND_CLASSES.get(c, c) for c in self.classes()},
            "recordings": [r.meta() | {"key": f"r{i:05d}"} for i, r in enumerate(self.recordings)],
        }
        arrays = {f"r{i:05d}": r.audio for i, r in enumerate(self.recordings)}
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-"))
        try:
            np.savez(tmp / "audio.npz", **arrays)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
            os.replace(tmp / "audio.npz", directory / "audio.npz")
            os.replace(tmp / "manifest.json", directory / "manifest.json")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "RecordingBank":
        directory = Path(directory)
        man_path = directory / "manifest.json"
        if not man_path.is_file() or not (directory / "audio.npz").is_file():
            raise RecordingsError(f"no recording bank in {directory} (manifest.json + audio.npz); build it with "
                                  f"`python -m kling_foley_core.data.recordings`")
        manifest = json.loads(man_path.read_text())
        sr = int(manifest["sample_rate"])
        recs = []
        with np.load(directory / "audio.npz") as z:
            for m in manifest["recordings"]:
                recs.append(Recording(
                    name=m["name"], sound_class=m["sound_class"], audio=z[m["key"]].astype(np.float32),
                    sample_rate=sr, group=m["group"], split=m["split"], source=m["source"],
                    licence=m["licence"], copyright=m["copyright"], onset_s=m["onset_s"],
                    original_sample_rate=m["original_sample_rate"], original_channels=m["original_channels"]))
        return cls(recs, sr, manifest.get("packages", {}))


# ----------------------------------------------------------------------------------------------------------
# Fetching Debian packages and reading their licences
# ----------------------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kling_foley" / "recordings"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


def fetch_package(name: str, cache_dir: Path) -> Path:
    """``apt-get download`` + ``dpkg -x`` one package into ``cache_dir/packages/NAME``; returns that root."""
    root = cache_dir / "packages" / name
    if (root / ".complete").is_file():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RecordingsUnavailableError(
            f"cannot fetch {name}: apt-get/dpkg not found (a Debian-based system is needed, or copy a built "
            f"bank into {cache_dir} / set {ENV_VAR})")
    debs = cache_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        res = _run(["apt-get", "download", name], debs)
        if res.returncode != 0:
            log.info("apt-get download %s failed (%s); running apt-get update and retrying", name,
                     res.stderr.strip().splitlines()[-1:] or "")
            _run(["apt-get", "update"], debs)
            res = _run(["apt-get", "download", name], debs)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if res.returncode != 0 or not found:
            raise RecordingsUnavailableError(
                f"apt-get download {name} failed: {res.stderr.strip()[-300:]} (check the package mirror or "
                f"set {ENV_VAR} to a folder holding a built bank)")
    tmp = Path(tempfile.mkdtemp(dir=_mkdir(cache_dir / "packages"), prefix=f".{name}-"))
    res = _run(["dpkg", "-x", str(found[-1]), str(tmp)], cache_dir)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RecordingsUnavailableError(f"dpkg -x {found[-1].name} failed: {res.stderr.strip()[-300:]}")
    (tmp / ".version").write_text(found[-1].name.split("_")[1])
    (tmp / ".complete").write_text("ok\n")
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@dataclass
class _Licence:
    patterns: list[str]
    licence: str
    copyright: str


def parse_copyright(text: str) -> list[_Licence]:
    """Parse a DEP-5 (machine-readable) Debian copyright file into its ``Files`` paragraphs."""
    paragraphs, cur, key = [], {}, None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if cur:
                paragraphs.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t":
            if key:
                cur[key] += "\n" + line.strip()
            continue
        k, _, v = line.partition(":")
        key = k.strip().lower()
        cur[key] = v.strip()
    out = []
    for p in paragraphs:
        if "files" not in p or "license" not in p:
            continue
        out.append(_Licence(patterns=p["files"].split(), licence=p["license"].splitlines()[0].strip(),
                            copyright=" / ".join(x.strip() for x in p.get("copyright", "").splitlines() if x)))
    return out


def licence_for(relpath: str, entries: list[_Licence]) -> tuple[str, str]:
    """(licence, copyright) of a file; DEP-5 rule: the last matching paragraph wins.

    Patterns are matched on their last two path components (packages install files elsewhere than the
    upstream paths the copyright file names); hydrogen kits are named by their ``KIT.h2drumkit`` archive.
    """
    parts = relpath.split("/")
    lic, cop = "unknown", ""
    for e in entries:
        for pat in e.patterns:
            pparts = pat.split("/")
            hit = False
            if pat == "*":
                hit = True
            elif pat.endswith(".h2drumkit"):
                stem = pparts[-1][: -len(".h2drumkit")]
                hit = any(fnmatch.fnmatch(d, stem) or d.startswith(stem) for d in parts[:-1])
            elif len(pparts) >= 2 and len(parts) >= 2:
                hit = fnmatch.fnmatch("/".join(parts[-2:]), "/".join(pparts[-2:])) or (
                    pparts[-2] in ("samples",) and fnmatch.fnmatch(parts[-1], pparts[-1]))
            if hit:
                lic, cop = e.licence, e.copyright
    return lic, cop


@dataclass
class _Candidate:
    name: str
    text: str  # what classification reads
    group: str
    source: str
    relpath: str
    loader: object  # () -> (audio, sr)


def _sf_loader(path: Path):
    def load():
        import soundfile as sf
        a, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return a, sr
    return load


def _zip_loader(zpath: Path, member: str):
    def load():
        import soundfile as sf
        with zipfile.ZipFile(zpath) as z:
            data = z.read(member)
        a, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return a, sr
    return load


def _discover_sonic_pi(root: Path) -> list[_Candidate]:
    out = []
    for f in sorted((root / "usr/share/sonic-pi/samples").glob("*.flac")):
        if not f.name.startswith(SONIC_PI_PREFIXES):
            continue
        out.append(_Candidate(name=f"sonic-pi-samples/{f.name}", text=f.stem, group=f"sonic-pi/{group_key_for(f.stem)}",
                              source="sonic-pi-samples", relpath=f"samples/{f.name}", loader=_sf_loader(f)))
    return out


def _discover_hydrogen(root: Path) -> list[_Candidate]:
    out = []
    kits = root / "usr/share/hydrogen/data/drumkits"
    for xml in sorted(kits.glob("*/drumkit.xml")):
        kit = xml.parent.name
        tree = ET.parse(xml).getroot()
        seen = set()
        for inst in tree.iter():
            if not inst.tag.endswith("instrument"):
                continue
            names = [c.text or "" for c in inst if c.tag.endswith("name")]
            iname = names[0].strip() if names else ""
            for fn in (e.text or "" for e in inst.iter() if e.tag.endswith("filename")):
                path = xml.parent / fn
                if not fn or fn in seen or not path.is_file():
                    continue
                seen.add(fn)
                out.append(_Candidate(
                    name=f"hydrogen-drumkits/{kit}/{fn}", text=f"{iname} {Path(fn).stem}",
                    group=f"hydrogen/{kit}/{normalize_name(iname) or group_key_for(fn)}",
                    source="hydrogen-drumkits", relpath=f"drumkits/{kit}/{fn}", loader=_sf_loader(path)))
    return out


def _discover_ufoai(root: Path) -> list[_Candidate]:
    out = []
    for pk3 in sorted(root.glob("usr/share/games/ufoai/base/*.pk3")):
        with zipfile.ZipFile(pk3) as z:
            members = [m for m in z.namelist() if m.startswith(UFOAI_DIRS) and m.endswith(".ogg")]
        for m in sorted(members):
            rel = m[len("sound/"):-len(".ogg")]  # e.g. footsteps/wood1
            out.append(_Candidate(name=f"ufoai-sound/{m}", text=rel, group=f"ufoai/{group_key_for(rel)}",
                                  source="ufoai-sound", relpath=f"base/{m}", loader=_zip_loader(pk3, m)))
    return out


DISCOVER = {"sonic-pi-samples": _discover_sonic_pi, "hydrogen-drumkits": _discover_hydrogen,
            "ufoai-sound": _discover_ufoai}


def build_bank(cache_dir: str | Path | None = None, *, sample_rate: int = SAMPLE_RATE,
               packages: Iterable[str] = DEFAULT_PACKAGES, heldout_fraction: float = 0.25,
               max_seconds: float = 1.5) -> RecordingBank:
    """Fetch the packages (if needed), decode, classify and process every recording, and save the bank."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    packages = tuple(packages)
    unknown = [p for p in packages if p not in DISCOVER]
    if unknown:
        raise RecordingsError(f"packages={unknown!r} unknown; choose from {sorted(DISCOVER)}")
    recs: list[Recording] = []
    pkg_meta = {}
    for pkg in packages:
        root = fetch_package(pkg, cache_dir)
        cfile = root / "usr/share/doc" / pkg / "copyright"
        entries = parse_copyright(cfile.read_text(errors="replace")) if cfile.is_file() else []
        pkg_meta[pkg] = {"version": (root / ".version").read_text().strip() if (root / ".version").is_file()
                         else "", "copyright_file": f"/usr/share/doc/{pkg}/copyright"}
        n_before, n_multi = len(recs), 0
        for cand in DISCOVER[pkg](root):
            cls_name = classify_name(cand.text)
            if cls_name is None:
                continue
            try:
                audio, sr = cand.loader()
                lic, cop = licence_for(cand.relpath, entries)
                rec = prepare_recording(
                    cand.name, audio, sr, sound_class=cls_name, target_rate=sample_rate, group=cand.group,
                    max_seconds=max_seconds, source=pkg, licence=lic, copyright=cop)
            except (RecordingsError, RuntimeError) as e:  # soundfile raises RuntimeError subclasses
                log.info("skipping %s: %s", cand.name, e)
                continue
            if count_attacks(rec) != 1:
                n_multi += 1
                continue
            recs.append(rec)
        log.info("%s: %d one-shot recordings (%d with several attacks dropped)", pkg, len(recs) - n_before,
                 n_multi)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.sound_class] = counts.get(r.sound_class, 0) + 1
    small = {c for c, n in counts.items() if n < MIN_CLASS_RECORDINGS}
    if small:
        log.info("dropping classes with fewer than %d recordings: %s", MIN_CLASS_RECORDINGS, sorted(small))
        recs = [r for r in recs if r.sound_class not in small]
    bank = RecordingBank.from_recordings(recs, heldout_fraction=heldout_fraction, packages=pkg_meta)
    bank.save(bank_dir(cache_dir, sample_rate))
    return bank


def count_attacks(rec: Recording, pad: float = 0.1) -> int:
    """Number of attacks the evaluation's onset detector finds in a recording (with silence around it).

    The bank keeps only recordings with exactly one: a door slam with a latch click, a footstep with heel and
    toe, or a kick whose boom re-triggers would put several audible onsets behind one ground-truth event.
    """
    from ..evaluation.onsets import detect_onsets

    z = np.zeros(int(pad * rec.sample_rate), np.float32)
    return int(len(detect_onsets(np.concatenate([z, rec.audio, z]), rec.sample_rate)))


def bank_dir(cache_dir: Path, sample_rate: int) -> Path:
    return Path(cache_dir) / f"bank-{sample_rate}"


def load_bank(cache_dir: str | Path | None = None, *, sample_rate: int = SAMPLE_RATE,
              packages: Iterable[str] = DEFAULT_PACKAGES, rebuild: bool = False, fetch: bool = True
              ) -> RecordingBank:
    """The processed bank from the cache; built (fetching the packages) on first use or with ``rebuild``."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    d = bank_dir(cache_dir, sample_rate)
    if not rebuild and (d / "manifest.json").is_file():
        version = json.loads((d / "manifest.json").read_text()).get("version")
        if version == BANK_VERSION:
            return RecordingBank.load(d)
        log.info("recording bank in %s is version %s, not %s: rebuilding", d, version, BANK_VERSION)
    if not fetch:
        raise RecordingsUnavailableError(f"no recording bank in {d} and fetch=False")
    return build_bank(cache_dir, sample_rate=sample_rate, packages=packages)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.data.recordings",
                                 description="Fetch the real one-shot recordings and build the class bank.")
    ap.add_argument("--cache", type=Path, default=None, help=f"cache folder (default ${ENV_VAR} or "
                    "~/.cache/kling_foley/recordings)")
    ap.add_argument("--rebuild", action="store_true", help="re-process even if a bank exists")
    ap.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bank = load_bank(args.cache, packages=args.packages, rebuild=args.rebuild)
    print(bank.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
