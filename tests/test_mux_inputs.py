"""mux_audio on awkward inputs: every frame of the kept span survives, the span is cut in picture and sound alike,
and the container is decided from the picture codec before anything is written."""
from __future__ import annotations

from fractions import Fraction

import av
import pytest
import torch

from kling_foley_core.mux import ContainerError, MuxError, choose_container, mux_audio
from mux_clips import cfr_times, decoded, picture_span, vfr_times, write_input

SR = 16000
AVI = Fraction(1, 25)  # AVI counts frames
CASES = {
    "vfr_bframes.mkv": dict(times_ms=vfr_times(60), bframes=2),  # Matroska: the first keyframe comes without a dts
    "vfr_bframes.mp4": dict(times_ms=vfr_times(60), bframes=3),
    "offset_vfr.mov": dict(times_ms=vfr_times(50, start_ms=700), bframes=2),  # the picture starts at 0.7 s
    "open_gop.mkv": dict(times_ms=cfr_times(60), bframes=3, open_gop=True),
    "vp9.webm": dict(times_ms=vfr_times(40), codec="libvpx-vp9"),
    "mpeg4_bframes.avi": dict(times_ms=cfr_times(50), codec="mpeg4", bframes=2, time_base=AVI),
    "mjpeg.avi": dict(times_ms=cfr_times(40), codec="mjpeg", time_base=AVI),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    return {name: write_input(folder / name, **kw) for name, kw in CASES.items()}


def _relative(frames):
    return [(t - frames[0][0], i) for t, i in frames]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("container", ["auto", "mkv"])
def test_the_whole_picture_survives(tmp_path, inputs, name, container):
    src = inputs[name]
    out = tmp_path / f"out{choose_container(src, container)}"
    res = mux_audio(src, torch.zeros(2, SR), SR, out)
    assert res.picture == "copied"
    frames_in, frames_out = decoded(src), decoded(out)
    assert len(frames_out) == len(frames_in)
    assert _relative(frames_out) == _relative(frames_in)  # same frames at the same times


# (start, length): on a frame but not a keyframe, between frames, to the end from mid-GOP
SPANS = [(0.48, 1.0), (0.5, 0.73), (1.3, 0.0)]


@pytest.mark.parametrize("name", ["vfr_bframes.mkv", "offset_vfr.mov", "open_gop.mkv", "vp9.webm",
                                  "mpeg4_bframes.avi", "mjpeg.avi"])
@pytest.mark.parametrize("start, length", SPANS)
def test_a_span_is_cut_in_picture_and_sound(tmp_path, inputs, name, start, length):
    src = inputs[name]
    frames = decoded(src)  # (time from the stream start, source index): the loader's clock
    first, end = picture_span(src)
    video_end = end - first + frames[0][0]
    span_end = min(Fraction(start) + Fraction(length), video_end) if length else video_end
    span_end = Fraction(span_end).limit_denominator(10**6)
    period = max(b[0] - a[0] for a, b in zip(frames, frames[1:]))  # the longest frame: "one frame" of slack
    out = tmp_path / f"cut{choose_container(src)}"
    res = mux_audio(src, torch.zeros(2, SR), SR, out, start=start, duration=length or None)
    want = span_end - Fraction(start).limit_denominator(10**6)
    assert abs(Fraction(res.video_duration) - want) <= period
    a, b = picture_span(out)
    assert abs((b - a) - want) <= period
    with av.open(str(out)) as c:
        s = c.streams.audio[0]
        audio = sum(f.samples for f in c.decode(s)) / s.rate
    assert abs(audio - float(want)) <= float(period) + 1024 / SR  # plus one AAC frame of encoder padding
    got = [i for _, i in decoded(out)]
    assert got == list(range(got[0], got[-1] + 1))  # consecutive source frames: none lost inside the span
    on_screen = [i for t, i in frames if t <= Fraction(start).limit_denominator(10**6)] or [frames[0][1]]
    assert got[0] in (on_screen[-1], on_screen[-1] + 1)  # the frame shown at start (or the next, when snapped)
    shown_before_end = [i for t, i in frames if t < span_end]
    assert got[-1] in (shown_before_end[-1], shown_before_end[-1] - 1)


def test_a_keyframe_aligned_span_of_an_intra_codec_is_copied(tmp_path, inputs):
    res = mux_audio(inputs["mjpeg.avi"], torch.zeros(2, SR), SR, tmp_path / "c.mp4", start=0.4, duration=0.4)
    assert res.picture == "copied" and res.video_duration == pytest.approx(0.4)
    assert [i for _, i in decoded(tmp_path / "c.mp4")] == list(range(10, 20))


def test_length_shorter_than_the_video_trims_the_picture_too(tmp_path, inputs):
    """The issue's case: --length 10 of an 11.26 s video came back 11.26 s long with silence at the end."""
    src = inputs["vfr_bframes.mp4"]
    res = mux_audio(src, torch.zeros(2, SR), SR, tmp_path / "o.mp4", duration=2.0)
    a, b = picture_span(tmp_path / "o.mp4")
    assert float(b - a) == pytest.approx(2.0, abs=0.07) and res.video_duration == pytest.approx(2.0, abs=0.07)


def test_reencode_on_request(tmp_path, inputs):
    out = tmp_path / "r.mkv"
    res = mux_audio(inputs["vfr_bframes.mkv"], torch.zeros(2, SR), SR, out, reencode_picture=True)
    assert res.picture == "re-encoded"
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    assert [i for _, i in decoded(out)] == list(range(60))


def test_container_is_decided_from_the_picture_codec(tmp_path):
    src = write_input(tmp_path / "old.avi", times_ms=cfr_times(10), codec="cinepak", time_base=AVI)
    h264 = write_input(tmp_path / "new.mkv", times_ms=cfr_times(10))
    assert choose_container(h264) == ".mp4" and choose_container(h264, "mkv") == ".mkv"
    assert choose_container(src) == ".mov"  # mp4 and Matroska cannot hold Cinepak; QuickTime can
    with pytest.raises(ContainerError, match="'cinepak' of 'old.avi' cannot be stored in .mp4.*choose mov") as e:
        choose_container(src, "mp4")
    assert e.value.fits == ".mov" and "\n" not in str(e.value)
    assert choose_container(src, "mp4", reencode_picture=True) == ".mp4"
    with pytest.raises(MuxError, match="container: 'avi' is not supported"):
        choose_container(src, "avi")
    # mux_audio refuses the same before writing anything, and re-encodes when asked
    with pytest.raises(ContainerError):
        mux_audio(src, torch.zeros(2, SR), SR, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()
    mux_audio(src, torch.zeros(2, SR), SR, tmp_path / "x.mp4", reencode_picture=True)
    assert [i for _, i in decoded(tmp_path / "x.mp4")] == list(range(10))


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=float("nan")), "start"), (dict(start=-1.0), "start"), (dict(duration=0.0), "duration"),
    (dict(start=5.0), "holds no picture"), (dict(metadata={"comment": 3}), "metadata"),
])
def test_bad_spans_and_tags(tmp_path, inputs, kwargs, match):
    with pytest.raises(MuxError, match=match):
        mux_audio(inputs["mjpeg.avi"], torch.zeros(2, SR), SR, tmp_path / "o.mp4", **kwargs)
    assert list(tmp_path.iterdir()) == []
