"""Read an audio file (or the soundtrack of a video) with PyAV: any container and codec FFmpeg decodes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .encode import AudioInputError

__all__ = ["read_audio"]


def read_audio(path: str | Path, *, what: str = "audio file", max_seconds: float = 3600.0) -> tuple[torch.Tensor, int]:
    """``(waveform (C, T) float32, sample_rate)`` of the first audio stream; mono and stereo are kept, more
    channels are averaged to stereo-less mono. Errors name ``what`` and the file."""
    import av

    p = Path(path)
    if not p.is_file():
        kind = "a folder" if p.is_dir() else "not found"
        raise AudioInputError(f"{what} {str(p)!r} is {kind}; give an audio or video file with a soundtrack")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise AudioInputError(f"{what} {p.name!r} has no audio stream; give a file with sound")
            stream = container.streams.audio[0]
            sr = int(stream.rate or stream.codec_context.sample_rate)
            chunks, total = [], 0
            for frame in container.decode(stream):
                a = frame.to_ndarray()
                if frame.format.is_planar:
                    a = a.reshape(len(frame.layout.channels), -1)
                else:
                    a = a.reshape(-1, len(frame.layout.channels)).T
                if a.dtype.kind in "iu":
                    a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
                chunks.append(a.astype(np.float32))
                total += a.shape[1]
                if total > max_seconds * sr:
                    raise AudioInputError(f"{what} {p.name!r} is longer than {max_seconds:g} s; cut it first")
    except AudioInputError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise AudioInputError(f"{what} {p.name!r} cannot be decoded ({type(e).__name__}); give an audio file "
                              f"(wav, flac, mp3, m4a, ogg) or a video with a soundtrack") from None
    if not chunks:
        raise AudioInputError(f"{what} {p.name!r} holds no audio samples")
    wave = np.concatenate(chunks, axis=1)
    if wave.shape[0] > 2:
        wave = wave.mean(axis=0, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(wave)), sr
