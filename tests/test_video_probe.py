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


# ------------------------------------------------------------------------------------------------ what a path is
def test_still_image_is_named_as_such(tmp_path):
    from PIL import Image

    png = tmp_path / "frame.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    with pytest.raises(VideoInputError) as e:  # was accepted, then a TypeError in the Load Video node
        probe_video(png)
    assert e.value.kind == "still_image" and "still image (PNG)" in _one_line(e.value, png)


def test_symlink_loop_and_broken_link_say_what_they_are(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(VideoInputError, match="symbolic link loop") as e:  # was "file not found"
        probe_video(a)
    assert "not found" not in str(e.value)
    broken = tmp_path / "broken.mp4"
    broken.symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(VideoInputError, match="symbolic link to .*gone.mp4.*which does not exist"):
        probe_video(broken)


def test_clip_span_checks_start_length_and_the_shortest_span(tmp_path):
    from kling_foley_core.video.probe import clip_span

    clip = write_clip(tmp_path / "c.mp4", n=50, rate=25, size=(16, 16))  # 2.0 s
    assert clip_span(clip)[1] == pytest.approx(2.0, abs=1e-3)
    assert clip_span(clip, start=0.5, length=1.0)[1] == pytest.approx(1.0)
    assert clip_span(clip, start=1.0, length=5.0)[1] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(VideoInputError, match=r"0.50 s, shorter than one sync window \(0.64 s") as e:
        clip_span(clip, start=1.5)
    assert e.value.kind == "too_short"
    with pytest.raises(VideoInputError, match="past the end"):
        clip_span(clip, start=2.5)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(VideoInputError, match="must be a finite number of seconds"):
            clip_span(clip, length=bad)
    one_frame = write_clip(tmp_path / "one.mp4", n=1, rate=25, size=(16, 16))  # 0.04 s
    with pytest.raises(VideoInputError, match="0.04 s, shorter than one sync window"):
        clip_span(one_frame)
