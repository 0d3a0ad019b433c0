"""Frame sampling by timestamp, shared by the file loader and the ComfyUI IMAGE-batch path.

The rule (Kling-Foley / MMAudio feed the model frames at fixed rates, 8 fps semantic and 25 fps sync, whatever
the input rate is):

    for each target time  T_k = start + k / fps,  k = 0 .. n-1,   n = floor(duration * fps)  (at least 1)
    use the LAST source frame whose presentation time is <= T_k  (the frame on screen at T_k);
    if T_k lies before the first frame, use the first frame.

Times are exact rationals (pts x time_base as ``Fraction``), measured from the stream's start, so 29.97 fps
(30000/1001), VFR and 12 fps inputs resolve without float drift. A frame is held on screen until the next one
starts, so a target that falls between two frames gets the earlier one; a 12 fps input feeding 25 fps repeats
frames, a 60 fps input skips them. Note MMAudio's reader takes the first frame whose time is >= the target
instead, which is up to one source frame later; for 25 fps input at 25 fps the two rules agree exactly.

Everything here streams: :class:`TimestampPicker` only needs the current frame's time and the next frame's time,
and :class:`FrameCollector` converts a picked frame to the consumer's small size right away, so no full-size
frame is ever kept beyond the one being looked at.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .probe import VideoInputError

log = logging.getLogger(__name__)

class VideoParamError(VideoInputError):
    """A bad argument to the video loader/sampler (kind "bad_param"); the message names the parameter."""

    def __init__(self, message: str):
        super().__init__(None, "bad_param", message)


ResizeMode = Literal["crop", "stretch"]
OutputMode = Literal["unit", "symmetric", "uint8"]


def to_fraction(x: float | int | Fraction, what: str = "value") -> Fraction:
    """Exact rational for a user number: decimals stay decimal (0.1 -> 1/10, 29.97 -> 2997/100)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, int):
        return Fraction(x)
    xf = float(x)
    if not math.isfinite(xf):
        raise VideoParamError(f"{what} must be a finite number, got {x!r}")
    return Fraction(repr(xf))


@dataclass(frozen=True)
class FrameSpec:
    """What one consumer (an encoder) wants from the video.

    fps: target rate. size: output side (int, square) or (height, width).
    resize: "crop" = shortest side to size then centre crop (open_clip/Synchformer style);
            "stretch" = resize straight to size ignoring aspect (MMAudio's CLIP path does this at 384x384).
    output: "unit" float in [0, 1] (the encoder normalises itself), "symmetric" float in [-1, 1] (mean = std = 0.5,
            what Synchformer takes), or "uint8" (0..255, smallest in memory).
    dtype: floating dtype for "unit"/"symmetric" (float16/bfloat16 halve the memory of long clips).
    min_frames: pad by repeating the last frame up to this count (Synchformer needs one 16-frame window).
    """

    fps: float | int | Fraction
    size: int | tuple[int, int] = 224
    resize: ResizeMode = "crop"
    output: OutputMode = "unit"
    dtype: torch.dtype = torch.float32
    min_frames: int = 1

    @property
    def rate(self) -> Fraction:
        return to_fraction(self.fps, "fps")

    @property
    def hw(self) -> tuple[int, int]:
        if isinstance(self.size, int):
            return self.size, self.size
        h, w = self.size
        return int(h), int(w)

    def validate(self, name: str) -> None:
        r = self.rate
        if not (0 < r <= 1000):
            raise VideoParamError(f"FrameSpec '{name}': fps must be in (0, 1000], got {self.fps!r}")
        h, w = self.hw
        if not (1 <= h <= 4096 and 1 <= w <= 4096):
            raise VideoParamError(f"FrameSpec '{name}': size must be 1..4096 px, got {self.size!r}")
        if self.resize not in ("crop", "stretch"):
            raise VideoParamError(f"FrameSpec '{name}': resize must be 'crop' or 'stretch', got {self.resize!r}")
        if self.output not in ("unit", "symmetric", "uint8"):
            raise VideoParamError(f"FrameSpec '{name}': output must be 'unit', 'symmetric' or 'uint8', "
                                  f"got {self.output!r}")
        if self.output != "uint8" and not self.dtype.is_floating_point:
            raise VideoParamError(f"FrameSpec '{name}': dtype must be floating for output {self.output!r}, "
                                  f"got {self.dtype}")
        if self.min_frames < 1:
            raise VideoParamError(f"FrameSpec '{name}': min_frames must be >= 1, got {self.min_frames}")


# The two consumers of the Kling-Foley / MMAudio pipeline.
SEMANTIC = FrameSpec(fps=8, size=224, resize="crop", output="unit")
SYNC = FrameSpec(fps=25, size=224, resize="crop", output="symmetric", min_frames=16)


def resized_geometry(src_w: int, src_h: int, spec: FrameSpec) -> tuple[int, int, int, int]:
    """(resize_w, resize_h, crop_left, crop_top) for a display-oriented source of size src_w x src_h.

    "crop" follows torchvision's Resize(int)+CenterCrop arithmetic: the short side becomes the target, the long
    side is truncated (int), the crop offset is round((resized - target) / 2).
    """
    th, tw = spec.hw
    if spec.resize == "stretch":
        return tw, th, 0, 0
    if th == tw:
        if src_w <= src_h:
            rw, rh = th, max(th, int(th * src_h / src_w))
        else:
            rw, rh = max(th, int(th * src_w / src_h)), th
    else:  # non-square target: scale so both sides cover it, then crop
        scale = max(th / src_h, tw / src_w)
        rw, rh = max(tw, int(src_w * scale + 0.5)), max(th, int(src_h * scale + 0.5))
    return rw, rh, int(round((rw - tw) / 2.0)), int(round((rh - th) / 2.0))


class TimestampPicker:
    """Streams target times T_k = start + k/fps through source frames in presentation order.

    Call :meth:`advance` with the time at which the *current* frame stops being on screen (the next frame's
    time, or the clip end); it returns how many new targets the current frame covers. Targets earlier than the
    first frame are covered by the first frame.
    """

    def __init__(self, fps: Fraction, start: Fraction, limit: int | None):
        self.fps = Fraction(fps)
        self.start = Fraction(start)
        self.limit = limit  # n when known in advance (a requested duration); None = until the stream ends
        self.k = 0
        # advance() runs once per decoded frame and consumer: plain integers there, no Fraction objects
        self._s = (self.start.numerator, self.start.denominator)
        self._f = (self.fps.numerator, self.fps.denominator)

    def target(self, k: int) -> Fraction:
        return self.start + Fraction(k) / self.fps

    @property
    def done(self) -> bool:
        return self.limit is not None and self.k >= self.limit

    def advance(self, until: Fraction) -> int:
        """Number of targets T_k (from the current k) with T_k < until; consumes them."""
        if self.done:
            return 0
        # first k with target >= until:  k >= (until - start) * fps  ->  ceil, exactly, in integers:
        # (u_n/u_d - s_n/s_d) * f_n/f_d = (u_n*s_d - s_n*u_d) * f_n / (u_d*s_d*f_d)
        (s_n, s_d), (f_n, f_d) = self._s, self._f
        u_n, u_d = until.numerator, until.denominator
        k_end = max(0, -((s_n * u_d - u_n * s_d) * f_n // (u_d * s_d * f_d)))  # ceil(a / b) == -(-a // b), b > 0
        if self.limit is not None:
            k_end = min(k_end, self.limit)
        n = max(0, k_end - self.k)
        self.k += n
        return n


@dataclass
class FrameSet:
    """Frames for one consumer. ``times[k]`` is the target time (seconds from the clip start),
    ``source_indices[k]`` the decoded-frame index it used (-1 when unknown, e.g. after a seek), ``source_times[k]``
    that frame's own time (seconds from the stream start); ``padded`` frames at the end repeat the last one."""

    frames: torch.Tensor  # (N, C, H, W)
    fps: Fraction
    times: torch.Tensor  # (N,) float64
    source_indices: torch.Tensor  # (N,) int64
    source_times: torch.Tensor  # (N,) float64
    padded: int = 0

    def __len__(self) -> int:
        return self.frames.shape[0]


@dataclass
class SampledVideo:
    """Result of :func:`load_video` / :func:`sample_image_batch`."""

    streams: dict[str, FrameSet]
    start: float  # trim start, seconds from the stream start
    duration: float  # seconds actually covered (after trim and clamping to the source)
    source_duration: float  # length of the whole source as decoded or declared, seconds
    source_fps: Fraction | None  # average input rate (informative; sampling uses real timestamps)
    info: object | None = None  # VideoInfo for files, None for IMAGE batches
    decoded_frames: int = 0
    skipped: int = 0  # corrupt packets/frames skipped with a warning
    warnings: list[str] = field(default_factory=list)

    @property
    def semantic(self) -> FrameSet | None:
        return self.streams.get("semantic")

    @property
    def sync(self) -> FrameSet | None:
        return self.streams.get("sync")


class FrameCollector:
    """Keeps the picks of one consumer and builds its output; each source frame is converted at most once.

    Two ways to fill it (not mixed):

    * :meth:`add` keeps one converted (C, H, W) tensor per pick (repeats share it) and scales them all into the
      output in :meth:`finish`. The IMAGE-batch path uses this (its items are already float).
    * :meth:`reserve` + :meth:`put` (the file loader): the main thread reserves output slots for a picked frame,
      then whichever thread converts that frame writes the uint8 picture, already scaled to the output range,
      straight into a preallocated output. The scaling then runs on the loader's worker thread while the next
      frames decode, instead of as a serial pass over every frame at the end.
    """

    def __init__(self, name: str, spec: FrameSpec, picker: TimestampPicker, *, capacity: int | None = None):
        self.name, self.spec, self.picker = name, spec, picker
        self.items: list = []  # add(): (C, H, W) uint8/float tensors (or futures of them), one per pick
        self.src_idx: list[int] = []
        self.src_time: list[Fraction] = []
        self._last_key: int | None = None
        # reserve()/put(): output rows in the spec's dtype; `capacity` is the expected number of picks (exact when
        # the duration is known), so the buffer normally never grows. Pages never written are never touched.
        self._capacity = capacity
        self._buf: np.ndarray | None = None  # (capacity, C, H, W)
        self._reserved = 0
        self._lock = threading.Lock()  # put() from a worker vs. a buffer growth from the main thread

    # -- per-pick items (IMAGE batches) -------------------------------------------------------------------------
    def add(self, count: int, key: int, src_index: int, src_time: Fraction,
            convert: Callable[[FrameSpec], torch.Tensor]) -> None:
        if count <= 0:
            return
        if self._last_key != key:
            self.items.append(convert(self.spec))
            self._last_key = key
        else:
            self.items.append(self.items[-1])
        self.items.extend([self.items[-1]] * (count - 1))
        self.src_idx.extend([src_index] * count)
        self.src_time.extend([src_time] * count)

    # -- streaming into the output (file loader) ---------------------------------------------------------------
    @staticmethod
    def streams_uint8(spec: FrameSpec) -> bool:
        """True if uint8 pictures can be written straight into this spec's output (numpy dtypes only)."""
        return spec.output == "uint8" or spec.dtype in _NUMPY_DTYPES

    def reserve(self, count: int, src_index: int, src_time: Fraction) -> int:
        """Book ``count`` consecutive picks of one source frame; returns the first slot for :meth:`put`."""
        start = self._reserved
        self._reserved += count
        self.src_idx.extend([src_index] * count)
        self.src_time.extend([src_time] * count)
        if self._buf is None or self._reserved > len(self._buf):
            with self._lock:
                self._grow(self._reserved)
        return start

    def put(self, start: int, count: int, picture: torch.Tensor) -> None:
        """Write a converted (C, H, W) uint8 picture into slots [start, start + count), scaled to the output."""
        src = picture.numpy()
        with self._lock:
            rows = self._buf[start:start + count]  # (count, C, H, W)
            _scale_uint8_into(rows[0], src, self.spec.output)
            if count > 1:  # the source is slower than the target rate: the same picture several times
                rows[1:] = rows[0]

    def _grow(self, need: int) -> None:
        spec = self.spec
        if self._buf is None:
            cap = max(need, self._capacity or 0, spec.min_frames)
        else:
            cap = max(need, len(self._buf) * 3 // 2 + 16)
        h, w = spec.hw
        dtype = np.dtype(np.uint8) if spec.output == "uint8" else _NUMPY_DTYPES[spec.dtype]
        # numpy, not torch, allocates: numpy asks for transparent huge pages on big arrays, which makes the first
        # touch of a fresh ~200 MB float32 output about 3x cheaper in page faults
        buf = np.empty((cap, 3, h, w), dtype)  # (cap, C, H, W)
        if self._buf is not None:
            buf[:len(self._buf)] = self._buf
        self._buf = buf

    def _finish_streamed(self, n: int) -> tuple[torch.Tensor, int]:
        kept = min(n, self._reserved)
        if kept == 0:
            raise RuntimeError(f"internal: no frames picked for '{self.name}'")
        padded = max(0, self.spec.min_frames - kept)
        total = kept + padded
        with self._lock:
            if total > len(self._buf):
                self._grow(total)
            buf = self._buf
        if padded:
            buf[kept:total] = buf[kept - 1]
        if len(buf) - total > max(2, total // 20):
            out = buf[:total].copy()  # the estimate was far off: do not keep a much larger allocation alive
        else:
            out = buf[:total]  # a view; at most a few unused (and never touched) rows stay allocated
        self._buf = None
        return torch.from_numpy(out), padded

    # -- result ------------------------------------------------------------------------------------------------
    def finish(self, n: int, origin_start: Fraction) -> FrameSet:
        """Truncate to n picks, pad to min_frames, return the consumer's output."""
        spec = self.spec
        del self.src_idx[n:], self.src_time[n:]
        if self._reserved:
            out, padded = self._finish_streamed(n)
        else:
            out, padded = self._finish_items(n)
        if padded:
            log.info("video: %s stream has %d frames, fewer than %d; padded by repeating the last frame %d times",
                     self.name, len(self.src_idx), spec.min_frames, padded)
            self.src_idx.extend([self.src_idx[-1]] * padded)
            self.src_time.extend([self.src_time[-1]] * padded)
        total = out.shape[0]
        rate = spec.rate
        times = torch.tensor([float(Fraction(k) / rate) for k in range(total)], dtype=torch.float64)
        return FrameSet(
            frames=out,
            fps=rate,
            times=times,
            source_indices=torch.tensor(self.src_idx, dtype=torch.int64),
            source_times=torch.tensor([float(t) for t in self.src_time], dtype=torch.float64),
            padded=padded,
        )

    def _finish_items(self, n: int) -> tuple[torch.Tensor, int]:
        spec = self.spec
        del self.items[n:]
        # items may be futures from a resize thread
        items = [item.result() if isinstance(item, Future) else item for item in self.items]
        self.items = []
        if not items:
            raise RuntimeError(f"internal: no frames picked for '{self.name}'")
        padded = max(0, spec.min_frames - len(items))
        items.extend([items[-1]] * padded)
        total = len(items)
        c, (h, w) = items[0].shape[0], spec.hw
        out_dtype = torch.uint8 if spec.output == "uint8" else spec.dtype
        from_uint8 = items[0].dtype == torch.uint8
        if from_uint8 and self.streams_uint8(spec):
            np_dtype = np.dtype(np.uint8) if spec.output == "uint8" else _NUMPY_DTYPES[spec.dtype]
            out_np = np.empty((total, c, h, w), dtype=np_dtype)  # numpy allocates: see _grow
            for i, item in enumerate(items):
                if i and item is items[i - 1]:  # a repeated pick
                    out_np[i] = out_np[i - 1]
                else:
                    _scale_uint8_into(out_np[i], item.numpy(), spec.output)
            return torch.from_numpy(out_np), padded
        out = torch.empty(total, c, h, w, dtype=out_dtype)  # (N, C, H, W)
        for i, item in enumerate(items):  # frame by frame into the output: no second full-size copy
            if out_dtype == torch.uint8 and item.dtype != torch.uint8:
                item = item.clamp(0.0, 1.0).mul(255.0).round_()
            out[i].copy_(item)  # uint8 -> float happens in the copy
        _finalize_(out, from_uint8, spec.output)
        return out, padded


_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                 torch.float16: np.dtype(np.float16)}


def _scale_uint8_into(dst: np.ndarray, src: np.ndarray, output: OutputMode) -> None:
    """dst (C, H, W) float/uint8 <- src (C, H, W) uint8 in the requested value range, in one fused numpy pass
    (torch's per-frame copy_ is ~20x slower on a busy 2-core CPU because of intra-op thread hand-offs)."""
    if output == "uint8":
        np.copyto(dst, src)
        return
    # float32 arithmetic (a Python float would make numpy compute in float64); float16 outputs take the cast
    ftype = np.float64 if dst.dtype == np.float64 else np.float32
    scale, shift = (ftype(1.0 / 255.0), None) if output == "unit" else (ftype(1.0 / 127.5), ftype(1.0))
    if dst.dtype == np.float16:
        tmp = np.multiply(src, scale, dtype=np.float32)
        if shift is not None:
            tmp -= shift
        np.copyto(dst, tmp, casting="unsafe")
        return
    np.multiply(src, scale, out=dst, casting="unsafe")
    if shift is not None:
        np.subtract(dst, shift, out=dst, casting="unsafe")


def _finalize_(out: torch.Tensor, from_uint8: bool, output: OutputMode) -> None:
    """In place: raw copies (0..255 from uint8 items, 0..1 from float items) -> the requested value range."""
    if output == "uint8":
        return  # uint8 items were copied verbatim, float items rounded on the way in
    if not from_uint8:
        out.clamp_(0.0, 1.0)
        if output == "symmetric":
            out.sub_(0.5).div_(0.5)  # mean = std = 0.5 -> [-1, 1]
        return
    if output == "unit":
        out.div_(255.0)
    else:  # symmetric: (x / 255 - 0.5) / 0.5 == x / 127.5 - 1
        out.div_(127.5).sub_(1.0)


def resize_image_tensor(img: torch.Tensor, spec: FrameSpec) -> torch.Tensor:
    """(C, H, W) float 0..1 -> (C, th, tw) float, bicubic with antialias (close to PIL), then centre crop."""
    c, h, w = img.shape
    rw, rh, left, top = resized_geometry(w, h, spec)
    th, tw = spec.hw
    x = img.unsqueeze(0).to(torch.float32)  # (1, C, H, W)
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    return x[0, :, top:top + th, left:left + tw].clamp(0.0, 1.0)  # (C, th, tw)


def check_specs(specs: dict[str, FrameSpec]) -> None:
    if not specs:
        raise VideoParamError("no frame stream requested: pass at least one of semantic=/sync= (a FrameSpec)")
    for name, spec in specs.items():
        spec.validate(name)


def frame_counts(duration: Fraction, specs: dict[str, FrameSpec]) -> dict[str, int]:
    """n = floor(duration * fps), at least 1 (a clip shorter than one target period still gets one frame)."""
    return {name: max(1, math.floor(duration * spec.rate)) for name, spec in specs.items()}


def sample_image_batch(
    images: torch.Tensor,
    fps: float | Fraction,
    *,
    semantic: FrameSpec | None = SEMANTIC,
    sync: FrameSpec | None = SYNC,
    start: float = 0.0,
    duration: float | None = None,
    timestamps: list[float] | torch.Tensor | None = None,
) -> SampledVideo:
    """The same timestamp rule on a ComfyUI IMAGE batch ``(B, H, W, C)`` float 0..1 (from LoadVideo or
    VideoHelperSuite) played at ``fps``; frame i is on screen from i/fps (or from ``timestamps[i]`` when the batch
    came from a variable-rate source) until the next frame. Only picked frames are resized (torch bicubic with
    antialias), so a long batch costs no extra memory."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise VideoParamError(f"images: expected a ComfyUI IMAGE tensor (B, H, W, C) with C in 1/3/4, got {shape}")
    b = images.shape[0]
    if b == 0:
        raise VideoParamError("images: the IMAGE batch is empty (0 frames); connect a video with at least one frame")
    if timestamps is None:
        rate = to_fraction(fps, "fps")
        if not (0 < rate <= 1000):
            raise VideoParamError(f"fps: must be in (0, 1000], got {fps!r}; pass the frame rate of the IMAGE batch")
        rate = rate.limit_denominator(1_000_000) if rate.denominator > 1_000_000 else rate
        times = [Fraction(i) / rate for i in range(b)]
        end = Fraction(b) / rate
    else:
        ts = [float(t) for t in (timestamps.tolist() if isinstance(timestamps, torch.Tensor) else timestamps)]
        if len(ts) != b or any(t1 <= t0 for t0, t1 in zip(ts, ts[1:])):
            raise VideoParamError(f"timestamps: need {b} strictly increasing times (one per image), got {len(ts)}")
        times = [to_fraction(t) for t in ts]
        rate = to_fraction(fps, "fps") if fps else None
        last = (times[-1] - times[-2]) if b > 1 else (Fraction(1) / rate if rate else Fraction(1, 25))
        end = times[-1] + last
        times = [t - times[0] for t in times]
        end = end - to_fraction(ts[0])
    specs = {k: v for k, v in (("semantic", semantic), ("sync", sync)) if v is not None}
    check_specs(specs)
    start_f = to_fraction(start, "start")
    if start_f < 0 or start_f >= end:
        raise VideoParamError(f"start: {start}s is outside the batch (0..{float(end):.3f}s); pass a smaller start")
    available = end - start_f
    warnings: list[str] = []
    if duration is not None:
        dur = to_fraction(duration, "duration")
        if dur <= 0:
            raise VideoParamError(f"duration: must be > 0 seconds, got {duration}")
        if dur > available:
            msg = f"requested {float(dur):.3f}s but the IMAGE batch has {float(available):.3f}s after start; using that"
            log.warning("video: %s", msg)
            warnings.append(msg)
            dur = available
    else:
        dur = available
    counts = frame_counts(dur, specs)
    collectors = {name: FrameCollector(name, spec, TimestampPicker(spec.rate, start_f, counts[name]))
                  for name, spec in specs.items()}
    channels = images.shape[-1]

    def convert_index(i: int) -> Callable[[FrameSpec], torch.Tensor]:
        def convert(spec: FrameSpec) -> torch.Tensor:
            img = images[i].to(torch.float32)  # (H, W, C)
            if channels == 1:
                img = img.expand(-1, -1, 3)
            elif channels == 4:
                img = img[..., :3]
            return resize_image_tensor(img.permute(2, 0, 1), spec)  # (3, th, tw)
        return convert

    for i in range(b):
        until = times[i + 1] if i + 1 < b else end
        for col in collectors.values():
            col.add(col.picker.advance(until), i, i, times[i], convert_index(i))
        if all(c.picker.done for c in collectors.values()):
            break
    streams = {name: col.finish(counts[name], start_f) for name, col in collectors.items()}
    return SampledVideo(streams=streams, start=float(start_f), duration=float(dur), source_duration=float(end),
                        source_fps=rate, info=None, decoded_frames=b, skipped=0, warnings=warnings)
