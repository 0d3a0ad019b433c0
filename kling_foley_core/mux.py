"""Put generated audio back into the user's video, and save audio files: atomic, never clobbering.

``mux_audio`` copies the picture stream packet for packet (``add_stream_from_template``: no re-encode, no quality
loss, bit-identical bytes) and encodes the generated waveform as a new audio track: AAC for MP4/MOV, FLAC (or
PCM/Opus/AAC) for MKV, Opus for WebM. The audio is trimmed or zero-padded to the video's duration and starts at
the video's first frame, so it stays in sync in every player. Optionally the original soundtrack is kept as a
second track.

Every file is written to a hidden temporary file in the destination folder and renamed into place only when it is
complete, so a failure never leaves a half-written file, and an existing file is never replaced unless
``overwrite=True`` (:class:`OutputExistsError` otherwise). :func:`runner.paths.next_output_path` picks ``name_00001.mp4``-style
names the way ComfyUI's SaveAudio/SaveVideo nodes do.
"""

from __future__ import annotations

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
import torch

from .video.probe import VideoInputError, open_container, probe_video, select_video_stream

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
# how far ahead of the video the generated audio is encoded while copying (keeps the muxer's buffer small)
_AUDIO_LEAD = 0.5


class MuxError(ValueError):
    """Bad arguments or an input/output combination that cannot be written."""


class OutputExistsError(MuxError):
    """The output file exists and ``overwrite`` is False."""


@dataclass
class MuxResult:
    path: Path
    video_duration: float  # seconds from the first to the end of the last video frame
    audio_samples: int  # samples written per channel, at ``sample_rate``
    sample_rate: int  # rate of the encoded track (Opus forces 48 kHz)
    audio_codec: str
    kept_original_audio: bool


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
    if isinstance(waveform, torch.Tensor):
        x = waveform.detach().to("cpu", torch.float32).numpy()
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


def _video_extent(path: Path) -> tuple[Fraction, Fraction]:
    """(first frame time, end of last frame) of the video stream in seconds, from packet timestamps (no decode)."""
    with open_container(path) as c:
        s = select_video_stream(c, path)
        tb = s.time_base
        first = last_end = None
        default = Fraction(1) / Fraction(s.average_rate or s.guessed_rate or 25)
        for p in c.demux(s):
            if p.pts is None:
                continue
            t = Fraction(p.pts) * tb
            end = t + (Fraction(p.duration) * tb if p.duration else default)
            first = t if first is None else min(first, t)
            last_end = end if last_end is None else max(last_end, end)
    if first is None:
        raise VideoInputError(path, "no_frames", "has no video packets with timestamps; re-encode it")
    return first, last_end


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


# ----------------------------------------------------------------------------------------------- public API


def mux_audio(
    video_path: str | os.PathLike,
    audio,
    sample_rate: int,
    out_path: str | os.PathLike,
    *,
    audio_codec: str | None = None,
    bitrate: int | None = None,
    keep_original_audio: bool = False,
    audio_offset: float = 0.0,
    overwrite: bool = False,
) -> MuxResult:
    """Write ``out_path``: the picture of ``video_path`` (stream copy) plus ``audio`` as the first audio track.

    Args:
        audio: (C, T) or (1, C, T) float waveform in [-1, 1], C = 1 or 2 (a ComfyUI AUDIO waveform works).
        sample_rate: rate of ``audio`` in Hz; encoders that need another rate (Opus: 48 kHz) get it resampled.
        out_path: .mp4/.m4v/.mov (AAC default) or .mkv (FLAC default) or .webm (Opus).
        audio_codec: override the default for the container (see ``CONTAINERS``).
        keep_original_audio: copy the input's own soundtrack as a second track (stream copy).
        audio_offset: seconds after the first video frame where ``audio`` begins (e.g. the trim start it was
            generated for); the rest of the track is silence. The track always spans the video's duration.
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
    _check_destination(out_path, overwrite)
    probe_video(video_path)  # clear errors for a bad input video, before any output exists
    first, end = _video_extent(video_path)
    duration = end - first
    n_samples = int(round(duration * sample_rate))
    wave = _fit_length(wave, n_samples, int(round(audio_offset * sample_rate)))

    # 2. Write to a temporary file, then publish it.
    kept = False
    with atomic_output(out_path, overwrite=overwrite) as tmp:
        try:
            with open_container(video_path) as src, av.open(str(tmp), "w", format=fmt) as out:
                v_in = select_video_stream(src, video_path)
                if v_in.codec_context.name not in out.supported_codecs:
                    raise MuxError(f"the video codec '{v_in.codec_context.name}' of '{video_path}' cannot be stored "
                                   f"in {ext} without re-encoding; choose .mkv (takes almost any codec) or .mp4")
                v_out = out.add_stream_from_template(v_in)
                track = _AudioTrack(out, codec_name, wave, sample_rate, first, bitrate)
                track.stream.metadata["title"] = "Kling-Foley"
                a_in = a_out = None
                if keep_original_audio and src.streams.audio:
                    a_in = src.streams.audio[0]
                    if a_in.codec_context.name not in out.supported_codecs:
                        raise MuxError(f"keep_original_audio: the original '{a_in.codec_context.name}' track cannot "
                                       f"be copied into {ext}; use .mkv or keep_original_audio=False")
                    a_out = out.add_stream_from_template(a_in)
                    a_out.metadata["title"] = "original"
                    kept = True
                elif keep_original_audio:
                    log.info("mux: '%s' has no soundtrack to keep", video_path)
                streams = [v_in] + ([a_in] if a_in is not None else [])
                for packet in src.demux(streams):
                    if packet.dts is None:  # demux's end-of-stream flush packets
                        continue
                    if packet.stream is v_in and packet.pts is not None:
                        # keep the generated audio a little ahead of the picture: bounded interleaving buffer
                        t = float(Fraction(packet.pts) * packet.time_base - first)
                        track.feed_until(t + _AUDIO_LEAD, out)
                        packet.stream = v_out
                    else:
                        packet.stream = a_out
                    out.mux(packet)
                track.finish(out)
        except av.error.FFmpegError as e:
            raise MuxError(f"mux: FFmpeg could not write '{out_path.name}' ({e.strerror or e}); nothing was "
                           "written") from None
    log.info("mux: wrote %s (%.3fs video, %s audio %d Hz%s)", out_path, float(duration), codec_name, track.rate,
             ", original audio kept" if kept else "")
    return MuxResult(path=out_path, video_duration=float(duration), audio_samples=track.out_samples,
                     sample_rate=track.rate, audio_codec=codec_name, kept_original_audio=kept)


_SF_DEFAULT_SUBTYPE = {".wav": "PCM_24", ".flac": "PCM_24"}


def save_audio(
    path: str | os.PathLike,
    waveform,
    sample_rate: int,
    *,
    subtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a (C, T) / (1, C, T) / (T,) float waveform as .wav or .flac (soundfile), atomically, no clobbering.

    ``subtype`` is soundfile's (default PCM_24; "FLOAT" for 32-bit float WAV). Values outside [-1, 1] are clipped
    by the PCM subtypes, as any player would.
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
    x = _as_channels_first(waveform, "waveform")
    _check_destination(path, overwrite)
    with atomic_output(path, overwrite=overwrite) as tmp:
        sf.write(str(tmp), x.T, int(sample_rate), subtype=sub, format=fmt)  # soundfile wants (T, C)
    return path
