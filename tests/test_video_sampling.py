"""Frame sampling by timestamp: which source frame each 8 fps / 25 fps target picks, for many input rates.

Every clip encodes its frame index in its colour, so the tests check both the reported ``source_indices`` and
the pixels that actually came out. Reference: last frame with time <= k/fps.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from kling_foley_core.video import (
    SEMANTIC,
    SYNC,
    FrameSpec,
    VideoParamError,
    load_video,
    sample_image_batch,
)
from kling_foley_core.video.resample import resize_image_tensor
from kling_foley_core.video import loader as loader_mod
from video_clips import decode_index, decoded_times, expected_indices, index_image, top_left_marked, write_clip

SMALL_SEM = FrameSpec(fps=8, size=16, resize="crop", output="unit")
SMALL_SYNC = FrameSpec(fps=25, size=16, resize="crop", output="symmetric", min_frames=16)


def _pixel_indices(frames: torch.Tensor) -> list[int]:
    return [decode_index(f) for f in frames]


RATES = {
    "23.976": Fraction(24000, 1001),
    "29.97": Fraction(30000, 1001),
    "12": Fraction(12),
    "60": Fraction(60),
    "25": Fraction(25),
}


@pytest.mark.parametrize("name", list(RATES))
def test_constant_rates_pick_by_timestamp(tmp_path, name):
    rate = RATES[name]
    n_src = int(2 * rate) + 1  # a bit over 2 s
    clip = write_clip(tmp_path / f"c{name}.mp4", n=n_src, rate=rate)
    v = load_video(clip, semantic=SMALL_SEM, sync=SMALL_SYNC)

    duration = Fraction(n_src) / rate  # last frame lasts 1/rate
    assert v.duration == pytest.approx(float(duration), abs=1e-6)
    for fs, fps in ((v.semantic, 8), (v.sync, 25)):
        n = math.floor(duration * fps)
        assert len(fs) == n
        # analytic truth for a constant-rate source: frame floor(k/fps * rate)
        want = [math.floor(Fraction(k, fps) * rate) for k in range(n)]
        assert fs.source_indices.tolist() == want
        assert _pixel_indices(fs.frames) == want
        assert torch.allclose(fs.times, torch.arange(n, dtype=torch.float64) / fps)
    if rate != 8 and rate != 25:
        # the "first N frames" bug must be impossible
        assert v.semantic.source_indices.tolist() != list(range(len(v.semantic)))


def test_29_97_and_12_fps_exact_indices(tmp_path):
    """Spelled out so a regression is obvious (29.97 -> 8 fps and 12 -> 25 fps)."""
    c30 = write_clip(tmp_path / "a.mp4", n=30, rate=Fraction(30000, 1001))
    v = load_video(c30, semantic=SMALL_SEM, sync=SMALL_SYNC)
    assert v.semantic.source_indices.tolist() == [0, 3, 7, 11, 14, 18, 22, 26]
    assert _pixel_indices(v.semantic.frames) == [0, 3, 7, 11, 14, 18, 22, 26]
    c12 = write_clip(tmp_path / "b.mp4", n=12, rate=12)
    v = load_video(c12, semantic=SMALL_SEM, sync=SMALL_SYNC)
    want = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11]
    assert v.sync.source_indices.tolist() == want
    assert _pixel_indices(v.sync.frames) == want


def test_variable_frame_rate(tmp_path):
    times_ms = [0, 40, 50, 130, 300, 310, 320, 700, 710, 760, 1000, 1040, 1100, 1130, 1250]
    clip = write_clip(tmp_path / "vfr.mp4", times_ms=times_ms)
    truth = decoded_times(clip)
    assert truth == [Fraction(t, 1000) for t in times_ms]  # the container kept the irregular pts
    v = load_video(clip, semantic=SMALL_SEM, sync=SMALL_SYNC)
    for fs, fps in ((v.semantic, 8), (v.sync, 25)):
        want = expected_indices(truth, fps, len(fs))
        assert fs.source_indices.tolist() == want
        assert _pixel_indices(fs.frames) == want
        assert fs.source_times.tolist() == pytest.approx([float(truth[i]) for i in want])
    # the end of the clip is the last frame's time plus its duration, so n = floor(duration * fps)
    assert len(v.sync) == math.floor(Fraction(str(v.duration)) * 25)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_comes_out_upright(tmp_path, rotation):
    # a portrait 32x48 picture stored as landscape 48x32 plus a display matrix (as phones do)
    clip = write_clip(tmp_path / "rot.mp4", n=10, rate=25, size=(32, 48) if rotation % 180 else (48, 32),
                      rotation=rotation)
    v = load_video(clip, semantic=FrameSpec(fps=8, size=(24, 16), resize="stretch"), sync=SMALL_SYNC)
    assert v.info.rotation == rotation % 360
    assert (v.info.width, v.info.height) == (48, 32)  # coded
    assert v.info.display_size == ((32, 48) if rotation % 180 else (48, 32))
    for f in list(v.semantic.frames) + list(v.sync.frames[:10]):
        assert top_left_marked(f), "frame not upright"
    assert _pixel_indices(v.sync.frames[:10]) == list(range(10))


def test_odd_size_and_default_specs(tmp_path):
    clip = write_clip(tmp_path / "odd.mp4", n=25, rate=25, size=(33, 25), pix_fmt="yuv444p")
    v = load_video(clip)  # the real consumer settings: 224x224, [0,1] semantic and [-1,1] sync
    assert v.semantic.frames.shape == (8, 3, 224, 224)
    assert v.sync.frames.shape == (25, 3, 224, 224)
    assert v.semantic.frames.dtype == torch.float32
    assert 0.0 <= float(v.semantic.frames.min()) and float(v.semantic.frames.max()) <= 1.0
    assert float(v.sync.frames.min()) >= -1.0 and float(v.sync.frames.max()) <= 1.0
    assert float(v.sync.frames.min()) < 0.0  # really normalised to [-1, 1]
    assert _pixel_indices(v.sync.frames) == list(range(25))
    assert v.semantic.source_indices.tolist() == [0, 3, 6, 9, 12, 15, 18, 21]


def test_semantic_uint8_output(tmp_path):
    clip = write_clip(tmp_path / "u8.mp4", n=16, rate=25)
    v = load_video(clip, semantic=FrameSpec(fps=8, size=16, output="uint8"), sync=None)
    assert v.sync is None
    assert v.semantic.frames.dtype == torch.uint8 and v.semantic.frames.shape == (5, 3, 16, 16)
    assert _pixel_indices(v.semantic.frames) == [0, 3, 6, 9, 12]


def test_short_clip_is_padded_to_one_sync_window(tmp_path):
    clip = write_clip(tmp_path / "short.mp4", n=10, rate=25)
    v = load_video(clip, semantic=SMALL_SEM, sync=SMALL_SYNC)
    assert len(v.sync) == 16 and v.sync.padded == 6
    assert v.sync.source_indices.tolist() == list(range(10)) + [9] * 6
    assert _pixel_indices(v.sync.frames) == list(range(10)) + [9] * 6
    assert v.semantic.padded == 0 and v.semantic.source_indices.tolist() == [0, 3, 6]  # floor(0.4 * 8) = 3


def test_trim_start_and_length(tmp_path):
    rate = Fraction(30000, 1001)
    clip = write_clip(tmp_path / "trim.mp4", n=90, rate=rate)
    v = load_video(clip, start=0.5, duration=1.25, semantic=SMALL_SEM, sync=SMALL_SYNC)
    assert v.start == 0.5 and v.duration == 1.25
    truth = decoded_times(clip)
    for fs, fps in ((v.semantic, 8), (v.sync, 25)):
        n = math.floor(Fraction(5, 4) * fps)
        assert len(fs) == n
        want = expected_indices(truth, fps, n, start=Fraction(1, 2))
        assert fs.source_indices.tolist() == want
        assert _pixel_indices(fs.frames) == want
        assert float(fs.times[0]) == 0.0  # times are relative to the trim start


def test_trim_with_seek_matches_full_decode(tmp_path):
    clip = write_clip(tmp_path / "seek.mp4", n=75, rate=25, gop=10)
    a = load_video(clip, start=1.3, duration=1.0, semantic=SMALL_SEM, sync=SMALL_SYNC, seek=False)
    b = load_video(clip, start=1.3, duration=1.0, semantic=SMALL_SEM, sync=SMALL_SYNC, seek=True)
    assert (b.sync.source_indices == -1).all()  # unknown after a seek, by design
    assert _pixel_indices(b.sync.frames) == a.sync.source_indices.tolist()
    assert torch.equal(a.sync.source_times, b.sync.source_times)


def test_requested_duration_longer_than_clip_is_clamped(tmp_path, caplog):
    clip = write_clip(tmp_path / "c.mp4", n=20, rate=25)
    with caplog.at_level(logging.WARNING):
        v = load_video(clip, duration=5.0, semantic=SMALL_SEM, sync=SMALL_SYNC)
    assert v.duration == pytest.approx(0.8)
    assert len(v.semantic) == 6 and len(v.sync) == 20
    assert any("only" in r.message for r in caplog.records)


@pytest.mark.parametrize("seed", range(6))
def test_corrupt_packet_in_the_middle_is_skipped(tmp_path, caplog, seed):
    # the decoder may raise, flag the frame, or drop it silently depending on the damage: all must be reported
    rng = np.random.default_rng(seed)
    good = write_clip(tmp_path / "g.mp4", n=25, rate=25, gop=5)
    bad = tmp_path / "bad.mkv"
    with av.open(str(good)) as src, av.open(str(bad), "w") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for k, p in enumerate(src.demux(s_in)):
            if p.dts is None:
                continue
            if k == 12:  # replace a mid-clip packet's payload with noise
                raw = bytes(p)
                q = av.Packet(raw[:4] + rng.bytes(len(raw) - 4))
                q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                p = q
            p.stream = s_out
            dst.mux(p)
    with caplog.at_level(logging.WARNING):
        v = load_video(bad, semantic=SMALL_SEM, sync=SMALL_SYNC)
    assert v.skipped >= 1
    assert any("corrupt" in r.message for r in caplog.records)
    assert len(v.sync) == 25 and len(v.semantic) == 8
    assert _pixel_indices(v.sync.frames[:10]) == list(range(10))  # frames before the damage are intact


def test_only_picked_frames_are_converted(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "c60.mp4", n=120, rate=60)
    calls = []
    real = loader_mod._FrameConverter.__call__
    monkeypatch.setattr(loader_mod._FrameConverter, "__call__", lambda self, f: calls.append(1) or real(self, f))
    v = load_video(clip, semantic=SMALL_SEM, sync=SMALL_SYNC)
    # both specs are 16x16 crops, so a frame picked by both streams is resized once and shared
    unique = set(v.semantic.source_indices.tolist()) | set(v.sync.source_indices.tolist())
    assert len(calls) == len(unique) < 120
    calls.clear()
    v = load_video(clip, semantic=FrameSpec(fps=8, size=12), sync=SMALL_SYNC, workers=0)  # different geometry
    assert len(calls) == len(set(v.semantic.source_indices.tolist())) + len(set(v.sync.source_indices.tolist()))


def _image_batch(n: int, size=(32, 24)) -> torch.Tensor:
    w, h = size
    return torch.stack([torch.from_numpy(index_image(i, w, h)) for i in range(n)]).float() / 255.0  # (B, H, W, 3)


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(12), Fraction(60)])
def test_image_batch_matches_file(tmp_path, rate):
    n_src = int(rate * 2)
    clip = write_clip(tmp_path / "c.mp4", n=n_src, rate=rate)
    from_file = load_video(clip, semantic=SMALL_SEM, sync=SMALL_SYNC)
    from_batch = sample_image_batch(_image_batch(n_src), float(rate), semantic=SMALL_SEM, sync=SMALL_SYNC)
    for name in ("semantic", "sync"):
        a, b = from_file.streams[name], from_batch.streams[name]
        assert b.source_indices.tolist() == a.source_indices.tolist()
        assert _pixel_indices(b.frames) == b.source_indices.tolist()
        assert b.frames.shape == a.frames.shape
    assert from_batch.duration == pytest.approx(from_file.duration, abs=1e-4)


def test_image_batch_with_timestamps_and_trim():
    times = [0.0, 0.04, 0.05, 0.13, 0.3, 0.31, 0.32, 0.7, 0.71, 0.76]
    v = sample_image_batch(_image_batch(len(times)), 25, timestamps=times, start=0.1, duration=0.6,
                           semantic=SMALL_SEM, sync=SMALL_SYNC)
    truth = [Fraction(str(t)) for t in times]
    want = expected_indices(truth, 25, 15, start=Fraction(1, 10))  # floor(0.6 * 25) = 15 targets ...
    want += want[-1:]  # ... padded to one 16-frame Synchformer window
    assert v.sync.padded == 1
    assert v.sync.source_indices.tolist() == want
    assert _pixel_indices(v.sync.frames) == want
    with pytest.raises(VideoParamError, match="timestamps"):
        sample_image_batch(_image_batch(3), 25, timestamps=[0.0, 0.1])


def test_image_batch_rejects_bad_shapes():
    with pytest.raises(VideoParamError, match="images"):
        sample_image_batch(torch.zeros(4, 3, 16, 16), 25)  # channels-first is not an IMAGE
    with pytest.raises(VideoParamError, match="fps"):
        sample_image_batch(torch.zeros(4, 16, 16, 3), 0)


def test_bad_parameters_are_one_line_errors(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", n=10, rate=25)
    with pytest.raises(VideoParamError, match="start"):
        load_video(clip, start=-1)
    with pytest.raises(VideoParamError, match="duration"):
        load_video(clip, duration=0)
    with pytest.raises(VideoParamError, match="start"):
        load_video(clip, start=30)
    with pytest.raises(VideoParamError, match="resize"):
        load_video(clip, semantic=FrameSpec(fps=8, resize="squash"))
    with pytest.raises(VideoParamError, match="interpolation"):
        load_video(clip, interpolation="nearest-ish")
    assert SEMANTIC.fps == 8 and SYNC.fps == 25 and SYNC.min_frames == 16


def _detailed_image(i: int, w: int, h: int) -> np.ndarray:
    """Gradients, saturated colour blocks and thin lines: content on which the resize filter and the chroma
    handling both show (flat index colours would hide them)."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.int16)  # (H, W, 3)
    blocks = (rng.integers(0, 4, (h // 4 + 1, w // 4 + 1, 3)) * 60).repeat(4, 0).repeat(4, 1)[:h, :w]
    img[h // 4:3 * h // 4, w // 4:3 * w // 4] = blocks[h // 4:3 * h // 4, w // 4:3 * w // 4]
    img[::9] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size,pix_fmt,tol", [((192, 108), "yuv420p", 5.0), ((108, 192), "yuv444p", 0.6)])
def test_resize_matches_torchvision_style_reference(tmp_path, size, pix_fmt, tol):
    """The loader's crop+scale (swscale, bicubic) against Resize(short side, bicubic, antialias) + CenterCrop of the
    full-resolution RGB frame. Mean error in 0..255 units; measured ~3.1 (4:2:0: the reference upsamples the chroma
    planes first, swscale resamples them directly) and ~0.3 (4:4:4). Packed-RGB output from swscale (half-width
    chroma) measured ~9 on the 4:2:0 case, and its default cubic (C=0.6) ~0.9 on the 4:4:4 one."""
    w, h = size
    path = tmp_path / "detail.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = {"crf": "0", "preset": "ultrafast"}
        for i in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(_detailed_image(i, w, h), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    spec = FrameSpec(fps=25, size=36, output="unit")
    with av.open(str(path)) as c:
        ref = torch.stack([resize_image_tensor(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1) / 255.0,
                                               spec) for f in c.decode(video=0)])  # (3, 3, 36, 36)
    v = load_video(path, semantic=None, sync=spec)
    assert v.sync.frames.shape == ref.shape
    err = (v.sync.frames - ref).abs() * 255.0
    assert float(err.mean()) < tol, float(err.mean())
    assert float(err.amax()) < 64  # no misplaced crop or swapped channels (those give errors of ~100+)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_output_dtypes_agree(tmp_path, dtype):
    """float16/float64 are written by the worker straight into the output; bfloat16 goes through per-pick items.
    Both must give the float32 result up to the dtype's rounding."""
    clip = write_clip(tmp_path / "c.mp4", n=30, rate=Fraction(30000, 1001))
    ref = load_video(clip, semantic=SMALL_SEM, sync=SMALL_SYNC)
    from dataclasses import replace
    v = load_video(clip, semantic=replace(SMALL_SEM, dtype=dtype), sync=replace(SMALL_SYNC, dtype=dtype))
    for name in ("semantic", "sync"):
        got, want = v.streams[name], ref.streams[name]
        assert got.frames.dtype == dtype and got.frames.shape == want.frames.shape
        assert torch.allclose(got.frames.float(), want.frames, atol=1e-2, rtol=0)
        assert got.source_indices.tolist() == want.source_indices.tolist()


def test_collector_grows_and_trims_its_buffer():
    """reserve()/put() with a wrong size estimate: too small grows (keeping what was written), far too large is
    trimmed to an exact allocation; repeats, padding and the value range come out right."""
    from kling_foley_core.video.resample import FrameCollector, TimestampPicker
    spec = FrameSpec(fps=25, size=(2, 3), output="symmetric", min_frames=12)
    for capacity in (2, 400):
        col = FrameCollector("sync", spec, TimestampPicker(Fraction(25), Fraction(0), None), capacity=capacity)
        for i in range(5):
            pic = torch.full((3, 2, 3), 50 * i, dtype=torch.uint8)
            col.put(col.reserve(2 if i == 3 else 1, i, Fraction(i, 25)), 2 if i == 3 else 1, pic)
        fs = col.finish(6, Fraction(0))
        assert fs.frames.shape == (12, 3, 2, 3) and fs.padded == 6
        assert fs.frames.untyped_storage().nbytes() <= 16 * 3 * 2 * 3 * 4  # no 400-row allocation kept alive
        want = [0, 50, 100, 150, 150, 200] + [200] * 6
        assert fs.source_indices.tolist() == [0, 1, 2, 3, 3, 4] + [4] * 6
        assert torch.allclose(fs.frames[:, 0, 0, 0], torch.tensor(want) / 127.5 - 1.0)


def test_picker_integer_arithmetic_matches_the_rational_rule():
    """advance() counts targets in integers; it must agree with ceil((until - start) * fps) on Fractions."""
    import random

    from kling_foley_core.video.resample import TimestampPicker
    rnd = random.Random(0)
    for _ in range(200):
        fps = Fraction(rnd.choice([8, 25, 24000, 30000, 12, 60]), rnd.choice([1, 1001, 7]))
        start = Fraction(rnd.randrange(0, 5000), rnd.choice([1, 1000, 1001, 30000]))
        picker = TimestampPicker(fps, start, None)
        t, k = Fraction(0), 0
        for _ in range(40):
            t += Fraction(rnd.randrange(1, 3000), rnd.choice([1000, 30000, 90000]))
            want = max(0, math.ceil((t - start) * fps))
            k += picker.advance(t)
            assert k == picker.k == max(0, want)  # times only grow, so the count is the rule's k_end
