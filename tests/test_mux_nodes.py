"""The Mux Video and Save Audio nodes: container "auto", the trimmed span, provenance tags."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import kling_foley_nodes as pack
from kling_foley_core.mux import read_provenance
from kling_foley_core.runner import paths
from kling_foley_nodes.video import FoleyVideo
from mux_clips import cfr_times, decoded, picture_span, write_input

PROVENANCE = {"model": "foley-tiny", "steps": 25, "seed": 3, "cfg": 4.5, "watermark": True}


@pytest.fixture
def output_dir(tmp_path):
    paths.set_output_directory(tmp_path / "out")
    yield tmp_path / "out"
    paths.set_output_directory(None)


def _audio(seconds: float, sr: int = 16000) -> dict:
    return {"waveform": torch.zeros(1, 2, int(seconds * sr)), "sample_rate": sr, "provenance": PROVENANCE}


def test_mux_node_auto_container_trims_and_tags(tmp_path, output_dir, caplog):
    caplog.set_level("INFO", logger="kling_foley")
    mux = pack.NODE_CLASS_MAPPINGS["KlingFoleyMuxVideo"]
    assert "auto" in mux.INPUT_TYPES()["required"]["container"][0]
    src = write_input(tmp_path / "old.avi", times_ms=cfr_times(50), codec="cinepak", time_base=Fraction(1, 25))
    video = FoleyVideo(path=str(src), start=0.4, duration=1.0)
    out = mux().mux(video, _audio(1.0), "take", container="auto")["result"][0]
    assert out.endswith("take_00001.mov")  # mp4 cannot hold Cinepak: decided by the codec, not at the end
    a, b = picture_span(out)
    assert b - a == 1 and [i for _, i in decoded(out)] == list(range(10, 35))
    assert read_provenance(out) == PROVENANCE
    wrote = [r.getMessage() for r in caplog.records if "wrote" in r.getMessage()]
    assert wrote and "take_00001.mov" in wrote[-1] and "partial" not in wrote[-1]  # the final name, not the temp
    with pytest.raises(ValueError, match="Kling-Foley Mux Video: container: the picture codec 'cinepak'"):
        mux().mux(video, _audio(1.0), "take", container="mp4")
    out = mux().mux(video, _audio(1.0), "take", container="mp4", reencode_picture=True)["result"][0]
    assert out.endswith("take_00002.mp4") and len(decoded(out)) == 25


def test_save_audio_node_tags_provenance(output_dir):
    out = pack.NODE_CLASS_MAPPINGS["KlingFoleySaveAudio"]().save(_audio(0.1), "snd", "wav")
    entry = out["ui"]["audio"][0]
    assert read_provenance(output_dir / entry["subfolder"] / entry["filename"]) == PROVENANCE
