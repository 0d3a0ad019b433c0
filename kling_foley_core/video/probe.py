"""Probe a video file before any model runs: what it holds, and a clear error when it cannot be used.

Every failure is a :class:`VideoInputError` (a ``ValueError``) with one line that names the file, the problem and
the fix, plus a machine-readable ``kind`` so callers (nodes, the headless runner, tests) can branch on it.
The probe opens the container and decodes the *first* video frame only, so it is cheap even for long 4K files,
yet it proves the codec is decodable and reads the rotation that the display matrix asks for.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

# Frames larger than this on either side are almost always a broken header rather than a real video
# (8K UHD is 7680x4320); frames below 2 px cannot be resized to anything meaningful.
MAX_SIDE = 16384
MIN_SIDE = 2

# Leading bytes of the common containers. A file that starts like a container but does not open is reported as
# truncated/corrupt; anything else is "not a media file". (mp4/mov: 'ftyp'/'moov'/'mdat'/'free'/'wide' at byte 4.)
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
_MAGICS = (
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM (EBML)
    b"RIFF",  # AVI / WAV
    b"OggS",
    b"FLV",
    b"\x00\x00\x01\xba",  # MPEG-PS
    b"\x00\x00\x01\xb3",  # MPEG-1/2 elementary video
    b"\x30\x26\xb2\x75",  # ASF / WMV
)


class VideoInputError(ValueError):
    """A video input that cannot be used. ``kind`` is one of: missing, not_media, corrupt, still_image, no_video,
    no_frames, bad_size, unsupported_codec, bad_param, too_short."""

    def __init__(self, path: str | os.PathLike | None, kind: str, message: str):
        self.path = None if path is None else str(path)
        self.kind = kind
        where = f"video '{self.path}': " if path is not None else ""
        super().__init__(where + message)


@dataclass
class VideoInfo:
    """What :func:`probe_video` learned about a file. Times are in seconds; ``fps`` is the stream's average rate
    (a Fraction, e.g. 30000/1001), which is informative only: frames are always picked by their own timestamps."""

    path: str
    container: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
    codec: str  # decoder name, e.g. "h264"
    width: int  # coded width (before rotation)
    height: int  # coded height (before rotation)
    rotation: int  # counter-clockwise degrees the display matrix asks for (0, 90, 180, 270)
    fps: Fraction | None
    duration: float | None  # seconds, from stream or container metadata (None if the file does not say)
    frame_count: int | None  # from the container index if known, else None
    start_time: float  # presentation time of the stream's start (the clip's t=0), seconds
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    pix_fmt: str | None = None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown to a viewer, i.e. after applying the rotation."""
        if self.rotation % 180 == 90:
            return self.height, self.width
        return self.width, self.height


def _sniff_container(path: Path) -> bool:
    """True if the file starts like a known media container (used only to word the error message)."""
    try:
        with open(path, "rb") as f:
            head = f.read(189)
    except OSError:
        return False
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return True
    if len(head) == 189 and head[0] == 0x47 and head[188] == 0x47:  # MPEG-TS: a sync byte every 188 bytes
        return True
    return any(head.startswith(m) for m in _MAGICS)


def normalize_rotation(degrees: float | int | None) -> int:
    """Map a display-matrix angle (any sign, e.g. -90 or 270) to 0/90/180/270 counter-clockwise."""
    if degrees is None:
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


def check_path(path: str | os.PathLike) -> Path:
    """``path`` when it is a non-empty regular file; otherwise a :class:`VideoInputError` that says what it is."""
    p = Path(path)
    problem = describe_unusable_path(p)
    if problem is not None:
        raise VideoInputError(p, *problem)
    if p.stat().st_size == 0:
        raise VideoInputError(p, "corrupt", "file is empty (0 bytes); re-export or re-download it.")
    return p


def describe_unusable_path(p: Path) -> tuple[str, str] | None:
    """``(kind, message)`` when ``p`` is not a readable regular file: missing, a directory, a broken link, a
    symbolic link loop, a device or pipe, or unreadable; None when it is a regular file."""
    import stat

    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            return "missing", f"is a symbolic link to '{os.readlink(p)}', which does not exist; fix the link."
        return "missing", ("file not found; check the path (relative paths are resolved from "
                           f"'{Path.cwd()}').")
    except ValueError:  # a NUL character: no file system takes it
        return "missing", "is not a usable path (it holds a NUL character); pass the path of a video file."
    except OSError as e:  # ELOOP (a symbolic link loop), ENAMETOOLONG, EACCES on a parent folder, ...
        if e.errno == errno.ELOOP:
            return "missing", "is a symbolic link loop (following it never reaches a file); fix the link."
        return "missing", f"cannot be read ({e.strerror or e}); check the path and its permissions."
    if stat.S_ISDIR(st.st_mode):
        return "missing", "is a directory, not a video file; pass the path of a video file."
    if not stat.S_ISREG(st.st_mode):
        return "missing", "is not a regular file (a device, pipe or socket); pass the path of a video file."
    if not os.access(p, os.R_OK):
        return "missing", "cannot be read (permission denied); check its permissions."
    return None


def open_container(path: str | os.PathLike) -> "av.container.InputContainer":
    """Open a file for reading, turning FFmpeg's open errors into one-line :class:`VideoInputError`s."""
    p = check_path(path)
    try:
        return av.open(str(p), mode="r")
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        if _sniff_container(p):
            raise VideoInputError(p, "corrupt", f"looks like a media container but cannot be read ({e.strerror}); "
                                                "the file is probably truncated or corrupt: re-export or "
                                                "re-download it.") from None
        raise VideoInputError(p, "not_media", "is not a media file FFmpeg can read (wrong extension or not a "
                                              "video at all); pass an mp4/mov/mkv/webm/avi video.") from None
    except av.error.FFmpegError as e:
        raise VideoInputError(p, "corrupt", f"cannot be opened: {e.strerror or e}; re-export the file.") from None


def _has_decoder(stream) -> bool:
    ctx = stream.codec_context
    if ctx is None or not getattr(ctx, "name", None) or ctx.name == "none":
        return False
    try:
        av.Codec(ctx.name, "r")
    except Exception:  # av.codec.codec.UnknownCodecError and friends
        return False
    return True


def _codec_description(stream) -> str:
    ctx = stream.codec_context
    name = getattr(ctx, "name", None) if ctx is not None else None
    tag = getattr(ctx, "codec_tag", None) if ctx is not None else None
    return name or tag or "unknown"


def select_video_stream(container, path) -> "av.video.stream.VideoStream":
    """The first video stream that is not a cover picture, with a clear error if there is none."""
    streams = [s for s in container.streams.video if not _is_attached_pic(s)]
    if not streams:
        if container.streams.audio:
            raise VideoInputError(path, "no_video", "has audio but no video stream (audio-only file); pass a video "
                                                    "file, or use the text-to-audio path without a video.")
        raise VideoInputError(path, "no_video", "contains no video stream; pass a video file.")
    return streams[0]


def _is_still_image(container) -> bool:
    """FFmpeg opens single pictures (png, jpeg, bmp, webp, ...) with its image demuxers: ``image2``/``*_pipe``."""
    name = container.format.name or ""
    return name in ("image2", "image2pipe") or name.endswith("_pipe")


def _is_attached_pic(stream) -> bool:
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except Exception:
        return False


def check_frame_size(path, width: int, height: int) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise VideoInputError(path, "bad_size", f"has an unusable frame size {width}x{height} (each side must be "
                                                f"{MIN_SIDE}..{MAX_SIDE} px); the header is broken or this is not a "
                                                "normal video: re-encode it.")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Inspect ``path`` and check that its video can be decoded; raise :class:`VideoInputError` otherwise.

    Decodes only the first frame (to prove the codec works and read the rotation), so it costs milliseconds.
    """
    with open_container(path) as container:
        stream = select_video_stream(container, path)
        if _is_still_image(container):
            raise VideoInputError(path, "still_image", f"is a still image ({_codec_description(stream).upper()}), "
                                                       "not a video; pass a video file (to add sound to a still, "
                                                       "make a clip of it first, e.g. ffmpeg -loop 1 -i IMAGE -t 5 "
                                                       "out.mp4).")
        if not _has_decoder(stream):
            raise VideoInputError(path, "unsupported_codec", f"uses the video codec '{_codec_description(stream)}' "
                                                             "which this FFmpeg build cannot decode; re-encode it "
                                                             "to H.264 (e.g. ffmpeg -i in -c:v libx264 out.mp4).")
        ctx = stream.codec_context
        check_frame_size(path, ctx.width, ctx.height)
        first = first_frame(container, stream, path)
        check_frame_size(path, first.width, first.height)
        tb = stream.time_base
        duration = None
        if stream.duration is not None and tb is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
        fps = stream.average_rate or stream.guessed_rate
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(path),
            container=container.format.name,
            codec=ctx.name,
            width=first.width,
            height=first.height,
            rotation=normalize_rotation(first.rotation),
            fps=Fraction(fps) if fps else None,
            duration=duration,
            frame_count=stream.frames or None,
            start_time=start,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None and audio.codec_context else None,
            audio_sample_rate=audio.rate if audio is not None else None,
            pix_fmt=ctx.pix_fmt,
        )


def first_frame(container, stream, path) -> "av.VideoFrame":
    """Decode the first video frame; corrupt leading packets are skipped, zero frames is an error."""
    errors = 0
    try:
        for packet in container.demux(stream):
            try:
                for frame in packet.decode():
                    return frame
            except av.error.InvalidDataError:
                errors += 1
                if errors > 32:
                    break
    except av.error.FFmpegError as e:
        raise VideoInputError(path, "corrupt", f"cannot be read ({e.strerror or e}); the file is probably "
                                               "truncated or corrupt: re-export or re-download it.") from None
    if errors:
        raise VideoInputError(path, "corrupt", f"no decodable video frame ({errors} corrupt packets); re-encode "
                                               "the file.")
    raise VideoInputError(path, "no_frames", "has a video stream with zero frames; pass a video with picture "
                                             "content.")


def clip_span(path: str | os.PathLike, start: float = 0.0, length: float = 0.0) -> tuple[VideoInfo, float]:
    """Probe ``path`` and the span ``[start, start + length)`` (``length`` 0 = to the end): ``(info, seconds)``.

    Checked up front, before any model runs: ``start`` and ``length`` are finite and not negative, ``start`` lies
    inside the video, and the span holds at least one sync window (:data:`kling_foley_core.limits.MIN_SECONDS`).
    The longest span a model generates is the model's business (``limits.max_seconds``).
    """
    from ..limits import MIN_SECONDS

    for name, value in (("start", start), ("length", length)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise VideoInputError(None, "bad_param", f"{name}={value!r} must be a finite number of seconds, 0 or "
                                                     "more")
    info = probe_video(path)
    total = info.duration
    if total is None or not total > 0:
        raise VideoInputError(path, "corrupt", "has no playing time (a single picture, or no duration in its "
                                               "header); pass a video, or re-encode it (e.g. ffmpeg -i in -c:v "
                                               "libx264 out.mp4).")
    if start >= total:
        raise VideoInputError(path, "bad_param", f"start={start:g} s is past the end of the video ({total:.2f} s); "
                                                 "use a smaller start.")
    seconds = min(length, total - start) if length > 0 else total - start
    if seconds < MIN_SECONDS - 1e-9:
        raise VideoInputError(path, "too_short", f"the span to add sound to is {seconds:.2f} s, shorter than one "
                                                 f"sync window ({MIN_SECONDS:g} s = 16 frames at 25 fps); use a "
                                                 f"clip of at least {MIN_SECONDS:g} s.")
    return info, seconds
