"""probe_video: facts about good files, and one-line VideoInputError (a ValueError) for every kind of bad one."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from kling_foley_core.video import VideoInputError, load_video, probe_video
from kling_foley_core.video import probe as probe_mod
from video_clips import write_clip


def _one_line(err: VideoInputError, path) -> str:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_probe_facts(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=30, rate=Fraction(30000, 1001), size=(32, 24), audio_seconds=1.0)
    info = probe_video(clip)
    assert info.codec == "h264" and "mp4" in info.container
    assert (info.width, info.height, info.rotation) == (32, 24, 0)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 30
    assert info.duration == pytest.approx(30 * 1001 / 30000, abs=1e-3)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_sample_rate == 16000
    assert info.start_time == 0.0


def test_probe_rotation(tmp_path):
    clip = write_clip(tmp_path / "r.mp4", n=3, rate=25, size=(24, 32), rotation=-90)  # phone "rotate=90" tag
    info = probe_video(clip)
    assert info.rotation == 270 and info.display_size == (24, 32) and (info.width, info.height) == (32, 24)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.mp4"
    with pytest.raises(VideoInputError) as e:
        probe_video(p)
    assert e.value.kind == "missing" and isinstance(e.value, ValueError)
    assert "not found" in _one_line(e.value, p)


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(VideoInputError) as e:
        probe_video(tmp_path)
    assert e.value.kind == "missing"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoInputError) as e:
        probe_video(empty)
    assert e.value.kind == "corrupt" and "empty" in str(e.value)


def test_text_file_renamed_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoInputError) as e:
        probe_video(p)
    assert e.value.kind == "not_media"
    assert "not a media file" in _one_line(e.value, p)


def test_truncated_file(tmp_path):
    good = write_clip(tmp_path / "good.mp4", n=25, rate=25)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: lost
    with pytest.raises(VideoInputError) as e:
        probe_video(cut)
    assert e.value.kind == "corrupt" and "truncated" in _one_line(e.value, cut)


def test_truncated_matroska_loads_with_warning(tmp_path, caplog):
    """A streamable container cut short still opens; the loader uses what is there and says so."""
    good = write_clip(tmp_path / "good.mkv", n=50, rate=25, size=(64, 48))
    data = good.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    v = load_video(cut)
    assert 0 < v.duration < 2.0
    assert any("truncated" in w or "damaged" in w for w in v.warnings)


def test_audio_only(tmp_path):
    p = tmp_path / "a.m4a"
    with av.open(str(p), "w") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for pk in s.encode(fr):
            c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    with pytest.raises(VideoInputError) as e:
        probe_video(p)
    assert e.value.kind == "no_video" and "audio-only" in _one_line(e.value, p)


def test_zero_video_frames(tmp_path):
    p = tmp_path / "zv.mkv"
    with av.open(str(p), "w") as c:
        v = c.add_stream("mpeg4", rate=25)
        v.width = v.height = 32
        v.pix_fmt = "yuv420p"
        a = c.add_stream("flac", rate=16000, layout="mono")
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.int16), format="s16", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for pk in a.encode(fr):
            c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
    with pytest.raises(VideoInputError) as e:
        probe_video(p)
    assert e.value.kind == "no_frames" and "zero frames" in _one_line(e.value, p)


@pytest.mark.parametrize("size", [(1, 64), (20000, 2)])
def test_absurd_dimensions(tmp_path, size):
    w, h = size
    p = tmp_path / "abs.mkv"
    with av.open(str(p), "w") as c:
        s = c.add_stream("rawvideo", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "gray"
        for _ in range(2):
            for pk in s.encode(av.VideoFrame.from_ndarray(np.zeros((h, w), np.uint8), format="gray")):
                c.mux(pk)
    with pytest.raises(VideoInputError) as e:
        load_video(p)  # the loader probes first: nothing is decoded
    assert e.value.kind == "bad_size" and f"{w}x{h}" in _one_line(e.value, p)


def test_unsupported_codec(tmp_path, monkeypatch):
    """Simulate an FFmpeg build without an H.264 decoder (every codec this wheel writes, it can also read)."""
    clip = write_clip(tmp_path / "c.mp4", n=3, rate=25)
    real_codec = av.Codec

    def fake_codec(name, mode="r"):
        if name == "h264" and mode == "r":
            raise av.codec.codec.UnknownCodecError(name)
        return real_codec(name, mode)

    monkeypatch.setattr(probe_mod.av, "Codec", fake_codec)
    with pytest.raises(VideoInputError) as e:
        probe_video(clip)
    assert e.value.kind == "unsupported_codec" and "'h264'" in _one_line(e.value, clip)
