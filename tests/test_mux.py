"""mux_audio / save_audio: stream-copied picture, audio length and sync, atomic writes, no clobbering."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from kling_foley_core import mux as mux_mod
from kling_foley_core.mux import (MuxError, OutputExistsError, mux_audio, provenance_tags, read_provenance,
                                  save_audio)
from kling_foley_core.video import VideoInputError
from video_clips import write_clip

SR = 44100


def _video_packets(path) -> list[tuple[int | None, int | None, bytes]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(s) if p.dts is not None]


def _video_packet_bytes(path) -> list[bytes]:
    return [b for _, _, b in _video_packets(path)]


def _decode_audio(path, index=0) -> tuple[np.ndarray, int, float]:
    """(C, T) float samples of audio track ``index``, its rate, and its first sample's time (s)."""
    with av.open(str(path)) as c:
        a = c.streams.audio[index]
        chunks, t0 = [], None
        for f in c.decode(a):
            if t0 is None:
                t0 = float(f.pts * f.time_base) if f.pts is not None else 0.0
            arr = f.to_ndarray()
            arr = arr.reshape(a.channels, -1) if f.format.is_planar else arr.reshape(-1, a.channels).T
            if np.issubdtype(arr.dtype, np.integer):  # s16/s32 -> [-1, 1)
                arr = arr.astype(np.float64) / float(np.iinfo(arr.dtype).max + 1)
            chunks.append(arr)
        return np.concatenate(chunks, axis=1).astype(np.float32), a.rate, t0


def _click_track(seconds: float, click_at: float, sr: int = SR) -> torch.Tensor:
    x = torch.zeros(2, int(seconds * sr))
    i = int(click_at * sr)
    x[:, i:i + 32] = 0.9  # a short pulse: easy to find after lossy coding
    return x


def test_mp4_round_trip_copies_picture_and_syncs_audio(tmp_path):
    src = write_clip(tmp_path / "src.mp4", n=50, rate=Fraction(30000, 1001), size=(64, 48))
    out = tmp_path / "out.mp4"
    res = mux_audio(src, _click_track(3.0, 1.0), SR, out)
    # the picture is copied packet for packet: identical bytes and timestamps
    assert _video_packets(out) == _video_packets(src)
    video_dur = 50 * 1001 / 30000
    assert res.video_duration == pytest.approx(video_dur, abs=1e-6)
    assert res.audio_codec == "aac" and res.sample_rate == SR
    assert res.audio_samples == round(video_dur * SR)  # trimmed to the picture
    wave, rate, t0 = _decode_audio(out)
    assert rate == SR and wave.shape[0] == 2
    assert abs(wave.shape[1] - video_dur * SR) <= 1024  # within one AAC frame (encoder tail padding)
    # sync: the pulse generated for t = 1.0 s is heard at 1.0 s (AAC priming is compensated by the container)
    peak = t0 + int(np.argmax(np.abs(wave[0]))) / SR
    assert peak == pytest.approx(1.0, abs=0.003)
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "aac"


def test_mkv_flac_keeps_original_track_and_pads(tmp_path):
    src = write_clip(tmp_path / "src.mp4", n=40, rate=25, size=(32, 24), audio_seconds=1.6)
    gen = (0.25 * torch.sin(torch.arange(SR) / SR * 2 * torch.pi * 330)).repeat(2, 1)  # 1.0 s: shorter than 1.6 s
    out = tmp_path / "out.mkv"
    res = mux_audio(src, gen, SR, out, keep_original_audio=True)
    assert res.kept_original_audio and res.audio_codec == "flac"
    assert _video_packet_bytes(out) == _video_packet_bytes(src)
    with av.open(str(out)) as c:
        assert [s.codec_context.name for s in c.streams.audio] == ["flac", "aac"]
        assert c.streams.audio[0].metadata.get("title") == "Kling-Foley"
    wave, rate, _ = _decode_audio(out, 0)
    assert wave.shape == (2, round(1.6 * SR))  # padded with silence to the video's 1.6 s
    np.testing.assert_allclose(wave[:, :SR], gen.numpy(), atol=1e-4)  # FLAC is lossless (24-bit)
    assert np.abs(wave[:, SR:]).max() == 0.0
    orig, orig_rate, _ = _decode_audio(out, 1)
    assert orig_rate == 16000 and orig.shape[1] >= 1.6 * 16000 - 1024


def test_trimmed_span_places_audio_and_cuts_picture(tmp_path):
    src = write_clip(tmp_path / "src.mp4", n=50, rate=25, size=(32, 24))  # 2.0 s
    out = tmp_path / "out.mkv"
    res = mux_audio(src, _click_track(0.5, 0.1), SR, out, start=1.2)  # generated for a trim starting at 1.2 s
    assert res.video_duration == pytest.approx(0.8, abs=1e-6)
    wave, _, t0 = _decode_audio(out)
    assert wave.shape[1] == round(0.8 * SR)
    assert t0 + int(np.argmax(np.abs(wave[0]))) / SR == pytest.approx(0.1, abs=1e-3)


def test_opus_is_resampled_to_48k(tmp_path):
    src = write_clip(tmp_path / "src.mp4", n=25, rate=25, size=(32, 24))
    res = mux_audio(src, torch.zeros(1, SR), SR, tmp_path / "o.mkv", audio_codec="opus")  # Opus has no 44.1 kHz
    assert res.sample_rate == 48000 and res.audio_samples == 48000
    wave, rate, _ = _decode_audio(tmp_path / "o.mkv")
    assert rate == 48000 and wave.shape[0] == 1 and abs(wave.shape[1] - 48000) <= 960


def test_comfy_audio_batch_of_one_and_mono(tmp_path):
    src = write_clip(tmp_path / "src.mp4", n=10, rate=25, size=(32, 24))
    res = mux_audio(src, torch.zeros(1, 2, 1000), SR, tmp_path / "a.mov")  # ComfyUI AUDIO waveform (1, C, T)
    assert res.audio_samples == round(0.4 * SR)
    res = mux_audio(src, np.zeros(1000, np.float32), SR, tmp_path / "b.mov", audio_codec="pcm_s16le")
    assert _decode_audio(tmp_path / "b.mov")[0].shape == (1, round(0.4 * SR))


def test_no_overwrite_unless_asked(tmp_path):
    src = write_clip(tmp_path / "src.mp4", n=10, rate=25, size=(32, 24))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        mux_audio(src, torch.zeros(2, 100), SR, out)
    assert out.read_bytes() == b"precious"
    mux_audio(src, torch.zeros(2, 100), SR, out, overwrite=True)
    assert _video_packet_bytes(out) == _video_packet_bytes(src)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    src = write_clip(tmp_path / "src.mp4", n=25, rate=25, size=(32, 24))
    old = tmp_path / "old.mp4"
    old.write_bytes(b"old version")
    before = sorted(p.name for p in tmp_path.iterdir())

    def boom(self, out):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(mux_mod._AudioTrack, "finish", boom)  # fails after the picture has been written
    with pytest.raises(RuntimeError, match="simulated"):
        mux_audio(src, torch.zeros(2, SR), SR, tmp_path / "new.mp4")
    with pytest.raises(RuntimeError, match="simulated"):
        mux_audio(src, torch.zeros(2, SR), SR, old, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial or temporary file
    assert old.read_bytes() == b"old version"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(out="x.avi"), "extension"),
        (dict(out="x.mp4", audio_codec="flac_typo"), "audio_codec"),
        (dict(out="x.webm"), "cannot be stored"),
        (dict(audio=torch.full((2, 10), float("nan"))), "NaN"),
        (dict(audio=torch.zeros(3, 10)), "1 or 2 channels"),
        (dict(audio=torch.zeros(2, 2, 10)), "batch of 2"),
        (dict(sr=44100.5), "sample_rate"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    src = write_clip(tmp_path / "src.mp4", n=5, rate=25, size=(32, 24))
    out = tmp_path / kwargs.get("out", "o.mp4")
    with pytest.raises(MuxError, match=match) as e:
        mux_audio(src, kwargs.get("audio", torch.zeros(2, 100)), kwargs.get("sr", SR), out,
                  audio_codec=kwargs.get("audio_codec"))
    assert "\n" not in str(e.value)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_bad_input_video(tmp_path):
    txt = tmp_path / "notes.mp4"
    txt.write_text("not a video")
    with pytest.raises(VideoInputError, match="not a media file"):
        mux_audio(txt, torch.zeros(2, 100), SR, tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_save_audio_wav_flac(tmp_path):
    x = torch.rand(2, 4000) * 1.6 - 0.8
    p = save_audio(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    y, sr = sf.read(str(p), dtype="float32", always_2d=True)
    assert sr == 16000 and np.array_equal(y.T, x.numpy())
    p = save_audio(tmp_path / "a.flac", x[None], 16000)  # (1, C, T) accepted, PCM_24 by default
    y, _ = sf.read(str(p), dtype="float32", always_2d=True)
    np.testing.assert_allclose(y.T, x.numpy(), atol=2e-7)
    with pytest.raises(OutputExistsError):
        save_audio(tmp_path / "a.flac", x, 16000)
    with pytest.raises(MuxError, match="wav or .flac"):
        save_audio(tmp_path / "a.mp3", x, 16000)
    with pytest.raises(MuxError, match="subtype"):
        save_audio(tmp_path / "b.flac", x, 16000, subtype="FLOAT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.wav"]


PROVENANCE = {"model": "foley-tiny", "sampler": "euler", "steps": 25, "seed": 7, "cfg": 4.5, "watermark": True}


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".webm"])
def test_provenance_round_trip_in_videos(tmp_path, ext):
    src = write_clip(tmp_path / "src.mp4", n=10, rate=25, size=(32, 24))
    out = tmp_path / f"o{ext}"
    src = src if ext != ".webm" else write_clip(tmp_path / "src.webm", n=10, rate=25, size=(32, 24), codec="libvpx")
    mux_audio(src, torch.zeros(2, 100), SR, out, metadata=provenance_tags(PROVENANCE))
    assert read_provenance(out) == PROVENANCE
    assert read_provenance(src) == {}  # an untagged file


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_provenance_round_trip_in_audio_files(tmp_path, ext):
    p = save_audio(tmp_path / f"a{ext}", torch.zeros(2, 100), SR, metadata=provenance_tags(PROVENANCE))
    assert read_provenance(p) == PROVENANCE
    with pytest.raises(MuxError, match="cannot hold the tag"):
        save_audio(tmp_path / f"b{ext}", torch.zeros(2, 100), SR, metadata={"kling_foley": "x"})


def test_provenance_errors(tmp_path):
    with pytest.raises(MuxError, match="provenance: expected a dict"):
        provenance_tags({"steps": [25]})
    with pytest.raises(MuxError, match="NaN"):
        provenance_tags({"cfg": float("nan")})
    assert provenance_tags(None) == {}
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MuxError, match="not a media file"):
        read_provenance(tmp_path / "notes.txt")
    with pytest.raises(MuxError, match="not a file"):
        read_provenance(tmp_path)
