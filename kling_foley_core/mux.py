"""Put generated audio back into the user's video, and save audio files: atomic, never clobbering.

``mux_audio`` writes the picture of the span the audio was generated for and encodes the generated waveform as a
new audio track: AAC for MP4/MOV, FLAC (or PCM/Opus/AAC) for MKV, Opus for WebM. The whole picture is copied
packet for packet (``add_stream_from_template``: no re-encode, no quality loss, bit-identical bytes, every packet
kept); a trimmed span is copied when that can be frame-exact and re-encoded otherwise (see
:mod:`.mux_picture`). The audio is trimmed or zero-padded to the picture's duration and starts with its first
frame, so it stays in sync in every player. Optionally the original soundtrack is kept as a second track.

:func:`choose_container` decides the container from the input's picture codec before anything runs ("auto":
.mp4, else .mkv, else .mov). :func:`provenance_tags` / :func:`read_provenance` write and read the generation
settings as a container tag.

Every file is written to a hidden temporary file in the destination folder and renamed into place only when it is
complete, so a failure never leaves a half-written file, and an existing file is never replaced unless
``overwrite=True`` (:class:`OutputExistsError` otherwise). :func:`runner.paths.next_output_path` picks ``name_00001.mp4``-style
names the way ComfyUI's SaveAudio/SaveVideo nodes do.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .mux_picture import copied_packets, encoded_packets, plan_cut, scan_packets
from .video.probe import open_container, probe_video, select_video_stream

log = logging.getLogger(__name__)

# container (by extension) -> (FFmpeg muxer, allowed audio codecs, default audio codec)
CONTAINERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    ".mp4": ("mp4", ("aac", "alac", "opus", "flac"), "aac"),
    ".m4v": ("mp4", ("aac", "alac"), "aac"),
    ".mov": ("mov", ("aac", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"), "aac"),
    ".mkv": ("matroska", ("flac", "pcm_s16le", "pcm_s24le", "pcm_f32le", "opus", "aac"), "flac"),
    ".webm": ("webm", ("opus",), "opus"),
}
# audio codec name as the user says it -> FFmpeg encoder to use
_ENCODERS = {"opus": "libopus"}
_DEFAULT_BITRATE = {"aac": 256_000, "opus": 192_000}
_LAYOUTS = {1: "mono", 2: "stereo"}
# containers "auto" tries, in order, for the input's picture codec
AUTO_ORDER = (".mp4", ".mkv", ".mov")
# the provenance JSON's key inside the "comment" tag
PROVENANCE_KEY = "kling_foley"
# how far ahead of the video the generated audio is encoded while copying (keeps the muxer's buffer small)
_AUDIO_LEAD = 0.5


class MuxError(ValueError):
    """Bad arguments or an input/output combination that cannot be written."""


class OutputExistsError(MuxError):
    """The output file exists and ``overwrite`` is False."""


@dataclass
class MuxResult:
    path: Path
    video_duration: float  # seconds of picture written (from the first to the end of the last frame)
    audio_samples: int  # samples written per channel, at ``sample_rate``
    sample_rate: int  # rate of the encoded track (Opus forces 48 kHz)
    audio_codec: str
    kept_original_audio: bool
    picture: str = "copied"  # or "re-encoded"


# ----------------------------------------------------------------------------------------------- file naming


def _check_destination(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise MuxError(f"output '{path}' is a directory; pass a file name such as '{path / 'out.mp4'}'")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output '{path}' already exists; pass overwrite=True to replace it, or choose "
                                "another name (runner.paths.next_output_path picks a free one)")


@contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """The library's one atomic writer (``runner.paths.atomic_write``: temporary file in the destination folder,
    published only on success, hard-linked when not overwriting so a file that appeared meanwhile is never
    clobbered), with this module's error type."""
    from .runner.errors import OutputPathError
    from .runner.paths import atomic_write

    path = Path(path)
    _check_destination(path, overwrite)
    try:
        with atomic_write(path, overwrite=overwrite) as tmp:
            yield tmp
    except OutputPathError:
        raise OutputExistsError(f"output '{path}' appeared while writing; pass overwrite=True to replace it, or "
                                "choose another name") from None


# ----------------------------------------------------------------------------------------------- audio helpers


def _as_channels_first(waveform, what: str = "audio") -> np.ndarray:
    """Accept (C, T), (1, C, T) (a ComfyUI AUDIO waveform with batch 1) or (T,) -> float32 (C, T)."""
    if hasattr(waveform, "detach"):  # a torch tensor (torch is not imported here: the CLI checks stay light)
        x = waveform.detach().cpu().float().numpy()
    else:
        x = np.asarray(waveform, dtype=np.float32)
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise MuxError(f"{what}: got a batch of {x.shape[0]} waveforms {tuple(x.shape)}; pass one (C, T) "
                           "waveform (e.g. waveform[i])")
        x = x[0]
    elif x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] not in _LAYOUTS or x.shape[1] == 0:
        raise MuxError(f"{what}: expected a (channels, samples) waveform with 1 or 2 channels, got shape "
                       f"{tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise MuxError(f"{what}: waveform contains NaN or Inf; the generation diverged, nothing was written")
    return np.ascontiguousarray(x)


def _fit_length(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Place x at ``offset`` samples inside n samples of silence (trim what falls outside)."""
    out = np.zeros((x.shape[0], n), np.float32)
    lo, hi = max(0, offset), min(n, offset + x.shape[1])
    if hi > lo:
        out[:, lo:hi] = x[:, lo - offset:hi - offset]
    return out


def _pick_format(codec: av.Codec) -> str:
    names = [f.name for f in (codec.audio_formats or [])]
    for pref in ("fltp", "flt", "s32", "s32p", "s16", "s16p"):
        if pref in names:
            return pref
    return names[0] if names else "fltp"


def _pick_rate(codec: av.Codec, sr: int) -> int:
    rates = codec.audio_rates
    if not rates or sr in rates:
        return sr
    higher = [r for r in rates if r >= sr]
    return min(higher) if higher else max(rates)


class _AudioTrack:
    """Encodes a (C, T) float waveform into an output stream in frame-sized pieces, on demand."""

    def __init__(self, out, codec_name: str, wave: np.ndarray, sr: int, start: Fraction, bitrate: int | None):
        enc = _ENCODERS.get(codec_name, codec_name)
        try:
            codec = av.Codec(enc, "w")
        except Exception:
            raise MuxError(f"audio_codec: this FFmpeg build has no '{enc}' encoder; pick another codec") from None
        self.rate = _pick_rate(codec, sr)
        layout = _LAYOUTS[wave.shape[0]]
        self.stream = out.add_stream(enc, rate=self.rate, layout=layout)
        self.stream.codec_context.format = _pick_format(codec)
        br = bitrate or _DEFAULT_BITRATE.get(codec_name)
        if br:
            self.stream.codec_context.bit_rate = int(br)
        self.stream.time_base = Fraction(1, self.rate)
        self.stream.codec_context.open()  # fixes frame_size (AAC 1024, Opus 960)
        frame_size = self.stream.codec_context.frame_size or 4096
        self.resampler = av.AudioResampler(format=self.stream.codec_context.format.name, layout=layout,
                                           rate=self.rate, frame_size=frame_size)
        self.wave, self.sr = wave, sr
        self.pos = 0  # input samples consumed
        self.out_samples = 0  # samples handed to the encoder
        self.start_pts = int(round(start * self.rate))  # audio starts with the first video frame
        self.chunk = 8192
        self.total_out = int(round(wave.shape[1] * self.rate / sr))

    @property
    def time(self) -> float:
        return self.pos / self.sr

    def _encode(self, frames, out) -> None:
        for fr in frames:
            fr.pts = self.start_pts + self.out_samples
            fr.time_base = Fraction(1, self.rate)
            self.out_samples += fr.samples
            out.mux(self.stream.encode(fr))

    def feed_until(self, seconds: float, out) -> None:
        total = self.wave.shape[1]
        target = total if seconds * self.sr >= total else int(math.ceil(seconds * self.sr))
        while self.pos < target:
            piece = self.wave[:, self.pos:self.pos + self.chunk]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp",
                                               layout=_LAYOUTS[piece.shape[0]])
            frame.sample_rate = self.sr
            frame.pts = self.pos
            frame.time_base = Fraction(1, self.sr)
            self.pos += piece.shape[1]
            self._encode(self.resampler.resample(frame), out)

    def finish(self, out) -> None:
        self.feed_until(float("inf"), out)
        self._encode(self.resampler.resample(None), out)  # the last, shorter frame (encoders accept it)
        out.mux(self.stream.encode(None))


# ----------------------------------------------------------------------------------------------- containers


def _format_of(ext: str) -> str:
    return CONTAINERS[ext][0]


def _can_copy(fmt: str, stream) -> bool:
    """True if FFmpeg's ``fmt`` muxer takes ``stream`` by stream copy (a trial header written to memory)."""
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as out:
            out.add_stream_from_template(stream)
            out.start_encoding()
    except (ValueError, av.error.FFmpegError):
        return False
    return True


def _as_extension(container: str) -> str:
    ext = "." + str(container).strip().lower().lstrip(".")
    if ext not in CONTAINERS:
        raise MuxError(f"container: '{container}' is not supported; use auto or one of "
                       f"{', '.join(e[1:] for e in sorted(CONTAINERS))}")
    return ext


def choose_container(video_path: str | os.PathLike, container: str = "auto", *,
                     reencode_picture: bool = False) -> str:
    """The output extension for ``video_path``'s picture, decided before anything runs (a header is written to
    memory, nothing is decoded).

    ``container`` is "auto" or an extension ("mp4", ".mkv"...). "auto" takes the first of .mp4, .mkv, .mov that
    can hold the picture codec by stream copy (.mp4 for H.264/HEVC/AV1/VP9/MPEG-4/MJPEG, .mov for Cinepak).
    An explicit container that cannot hold it raises :class:`ContainerError` (with the container that would),
    unless ``reencode_picture`` (then every container works: the picture becomes H.264, VP9 for .webm).
    """
    auto = str(container).strip().lower() == "auto"
    wanted = None if auto else _as_extension(container)
    if reencode_picture:
        return wanted or AUTO_ORDER[0]
    with open_container(video_path) as c:
        stream = select_video_stream(c, video_path)
        codec = stream.codec_context.name
        if wanted is not None and _can_copy(_format_of(wanted), stream):
            return wanted
        fits = next((e for e in AUTO_ORDER if e != wanted and _can_copy(_format_of(e), stream)), None)
    if auto and fits:
        return fits
    raise ContainerError(Path(video_path), codec, wanted, fits)


class ContainerError(MuxError):
    """The picture codec cannot be stream-copied into the container. ``fits`` is one that can (or None)."""

    def __init__(self, video: Path, codec: str, ext: str | None, fits: str | None):
        self.video, self.codec, self.ext, self.fits = video, codec, ext, fits
        where = ext or "any of " + ", ".join(AUTO_ORDER)
        fix = (f"choose {fits[1:]} (or auto), or re-encode the picture (reencode_picture)" if fits
               else "re-encode the picture (reencode_picture)")
        super().__init__(f"container: the picture codec '{codec}' of '{video.name}' cannot be stored in {where} "
                         f"without re-encoding; {fix}")


# ----------------------------------------------------------------------------------------------- provenance


def provenance_tags(provenance: dict | None) -> dict[str, str]:
    """Container tags that carry ``provenance`` (model, sampler, steps, seed, cfg, watermark...): a "comment"
    holding ``{"kling_foley": {...}}`` as JSON, a tag that MP4, MOV, Matroska, WebM, WAV and FLAC all keep."""
    if not provenance:
        return {}
    if not isinstance(provenance, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in provenance.items()):
        raise MuxError("provenance: expected a dict of str -> str/number, got "
                       f"{type(provenance).__name__} {str(provenance)[:80]!r}")
    try:
        return {"comment": json.dumps({PROVENANCE_KEY: provenance}, sort_keys=True, allow_nan=False)}
    except ValueError:
        raise MuxError("provenance: a value is NaN or infinite; pass finite numbers") from None


def read_provenance(path: str | os.PathLike) -> dict:
    """The provenance dict :func:`provenance_tags` wrote into a media file, or {} when it has none."""
    path = Path(path)
    if not path.is_file():
        raise MuxError(f"'{path}' is not a file; pass the path of a video or audio file")
    try:
        with av.open(str(path)) as c:
            tags = [c.metadata] + [s.metadata for s in c.streams]
    except av.error.FFmpegError:
        raise MuxError(f"'{path}' is not a media file FFmpeg can read; pass a video or audio file") from None
    for value in (v for t in tags for k, v in t.items() if k.lower() in ("comment", PROVENANCE_KEY)):
        try:
            found = json.loads(value)
        except ValueError:
            continue
        if isinstance(found, dict) and isinstance(found.get(PROVENANCE_KEY), dict):
            return found[PROVENANCE_KEY]
    return {}


def _check_metadata(metadata) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise MuxError(f"metadata: expected a dict of str -> str tags, got {str(metadata)[:80]!r}")
    return dict(metadata)


# ----------------------------------------------------------------------------------------------- public API


def _decode_audio_span(path: Path, t0: Fraction, seconds: Fraction) -> tuple[np.ndarray, int]:
    """The input's first soundtrack from ``t0`` (absolute seconds) for ``seconds``, as float (C<=2, T)."""
    with open_container(path) as c:
        a = c.streams.audio[0]
        rate = a.rate
        layout = "mono" if a.channels == 1 else "stereo"
        n = int(round(seconds * rate))
        out = np.zeros((1 if layout == "mono" else 2, n), np.float32)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        pos = None
        for frame in c.decode(a):
            if pos is None:
                t = Fraction(frame.pts) * frame.time_base if frame.pts is not None else Fraction(0)
                pos = int(round((t - t0) * rate))
            for f in resampler.resample(frame):
                x = f.to_ndarray()
                lo, hi = max(0, pos), min(n, pos + x.shape[1])
                if hi > lo:
                    out[:, lo:hi] = x[:, lo - pos:hi - pos]
                pos += x.shape[1]
            if pos >= n:
                break
    return out, rate


def mux_audio(
    video_path: str | os.PathLike,
    audio,
    sample_rate: int,
    out_path: str | os.PathLike,
    *,
    audio_codec: str | None = None,
    bitrate: int | None = None,
    keep_original_audio: bool = False,
    start: float = 0.0,
    duration: float | None = None,
    reencode_picture: bool = False,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> MuxResult:
    """Write ``out_path``: the picture of ``video_path`` from ``start`` for ``duration`` seconds, plus ``audio``
    (generated for that span) as the first audio track.

    Args:
        audio: (C, T) or (1, C, T) float waveform in [-1, 1], C = 1 or 2 (a ComfyUI AUDIO waveform works).
        sample_rate: rate of ``audio`` in Hz; encoders that need another rate (Opus: 48 kHz) get it resampled.
        out_path: .mp4/.m4v/.mov (AAC default) or .mkv (FLAC default) or .webm (Opus);
            :func:`choose_container` picks one that holds the input's picture codec.
        audio_codec: override the default for the container (see ``CONTAINERS``).
        keep_original_audio: add the input's own soundtrack (the same span) as a second track: stream-copied
            when the whole picture is, else re-encoded with ``audio_codec``.
        start, duration: the span in seconds from the video stream's start (``duration=None``: to the end), the
            one the audio was generated for (the Load Video node's start/length). The whole video is stream-copied
            as it is; a trimmed span is copied when its frames are one run of packets from a keyframe (cut points
            snapped to the nearest frame), else re-encoded frame-exact (see :mod:`kling_foley_core.mux_picture`).
            The audio is trimmed or zero-padded to the output's picture and starts with it.
        reencode_picture: re-encode the picture even when it could be copied (H.264 CRF 18; VP9 for .webm).
        metadata: container tags (e.g. ``provenance_tags(...)``).
        overwrite: replace an existing ``out_path`` (atomically); otherwise :class:`OutputExistsError`.
    """
    # 1. Check everything cheap before touching the output.
    out_path, video_path = Path(out_path), Path(video_path)
    ext = out_path.suffix.lower()
    if ext not in CONTAINERS:
        raise MuxError(f"out_path: '{out_path.name}' has an unsupported extension; use one of "
                       f"{', '.join(sorted(CONTAINERS))}")
    fmt, allowed, default_codec = CONTAINERS[ext]
    codec_name = (audio_codec or default_codec).lower()
    if codec_name not in allowed:
        raise MuxError(f"audio_codec: '{codec_name}' cannot go into {ext}; use one of {', '.join(allowed)}")
    if not isinstance(sample_rate, (int, np.integer)) or not 1000 <= int(sample_rate) <= 768_000:
        raise MuxError(f"sample_rate: expected an integer rate in Hz (e.g. 44100), got {sample_rate!r}")
    sample_rate = int(sample_rate)
    wave = _as_channels_first(audio)
    tags = _check_metadata(metadata)
    if not (isinstance(start, (int, float)) and math.isfinite(start) and start >= 0):
        raise MuxError(f"start: expected seconds >= 0, got {start!r}")
    if duration is not None and not (isinstance(duration, (int, float)) and math.isfinite(duration)
                                     and duration > 0):
        raise MuxError(f"duration: expected seconds > 0 (or None for the rest of the video), got {duration!r}")
    _check_destination(out_path, overwrite)
    info = probe_video(video_path)  # clear errors for a bad input video, before any output exists
    if not reencode_picture:
        choose_container(video_path, ext, reencode_picture=False)  # ContainerError naming the fix
    index = scan_packets(video_path)
    span_start = Fraction(start).limit_denominator(1_000_000)  # 0.48 means 12/25, not 0.47999...
    span_end = None if duration is None else span_start + Fraction(duration).limit_denominator(1_000_000)
    try:
        cut = plan_cut(index, span_start, span_end, reencode_picture)
    except ValueError as e:
        raise MuxError(f"start/duration: {e}; pass a span inside the video") from None
    first_abs = Fraction(index.origin) * index.time_base + cut.zero  # input time of the output's first frame
    track_start = first_abs if cut.mode == "all" else Fraction(0)  # "all" keeps the input's timestamps
    offset = int(round((span_start - cut.zero) * sample_rate))  # where the audio's t = 0 falls in the output
    wave = _fit_length(wave, int(round(cut.duration * sample_rate)), offset)

    # 2. Write to a temporary file, then publish it.
    kept = False
    options = {"movflags": "use_metadata_tags"} if tags and fmt in ("mp4", "mov") else {}
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        try:
            with open_container(video_path) as src, av.open(str(tmp), "w", format=fmt, options=options) as out:
                v_in = select_video_stream(src, video_path)
                if cut.mode == "encode":
                    v_out, pictures = encoded_packets(video_path, index, cut, out, info.rotation)
                else:
                    v_out = out.add_stream_from_template(v_in)
                tracks = [_AudioTrack(out, codec_name, wave, sample_rate, track_start, bitrate)]
                tracks[0].stream.metadata["title"] = "Kling-Foley"
                a_in = src.streams.audio[0] if keep_original_audio and src.streams.audio else None
                a_out = None
                if a_in is not None and cut.mode == "all" and a_in.codec_context.name in out.supported_codecs:
                    a_out = out.add_stream_from_template(a_in)
                    a_out.metadata["title"] = "original"
                elif a_in is not None:
                    original, rate = _decode_audio_span(video_path, first_abs, cut.duration)
                    tracks.append(_AudioTrack(out, codec_name, original, rate, track_start, bitrate))
                    tracks[1].stream.metadata["title"] = "original"
                elif keep_original_audio:
                    log.info("mux: '%s' has no soundtrack to keep", video_path)
                kept = a_in is not None
                out.metadata.update(tags)
                if cut.mode != "encode":
                    pictures = copied_packets(src, v_in, index, cut, [a_in] if a_out is not None else [])
                for packet in pictures:
                    if a_out is not None and packet.stream is a_in:
                        packet.stream = a_out
                    else:
                        if packet.pts is not None:
                            # keep the audio a little ahead of the picture: bounded interleaving buffer
                            t = float(packet.pts * packet.time_base - track_start)
                            for track in tracks:
                                track.feed_until(t + _AUDIO_LEAD, out)
                        packet.stream = v_out
                    out.mux(packet)
                for track in tracks:
                    track.finish(out)
        except av.error.FFmpegError as e:
            raise MuxError(f"mux: FFmpeg could not write '{out_path.name}' ({e.strerror or e}); nothing was "
                           "written") from None
    picture = "re-encoded" if cut.mode == "encode" else "copied"
    log.debug("mux: wrote %s (%.3fs video %s, %s audio %d Hz%s)", out_path, float(cut.duration), picture, codec_name,
             tracks[0].rate, ", original audio kept" if kept else "")
    return MuxResult(path=out_path, video_duration=float(cut.duration), audio_samples=tracks[0].out_samples,
                     sample_rate=tracks[0].rate, audio_codec=codec_name, kept_original_audio=kept, picture=picture)


_SF_DEFAULT_SUBTYPE = {".wav": "PCM_24", ".flac": "PCM_24"}
_SF_TAGS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license", "tracknumber", "genre")


def save_audio(
    path: str | os.PathLike,
    waveform,
    sample_rate: int,
    *,
    subtype: str | None = None,
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a (C, T) / (1, C, T) / (T,) float waveform as .wav or .flac (soundfile), atomically, no clobbering.

    ``subtype`` is soundfile's (default PCM_24; "FLOAT" for 32-bit float WAV). Values outside [-1, 1] are clipped
    by the PCM subtypes, as any player would. ``metadata``: tags among title, comment, artist, ... (those WAV's
    INFO chunk and FLAC's comments both hold; e.g. ``provenance_tags(...)``).
    """
    import soundfile as sf

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _SF_DEFAULT_SUBTYPE:
        raise MuxError(f"path: '{path.name}' must end in .wav or .flac (use mux_audio for video containers)")
    if not isinstance(sample_rate, (int, np.integer)) or not 1000 <= int(sample_rate) <= 768_000:
        raise MuxError(f"sample_rate: expected an integer rate in Hz (e.g. 44100), got {sample_rate!r}")
    sub = (subtype or _SF_DEFAULT_SUBTYPE[ext]).upper()
    fmt = ext[1:].upper()
    if not sf.check_format(fmt, sub):
        raise MuxError(f"subtype: '{sub}' is not valid for {ext}; try PCM_16, PCM_24" + (" or FLOAT" if ext == ".wav"
                                                                                         else ""))
    tags = _check_metadata(metadata)
    unknown = sorted(set(tags) - set(_SF_TAGS))
    if unknown:
        raise MuxError(f"metadata: {ext} files cannot hold the tag(s) {', '.join(unknown)}; use {', '.join(_SF_TAGS)}")
    x = _as_channels_first(waveform, "waveform")
    _check_destination(path, overwrite)
    with atomic_output(path, overwrite=overwrite) as tmp:
        with sf.SoundFile(str(tmp), "w", int(sample_rate), x.shape[0], sub, format=fmt) as f:
            for key, value in tags.items():
                setattr(f, key, value)
            f.write(x.T)  # soundfile wants (T, C)
    return path
