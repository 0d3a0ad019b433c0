"""SynthHits: a Greatest-Hits-like dataset with exactly known sound events, rendered from real recordings.

Each clip shows 1–3 objects (numpy-drawn: shape + colour + texture) bouncing on a floor at 25 fps. Every time an
object touches the floor, one real recording of the object's sound class starts at exactly that time:

- **look → class**: each class has its own shape, colour and texture (:data:`LOOKS`), jittered per clip;
- **x-position → pan**: constant-power pan from the object's x at the hit (left edge −1, right edge +1);
- **speed → loudness**: the hit's amplitude is proportional to the vertical speed at contact (the arc before a
  hit is shaped so that the contact speed is the one drawn);
- **no contact → no sound**: a fraction of clips has objects that drift or float without touching the floor,
  and their audio is exact silence.

Everything is drawn from ``np.random.default_rng(SeedSequence([seed, index, split]))``, so clip ``index`` of a
dataset is reproducible on its own. Output per clip (:class:`SynthHitsClip`): frames ``uint8 [T,H,W,3]``, audio
``float32 [2,N]`` at 44.1 kHz, the event list (time, class, pan, gain, object id), a plain-language caption and
the duration. Writers: mp4 (H.264 + AAC, PyAV) with a JSON sidecar, and compressed npz shards for training.

    python -m kling_foley_core.data.synthhits --out DIR --n 1000 --seed 0 --split train [--format mp4 npz]
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .recordings import SOUND_CLASSES, RecordingBank

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "heldout": 1}


class SynthHitsError(ValueError):
    """Bad SynthHits argument or file (names the parameter / file, the value and the fix)."""


# ----------------------------------------------------------------------------------------------------------
# Looks and words per class
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Look:
    shape: str
    colour: tuple[int, int, int]
    texture: str
    size: float  # object width as a fraction of the frame width
    aspect: float  # height / width


LOOKS: dict[str, Look] = {
    "wood_knock": Look("rect", (150, 95, 45), "grain", 0.16, 0.6),
    "cymbal": Look("ellipse", (225, 185, 40), "rings", 0.24, 0.3),
    "kick": Look("circle", (150, 25, 35), "plain", 0.24, 1.0),
    "snare": Look("hexagon", (240, 240, 240), "checker", 0.17, 1.0),
    "drum": Look("trapezoid", (235, 125, 30), "dots", 0.17, 1.1),
    "bell": Look("triangle", (60, 215, 225), "plain", 0.16, 1.0),
    "clap_snap": Look("diamond", (240, 110, 175), "plain", 0.15, 1.2),
    "door_impact": Look("door", (110, 110, 125), "panels", 0.14, 1.8),
    "footstep": Look("pill", (45, 130, 55), "dots", 0.2, 0.4),
}

WORDS: dict[str, tuple[str, str]] = {  # (singular, plural) event nouns for captions
    "wood_knock": ("wooden knock", "wooden knocks"),
    "cymbal": ("cymbal crash", "cymbal crashes"),
    "kick": ("low drum thump", "low drum thumps"),
    "snare": ("snare hit", "snare hits"),
    "drum": ("drum hit", "drum hits"),
    "bell": ("bell ring", "bell rings"),
    "clap_snap": ("clap", "claps"),
    "door_impact": ("door bang", "door bangs"),
    "footstep": ("footstep", "footsteps"),
}
NUMBERS = ["no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _words(cls: str) -> tuple[str, str]:
    if cls in WORDS:
        return WORDS[cls]
    noun = SOUND_CLASSES.get(cls, cls.replace("_", " "))
    return noun, noun + "s"


def side_of(pan: float) -> str:
    return "on the left" if pan < -0.33 else "on the right" if pan > 0.33 else "in the center"


# ----------------------------------------------------------------------------------------------------------
# Data classes
# ----------------------------------------------------------------------------------------------------------
@dataclass
class HitEvent:
    time: float  # seconds, onset of the recording in the audio
    sound_class: str
    pan: float  # -1 (left) .. 1 (right), constant-power
    gain: float  # linear amplitude applied to the peak-normalised recording
    object_id: int
    recording: str = ""
    speed: float = 0.0  # contact speed in frame heights per second


@dataclass
class SynthHitsConfig:
    size: int = 112  # frame height = width (96–128 keeps it fast; must be even for H.264)
    fps: int = 25
    sample_rate: int = 44100
    min_duration: float = 2.0
    max_duration: float = 10.0
    p_no_hits: float = 0.15  # fraction of hit-free clips
    hover: tuple[float, float] = (0.12, 0.4)  # non-striking objects' height above the floor, fraction of floor height
    min_objects: int = 1  # objects per clip: drawn uniformly in min_objects..max_objects
    max_objects: int = 3
    p_hovering: float = 0.0  # in a hit clip, chance that an object only hovers (one object always strikes)
    p_swap_sound: float = 0.0  # chance that a clip's objects sound like another class than they look (captions
    # name the sound): training data for text- and audio-controlled timbre (TC-VTA, AC-VTA)
    look_of_sound: bool = False  # with p_swap_sound: draw swapped objects with the look of the class they sound like.
    # The clip is the swapped clip's twin (same seed: same sound, events and motion, a look that matches the sound),
    # which a teacher reads when AC-VTA is trained by distillation (train_foley --reference-teacher)
    sound_of_look: bool = False  # with p_swap_sound: keep each object's own sound. The clip is the swapped clip's
    # other twin (same seed: the same frames, events and motion, the sound of the look), which contrast examples
    # learn (train_foley --contrast-sound): the same frames then call for either class
    hit_rate: tuple[float, float] = (0.4, 1.2)  # hits per second per object
    min_gap_object: float = 0.3  # s between two hits of one object
    min_gap_any: float = 0.12  # s between any two hits (keeps onsets separable at ±40 ms)
    edge_margin: float = 0.2  # no hit in the first / last 0.2 s
    level: float = 0.5  # amplitude of a full-speed hit
    max_speed: float = 2.5  # contact speed (frame heights per second) of a full-level hit
    min_speed_fraction: float = 0.25  # slowest drawn hit, as a fraction of max_speed (-12 dB)
    fall_time: float = 0.25  # seconds a full-speed fall takes (sets gravity)

    def check(self) -> None:
        if not 32 <= self.size <= 512 or self.size % 2:
            raise SynthHitsError(f"size={self.size} must be an even number of pixels in 32..512 (e.g. 112)")
        if not 0 < self.min_duration <= self.max_duration:
            raise SynthHitsError(f"min_duration={self.min_duration}, max_duration={self.max_duration}: need "
                                 f"0 < min <= max (e.g. 2 and 10)")
        if not 0.0 <= self.p_no_hits <= 1.0:
            raise SynthHitsError(f"p_no_hits={self.p_no_hits} must be a probability in [0, 1]")
        lo, hi = self.hover
        if not 0.05 <= lo <= hi <= 0.5:
            raise SynthHitsError(f"hover={lo} {hi}: need 0.05 <= low <= high <= 0.5 (fractions of the floor "
                                 f"height; default 0.12 0.4)")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise SynthHitsError(f"objects={self.min_objects} {self.max_objects}: need 1 <= min <= max <= 6 "
                                 f"(objects per clip; default 1 3)")
        if not 0.0 <= self.p_hovering < 1.0:
            raise SynthHitsError(f"p_hovering={self.p_hovering} must be a probability in [0, 1) (chance that an "
                                 f"object of a hit clip only hovers; default 0)")
        if not (isinstance(self.p_swap_sound, (int, float)) and 0.0 <= self.p_swap_sound <= 1.0):
            raise SynthHitsError(f"p_swap_sound={self.p_swap_sound} must be a probability in [0, 1] (chance that a "
                                 f"clip's objects sound like another class; default 0)")
        if self.look_of_sound and self.p_swap_sound <= 0:
            raise SynthHitsError("look_of_sound=True renders the twins of swapped clips; it needs p_swap_sound > 0")
        if self.sound_of_look and (self.p_swap_sound <= 0 or self.look_of_sound):
            raise SynthHitsError("sound_of_look=True renders the swapped clips with their look's own sound; it needs "
                                 "p_swap_sound > 0 and not look_of_sound (which renders the other twin)")
        if self.min_duration < 2 * self.edge_margin + 0.1:
            raise SynthHitsError(f"min_duration={self.min_duration} too short for edge_margin={self.edge_margin}")


@dataclass
class SynthHitsClip:
    clip_id: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (2, N) float32
    sample_rate: int
    fps: int
    events: list[HitEvent]
    caption: str
    duration: float
    split: str = "train"
    objects: list[dict] = field(default_factory=list)

    @property
    def has_hits(self) -> bool:
        return bool(self.events)

    def meta(self) -> dict:
        return {"clip_id": self.clip_id, "caption": self.caption, "duration": self.duration, "fps": self.fps,
                "sample_rate": self.sample_rate, "split": self.split, "num_frames": int(len(self.frames)),
                "num_samples": int(self.audio.shape[-1]), "events": [asdict(e) for e in self.events],
                "objects": self.objects}

    def to_comfy(self):
        """(IMAGE ``[T,H,W,3]`` float 0..1, AUDIO ``{"waveform": [1,2,N], "sample_rate"}``) as torch tensors."""
        import torch
        image = torch.from_numpy(self.frames).float() / 255.0
        audio = {"waveform": torch.from_numpy(self.audio).float()[None], "sample_rate": self.sample_rate}
        return image, audio


# ----------------------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------------------
def _shape_mask(shape: str, w: int, h: int, ss: int = 3) -> np.ndarray:
    """Anti-aliased coverage ``[h, w]`` in 0..1 of a shape filling a w×h box (3× supersampled)."""
    ys, xs = np.mgrid[0 : h * ss, 0 : w * ss].astype(np.float32)
    u = (xs + 0.5) / (w * ss) * 2 - 1  # -1..1 across the box
    v = (ys + 0.5) / (h * ss) * 2 - 1  # -1 top .. 1 bottom
    if shape == "rect":
        m = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    elif shape in ("circle", "ellipse"):
        m = u**2 + v**2 <= 1
    elif shape == "ring":
        r2 = u**2 + v**2
        m = (r2 <= 1) & (r2 >= 0.3)
    elif shape == "stack":  # two thin discs above each other (a hi-hat)
        m = (u**2 + ((v + 0.5) / 0.45) ** 2 <= 1) | (u**2 + ((v - 0.5) / 0.45) ** 2 <= 1)
    elif shape == "hexagon":
        m = (np.abs(v) <= 0.87) & (np.abs(u) * 0.87 + np.abs(v) * 0.5 <= 0.87)
    elif shape == "triangle":  # apex up
        m = (v <= 1) & (np.abs(u) <= (v + 1) / 2)
    elif shape == "trapezoid":  # wide top, narrow bottom (a goblet drum)
        m = (np.abs(v) <= 1) & (np.abs(u) <= 0.75 - 0.3 * v)
    elif shape == "diamond":
        m = np.abs(u) + np.abs(v) <= 1
    elif shape == "door":
        m = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    elif shape == "pill":
        m = (np.maximum(np.abs(u) - 0.6, 0) / 0.4) ** 2 + v**2 <= 1
    else:
        raise SynthHitsError(f"unknown shape {shape!r}")
    return m.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)


def _texture(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness multiplier ``[h, w]`` around 1."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "grain":
        phase = rng.uniform(0, 2 * np.pi)
        return 1 + 0.18 * np.sin(ys * 1.3 + 0.15 * np.sin(xs * 0.4) * 4 + phase)
    if kind == "rings":
        r = np.hypot((xs - w / 2) / max(w, 1), (ys - h / 2) / max(h, 1))
        return 1 + 0.15 * np.sin(r * 60)
    if kind == "checker":
        return 1 - 0.2 * (((xs // 3) + (ys // 3)) % 2)
    if kind == "dots":
        return 1 - 0.25 * ((xs % 4 < 2) & (ys % 4 < 2))
    if kind == "panels":
        t = 1 - 0.3 * ((np.abs(xs - w / 2) < 1) | (np.abs(ys - h / 3) < 1))
        knob = (np.hypot(xs - 0.8 * w, ys - 0.55 * h) < max(1.0, w / 10))
        return np.where(knob, 1.6, t)
    return 1 - 0.2 * ys / max(h, 1)  # plain: soft top-lit shading


@dataclass
class _Sprite:
    rgb: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32


def _make_sprite(look: Look, w: int, h: int, colour: np.ndarray, rng: np.random.Generator) -> _Sprite:
    w, h = max(w, 3), max(h, 3)
    alpha = _shape_mask(look.shape, w, h)
    rgb = np.clip(colour[None, None, :] * _texture(look.texture, w, h, rng)[..., None], 0, 255)
    return _Sprite(rgb.astype(np.float32), alpha)


def _paste(canvas: np.ndarray, sp: _Sprite, cx: float, bottom: float) -> None:
    h, w = sp.alpha.shape
    x0, y0 = int(round(cx - w / 2)), int(round(bottom - h))
    H, W = canvas.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa >= xb or ya >= yb:
        return
    a = sp.alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
    canvas[ya:yb, xa:xb] = canvas[ya:yb, xa:xb] * (1 - a) + sp.rgb[ya - y0 : yb - y0, xa - x0 : xb - x0] * a


def _background(size: int, ground: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation wall gradient above a darker floor; smooth, so shards compress well."""
    ys = np.arange(size, dtype=np.float32)[:, None, None]
    wall = rng.uniform(150, 215) + rng.uniform(-12, 12, size=3)
    wall2 = wall * rng.uniform(0.8, 0.95)
    img = wall + (wall2 - wall) * ys / max(ground, 1)
    floor = rng.uniform(70, 120) + rng.uniform(-10, 10, size=3)
    img = np.broadcast_to(img, (size, size, 3)).copy()
    img[ground:] = floor + 8 * np.sin(np.arange(size - ground, dtype=np.float32) * 0.9)[:, None, None]
    img[ground : ground + 1] = floor * 0.6  # the surface line objects strike
    return img.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Scene and event sampling
# ----------------------------------------------------------------------------------------------------------
def _pan_from_x(x: float, width: int) -> float:
    return float(np.clip(x / (width - 1) * 2 - 1, -1, 1))


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan law: L = cos θ, R = sin θ with θ = (pan + 1)·π/4."""
    theta = (float(pan) + 1) * math.pi / 4
    return math.cos(theta), math.sin(theta)


def _hit_times(rng: np.random.Generator, n_obj: int, dur: float, cfg: SynthHitsConfig) -> list[list[float]]:
    lo, hi = cfg.edge_margin, dur - cfg.edge_margin
    per = [max(1, rng.poisson(rng.uniform(*cfg.hit_rate) * dur / max(1, n_obj) ** 0.5)) for _ in range(n_obj)]
    accepted: list[list[float]] = [[] for _ in range(n_obj)]
    all_t: list[float] = []
    for _ in range(4 * sum(per) + 20):
        k = int(rng.integers(n_obj))
        if len(accepted[k]) >= per[k]:
            if all(len(a) >= p for a, p in zip(accepted, per)):
                break
            continue
        t = float(rng.uniform(lo, hi))
        if any(abs(t - u) < cfg.min_gap_object for u in accepted[k]) or any(abs(t - u) < cfg.min_gap_any
                                                                              for u in all_t):
            continue
        accepted[k].append(t)
        all_t.append(t)
    for k in range(n_obj):  # every object in a hit clip strikes at least once
        if not accepted[k]:
            for t in rng.uniform(lo, hi, size=64):
                if all(abs(t - u) >= cfg.min_gap_any for u in all_t):
                    accepted[k].append(float(t))
                    all_t.append(float(t))
                    break
    return [sorted(a) for a in accepted]


@dataclass
class _Obj:
    """One object. Motion is ballistic with one gravity ``g`` (px/s²): before a hit at speed v it falls from
    rest at the apex v²/2g for v/g seconds; after a hit it rebounds symmetrically to the next apex and is held
    there (floating) until its next fall. So the contact speed, and with it the loudness, is visible."""

    oid: int
    cls: str
    look: Look
    sprite: _Sprite
    squash: _Sprite
    x0: float
    x1: float
    hits: list[float]
    speeds: list[float]  # contact speed per hit, px/s
    g: float
    v_end: float  # rebound speed after the last hit
    hover: float  # objects that never strike: height above the floor (px)
    recording: object = None

    def x(self, t: float, dur: float) -> float:
        return self.x0 + (self.x1 - self.x0) * (t / dur)

    def height(self, t: float) -> float:
        """Height (px) of the object's bottom above the floor at time t."""
        if not self.hits:
            return self.hover * (1 + 0.25 * math.sin(2 * math.pi * 0.7 * t + self.oid))
        g = self.g
        b = next((i for i, th in enumerate(self.hits) if th >= t), None)
        a = b - 1 if b is not None else len(self.hits) - 1
        if b is not None:
            v = self.speeds[b]
            tau = self.hits[b] - t
            if tau <= v / g:  # falling onto hit b
                return v * tau - 0.5 * g * tau * tau
        else:
            v = self.v_end
        if a >= 0:
            tau = t - self.hits[a]
            if tau <= v / g:  # rebounding from hit a towards the next apex
                return v * tau - 0.5 * g * tau * tau
        return v * v / (2 * g)  # held at the apex


def _swap_sounds(rng, bank: RecordingBank, split: str, objs: list, classes) -> None:
    """Give each class of the clip the sound of another class (a permutation without fixed points over the
    bank's classes), with a recording of that class; the objects keep their look."""
    classes = sorted(classes)
    if len(classes) < 2:
        return
    mapping = {}
    for cls in sorted({o.cls for o in objs}):
        others = [c for c in classes if c != cls and c not in mapping.values()] or [c for c in classes if c != cls]
        mapping[cls] = str(others[int(rng.integers(len(others)))])
    for o in objs:
        o.cls = mapping[o.cls]
        recs = bank.select(split, o.cls)
        o.recording = recs[int(rng.integers(len(recs)))]


def _relook(rng, objs: list, size: int) -> None:
    """Redraw each object with the look of the class it now sounds like (its own generator, so the clip's other
    draws, and with them its sound and motion, stay those of the swapped clip)."""
    for o in objs:
        o.look = LOOKS.get(o.cls, o.look)
        o.sprite, o.squash = _sprites(o.look, size, rng)


def _sprites(look: Look, size: int, rng) -> tuple:
    """(sprite, squashed sprite) of one object of ``look``, with drawn colour jitter and size."""
    colour = np.clip(np.array(look.colour, np.float32) + rng.uniform(-12, 12, 3), 0, 255)
    w = int(round(size * look.size * rng.uniform(0.85, 1.15)))
    h = int(round(w * look.aspect))
    return _make_sprite(look, w, h, colour, rng), _make_sprite(look, int(round(w * 1.15)), int(round(h * 0.8)),
                                                               colour, rng)


def _build_objects(rng, bank: RecordingBank, split: str, dur: float, cfg: SynthHitsConfig, with_hits: bool,
                   classes: Sequence[str]) -> list[_Obj]:
    size = cfg.size
    ground = int(round(size * 0.8))
    v_max = cfg.max_speed * size
    g = v_max / cfg.fall_time
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    striking = np.ones(n_obj, bool) if with_hits else np.zeros(n_obj, bool)
    if with_hits and cfg.p_hovering > 0 and n_obj > 1:  # drawn only when asked: default clips stay as they were
        striking = rng.uniform(size=n_obj) >= cfg.p_hovering
        if not striking.any():
            striking[int(rng.integers(n_obj))] = True
    hit_times = iter(_hit_times(rng, int(striking.sum()), dur, cfg) if with_hits else [])
    times = [next(hit_times) if s else [] for s in striking]
    # Spread objects over the width: sorted random slots so they rarely overlap.
    slots = np.sort(rng.uniform(0.1, 0.9, size=n_obj))
    objs = []
    for k in range(n_obj):
        cls = str(rng.choice(list(classes)))
        look = LOOKS.get(cls, Look("circle", tuple(int(c) for c in rng.integers(40, 230, 3)), "plain", 0.18, 1.0))
        sprite, squash = _sprites(look, size, rng)
        x0 = slots[k] * size
        x1 = float(np.clip(x0 + rng.uniform(-0.2, 0.2) * size, 0.08 * size, 0.92 * size))
        speeds = []
        for i, t in enumerate(times[k]):
            v = rng.uniform(cfg.min_speed_fraction, 1.0) * v_max
            room = t if i == 0 else (t - times[k][i - 1]) / 2  # the fall (and the rebound before it) must fit
            speeds.append(float(min(v, g * room)))
        v_end = float(rng.uniform(0.3, 1.0) * v_max)
        hover = float(rng.uniform(*cfg.hover) * ground)
        recs = bank.select(split, cls)
        rec = recs[int(rng.integers(len(recs)))]
        objs.append(_Obj(k, cls, look, sprite, squash, x0, x1, times[k], speeds, g, v_end, hover, rec))
    return objs


def _caption(events: list[HitEvent], objs: list[_Obj]) -> str:
    if not events:
        n = len(objs)
        what = "an object drifts" if n == 1 else f"{NUMBERS[n]} objects drift"
        return f"Silence: {what} above the floor without touching it."
    runs: list[list] = []  # [class, side, count]
    for e in events:
        side = side_of(e.pan)
        if runs and runs[-1][0] == e.sound_class and runs[-1][1] == side:
            runs[-1][2] += 1
        else:
            runs.append([e.sound_class, side, 1])

    def phrase(cls, side, n):
        sing, plur = _words(cls)
        if n == 1:
            art = "an" if sing[0] in "aeiou" else "a"
            return f"{art} {sing} {side}"
        return f"{NUMBERS[n] if n < len(NUMBERS) else n} {plur} {side}"

    if len(runs) <= 4:
        text = ", then ".join(phrase(*r) for r in runs)
    else:  # many alternations: summarise per class and side, in order of first appearance
        counts: dict[tuple[str, str], int] = {}
        for e in events:
            key = (e.sound_class, side_of(e.pan))
            counts[key] = counts.get(key, 0) + 1
        text = " and ".join(phrase(c, s, n) for (c, s), n in counts.items()) + ", interleaved"
    return text[0].upper() + text[1:] + "."


def generate_clip(bank: RecordingBank, *, seed: int, index: int, split: str = "train",
                  config: SynthHitsConfig | None = None, with_hits: bool | None = None,
                  duration: float | None = None) -> SynthHitsClip:
    """Render clip ``index`` of the dataset (``seed``, ``split``): frames, stereo audio, events, caption."""
    cfg = config or SynthHitsConfig()
    cfg.check()
    if split not in SPLITS:
        raise SynthHitsError(f"split={split!r}; use 'train' or 'heldout'")
    if bank.sample_rate != cfg.sample_rate:
        raise SynthHitsError(f"recording bank is at {bank.sample_rate} Hz but config.sample_rate="
                             f"{cfg.sample_rate}; build the bank at that rate")
    classes = bank.classes_with(split)
    if not classes:
        raise SynthHitsError(f"the recording bank has no {split!r} recordings; rebuild it or use the other split")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), SPLITS[split]]))
    dur = float(duration) if duration is not None else float(
        np.round(rng.uniform(cfg.min_duration, cfg.max_duration) * cfg.fps) / cfg.fps)
    if with_hits is None:
        with_hits = bool(rng.uniform() >= cfg.p_no_hits)
    objs = _build_objects(rng, bank, split, dur, cfg, with_hits, classes)
    if cfg.p_swap_sound > 0 and rng.uniform() < cfg.p_swap_sound:  # drawn only when on: other clips reproduce
        own = [(o.cls, o.recording) for o in objs]
        _swap_sounds(rng, bank, split, objs, classes)  # its draws are made either way: the frames stay the same
        if cfg.sound_of_look:
            for o, (cls, recording) in zip(objs, own):
                o.cls, o.recording = cls, recording
        if cfg.look_of_sound:
            _relook(np.random.default_rng(np.random.SeedSequence([int(seed), int(index), SPLITS[split], 1])), objs,
                    cfg.size)
    size, fps, sr = cfg.size, cfg.fps, cfg.sample_rate
    ground = int(round(size * 0.8))
    n_frames = int(round(dur * fps))
    n_samples = int(round(dur * sr))

    # 1. Frames: background once, then each object per frame (squashed within half a frame of a contact).
    bg = _background(size, ground, rng)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    half = 0.5 / fps
    for f in range(n_frames):
        t = f / fps
        canvas = bg.copy()
        for o in objs:
            near = any(abs(t - th) <= half for th in o.hits)
            sp = o.squash if near else o.sprite
            _paste(canvas, sp, o.x(t, dur), ground + 1 - o.height(t))
        frames[f] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    # 2. Events and audio: one recording per object, started at each contact time.
    events: list[HitEvent] = []
    for o in objs:
        for th, v in zip(o.hits, o.speeds):
            speed = v / size
            gain = cfg.level * min(speed / cfg.max_speed, 1.0)
            events.append(HitEvent(time=round(th, 6), sound_class=o.cls, pan=round(_pan_from_x(o.x(th, dur), size), 4),
                                   gain=gain, object_id=o.oid, recording=o.recording.name,
                                   speed=round(speed, 4)))
    events.sort(key=lambda e: e.time)
    audio = np.zeros((2, n_samples), np.float64)
    recs = {o.oid: o.recording for o in objs}
    for e in events:
        x = recs[e.object_id].audio
        start = int(round(e.time * sr))
        n = min(len(x), n_samples - start)
        if n <= 0:
            continue
        gl, gr = pan_gains(e.pan)
        audio[0, start : start + n] += e.gain * gl * x[:n]
        audio[1, start : start + n] += e.gain * gr * x[:n]
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.95:  # keep the mix un-clipped; the stored gains stay the ones actually applied
        audio *= 0.95 / peak
        for e in events:
            e.gain *= 0.95 / peak
    for e in events:
        e.gain = round(float(e.gain), 6)
    objects = [{"object_id": o.oid, "sound_class": o.cls, "shape": o.look.shape, "recording": o.recording.name,
                "x_start": round(o.x0 / size, 4), "x_end": round(o.x1 / size, 4), "num_hits": len(o.hits),
                **({} if o.hits else {"hover": round(o.hover / ground, 4)})}
               for o in objs]
    return SynthHitsClip(clip_id=f"{split}-{seed}-{index:06d}", frames=frames, audio=audio.astype(np.float32),
                         sample_rate=sr, fps=fps, events=events, caption=_caption(events, objs), duration=dur,
                         split=split, objects=objects)


def generate_clips(bank: RecordingBank, n: int, *, seed: int, split: str = "train",
                   config: SynthHitsConfig | None = None, start: int = 0) -> Iterator[SynthHitsClip]:
    if n < 0:
        raise SynthHitsError(f"n={n} must be >= 0")
    for i in range(start, start + n):
        yield generate_clip(bank, seed=seed, index=i, split=split, config=config)


# ----------------------------------------------------------------------------------------------------------
# Writers and readers
# ----------------------------------------------------------------------------------------------------------
def write_mp4(clip: SynthHitsClip, path: str | Path, *, crf: int = 18) -> Path:
    """H.264 (yuv420p) + AAC stereo mp4, written to a temp file and renamed (never half-written)."""
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        with av.open(str(tmp), "w") as c:
            vs = c.add_stream("libx264", rate=clip.fps)
            vs.width, vs.height = clip.frames.shape[2], clip.frames.shape[1]
            vs.pix_fmt = "yuv420p"
            vs.options = {"crf": str(crf), "preset": "ultrafast"}
            aud = c.add_stream("aac", rate=clip.sample_rate, layout="stereo")
            aud.options = {"aac_coder": "fast"}  # the default two-loop coder is ~3x slower here
            aud.bit_rate = 192000
            for fr in clip.frames:
                for p in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
            a = np.ascontiguousarray(clip.audio, dtype=np.float32)
            for i in range(0, a.shape[1], 1024):
                chunk = a[:, i : i + 1024]
                if chunk.shape[1] < 1024:
                    chunk = np.pad(chunk, ((0, 0), (0, 1024 - chunk.shape[1])))
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
                af.sample_rate = clip.sample_rate
                af.pts = i
                for p in aud.encode(af):
                    c.mux(p)
            for p in aud.encode():
                c.mux(p)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_mp4(path: str | Path, *, num_samples: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(frames uint8 [T,H,W,3], audio float32 [2,N], sample_rate); audio trimmed of AAC priming padding."""
    import av

    path = Path(path)
    if not path.is_file():
        raise SynthHitsError(f"no such mp4: {path}")
    frames, chunks, sr = [], [], 0
    with av.open(str(path)) as c:
        for fr in c.decode(video=0):
            frames.append(fr.to_ndarray(format="rgb24"))
    with av.open(str(path)) as c:
        for fr in c.decode(audio=0):
            sr = fr.sample_rate
            chunks.append(fr.to_ndarray().reshape(-1, fr.samples) if fr.format.is_planar
                          else fr.to_ndarray().reshape(fr.samples, -1).T)
    audio = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else np.zeros((2, 0), np.float32)
    if num_samples is not None:
        audio = audio[:, :num_samples]
    return np.stack(frames), audio, sr


def write_shard(clips: Sequence[SynthHitsClip], path: str | Path) -> Path:
    """Compressed npz: ``{i}/frames`` uint8, ``{i}/audio_flac`` (16-bit FLAC bytes), JSON ``meta`` list.

    FLAC inside the npz halves the size of int16 PCM (audio dominates the shard) and stays lossless to 16 bits.
    """
    import soundfile as sf

    path = Path(path)
    arrays = {"meta": np.frombuffer(json.dumps([c.meta() for c in clips]).encode(), dtype=np.uint8)}
    for i, c in enumerate(clips):
        arrays[f"{i}/frames"] = c.frames
        buf = io.BytesIO()
        sf.write(buf, np.clip(c.audio, -1, 1).T, c.sample_rate, format="FLAC", subtype="PCM_16")
        arrays[f"{i}/audio_flac"] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _clip_from_meta(m: dict, frames: np.ndarray, audio: np.ndarray) -> SynthHitsClip:
    return SynthHitsClip(clip_id=m["clip_id"], frames=frames, audio=audio, sample_rate=m["sample_rate"],
                         fps=m["fps"], events=[HitEvent(**e) for e in m["events"]], caption=m["caption"],
                         duration=m["duration"], split=m.get("split", ""), objects=m.get("objects", []))


def read_shard(path: str | Path) -> list[SynthHitsClip]:
    path = Path(path)
    if not path.is_file():
        raise SynthHitsError(f"no such shard: {path}")
    import soundfile as sf

    with np.load(path) as z:
        meta = _shard_meta(z)
        out = []
        for i, m in enumerate(meta):
            audio, _ = sf.read(io.BytesIO(z[f"{i}/audio_flac"].tobytes()), dtype="float32", always_2d=True)
            out.append(_clip_from_meta(m, z[f"{i}/frames"], np.ascontiguousarray(audio.T)))
        return out


def load_clips(directory: str | Path) -> list[SynthHitsClip]:
    """All clips in a dataset folder: npz shards when present, else mp4 + JSON sidecars."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SynthHitsError(f"no such dataset folder: {directory}")
    shards = sorted(directory.glob("shard-*.npz"))
    if shards:
        return [c for s in shards for c in read_shard(s)]
    clips = []
    for js in _sidecars(directory):
        m = json.loads(js.read_text())
        frames, audio, _ = read_mp4(js.with_suffix(".mp4"), num_samples=m["num_samples"])
        clips.append(_clip_from_meta(m, frames, audio))
    if not clips:
        raise SynthHitsError(f"{directory} holds no shard-*.npz and no clip .json/.mp4 pairs")
    return clips


def clip_metas(directory: str | Path) -> list[dict]:
    """The metadata of every clip in a dataset folder (events, caption, ...), without decoding audio or frames."""
    directory = Path(directory)
    shards = sorted(directory.glob("shard-*.npz"))
    if shards:
        out = []
        for s in shards:
            with np.load(s) as z:
                out += _shard_meta(z)
        return out
    return [json.loads(js.read_text()) for js in _sidecars(directory)]


def _shard_meta(z) -> list[dict]:
    return json.loads(z["meta"].tobytes().decode())


def _sidecars(directory: Path) -> list[Path]:
    """The clips' JSON sidecars of an unsharded dataset folder (the dataset's own index.json left out)."""
    return [js for js in sorted(directory.glob("*.json")) if js.name != "index.json"]


def write_dataset(bank: RecordingBank, out: str | Path, n: int, *, seed: int, split: str,
                  formats: Sequence[str] = ("mp4", "npz"), config: SynthHitsConfig | None = None,
                  shard_size: int = 100, overwrite: bool = False) -> dict:
    """Generate ``n`` clips into ``out``; returns the index written to ``out/index.json``."""
    out = Path(out)
    bad = [f for f in formats if f not in ("mp4", "npz")]
    if bad or not formats:
        raise SynthHitsError(f"formats={list(formats)!r}; choose from 'mp4' and 'npz'")
    if (out / "index.json").exists() and not overwrite:
        raise SynthHitsError(f"{out} already holds a dataset (index.json); choose a new --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    index = {"seed": seed, "split": split, "n": n, "config": asdict(config or SynthHitsConfig()),
             "clips": [], "shards": []}
    pending: list[SynthHitsClip] = []
    for clip in generate_clips(bank, n, seed=seed, split=split, config=config):
        index["clips"].append({"clip_id": clip.clip_id, "caption": clip.caption, "duration": clip.duration,
                               "num_events": len(clip.events)})
        if "mp4" in formats:
            write_mp4(clip, out / f"{clip.clip_id}.mp4")
            (out / f"{clip.clip_id}.json").write_text(json.dumps(clip.meta(), indent=1))
        if "npz" in formats:
            pending.append(clip)
            if len(pending) == shard_size:
                index["shards"].append(write_shard(pending, out / f"shard-{len(index['shards']):05d}.npz").name)
                pending = []
    if pending:
        index["shards"].append(write_shard(pending, out / f"shard-{len(index['shards']):05d}.npz").name)
    index["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def main(argv: list[str] | None = None) -> int:
    from .recordings import load_bank

    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.data.synthhits",
                                 description="Render SynthHits clips from real recordings.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=sorted(SPLITS), default="train")
    ap.add_argument("--format", nargs="+", default=["mp4", "npz"], choices=["mp4", "npz"])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--p-no-hits", type=float, default=SynthHitsConfig.p_no_hits,
                    help="fraction of hit-free clips (default %(default)s; 1 = only hit-free clips, e.g. extra "
                         "training data that teaches silence)")
    ap.add_argument("--hover", type=float, nargs=2, metavar=("LOW", "HIGH"), default=SynthHitsConfig.hover,
                    help="height above the floor of objects that never strike (hit-free clips, --p-hovering), as "
                         "fractions of the floor height (default %(default)s; a low range such as 0.1 0.2 makes near "
                         "misses, hard negatives for training)")
    ap.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                    default=(SynthHitsConfig.min_objects, SynthHitsConfig.max_objects),
                    help="objects per clip, drawn uniformly in MIN..MAX (default %(default)s; e.g. 3 3 makes crowded "
                         "scenes, where objects overlap)")
    ap.add_argument("--p-hovering", type=float, default=SynthHitsConfig.p_hovering,
                    help="in clips with hits, chance that an object only hovers while the others strike (default "
                         "%(default)s; at least one object strikes; e.g. 0.4 teaches that a hovering object is "
                         "silent beside a striking one)")
    ap.add_argument("--p-swap-sound", type=float, default=SynthHitsConfig.p_swap_sound,
                    help="chance that a clip's objects sound like another class than they look (default 0)")
    ap.add_argument("--look-of-sound", action="store_true",
                    help="with --p-swap-sound: draw swapped objects with the look of the class they sound like (the "
                         "same seed's swapped clips' twins, for train_foley --reference-teacher)")
    ap.add_argument("--sound-of-look", action="store_true",
                    help="with --p-swap-sound: keep each object's own sound (the same seed's swapped clips' frames "
                         "with the sound of their look, for train_foley --contrast-sound)")
    ap.add_argument("--recordings", type=Path, default=None, help="recordings cache (default $KLING_FOLEY_DATA)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = SynthHitsConfig(size=args.size, p_no_hits=args.p_no_hits, hover=tuple(args.hover),
                                 min_objects=args.objects[0], max_objects=args.objects[1],
                                 p_hovering=args.p_hovering, p_swap_sound=args.p_swap_sound,
                                 look_of_sound=args.look_of_sound, sound_of_look=args.sound_of_look)
        config.check()
        bank = load_bank(args.recordings)
        idx = write_dataset(bank, args.out, args.n, seed=args.seed, split=args.split, formats=args.format,
                            config=config, shard_size=args.shard_size, overwrite=args.overwrite)
    except SynthHitsError as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {args.n} {args.split} clips to {args.out} in {idx['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
