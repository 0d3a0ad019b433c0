"""The shipped graphs on clips longer than one window: the Sampler windows them itself (tiny random stacks)."""
from pathlib import Path

import av
import pytest

import kling_foley_nodes as pack
from kling_foley_core.runner import ProcessingInterrupted, interrupt, paths
from kling_foley_core.runner.executor import WorkflowRunner
from kling_foley_core.runner.workflow import load_workflow
from video_clips import write_clip

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _run(tmp_path, workflow, clip, window, *, progress=None, sampler="12"):
    prompt = load_workflow(WORKFLOWS / workflow, pack.NODE_CLASS_MAPPINGS)
    prompt["1"]["inputs"]["video_path"] = str(clip)
    prompt["11"]["inputs"]["steps"] = 2
    prompt[sampler]["inputs"].update(window_seconds=window, overlap_seconds=0.64)
    if "16" in prompt:
        prompt["16"]["inputs"]["griffin_lim_iters"] = 2  # the vocoder is not under test
    paths.set_output_directory(tmp_path / "out")
    try:
        return WorkflowRunner(pack.NODE_CLASS_MAPPINGS).run(prompt, progress=progress)
    finally:
        paths.set_output_directory(None)


def _audio_seconds(path) -> float:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return float(a.duration * a.time_base)


def test_tiny_stack_writes_a_long_clip_in_windows_with_one_progress_bar(tmp_path, monkeypatch):
    from kling_foley_core import longform

    monkeypatch.setattr(longform, "STREAM_CHUNK_SECONDS", 8.0)  # the encoders stream this 10-s clip in 2 chunks
    clip = write_clip(tmp_path / "long.mp4", n=25 * 10, rate=25, size=(32, 24), gop=50)
    seen = []
    result = _run(tmp_path, "video_to_audio_tiny.json", clip, 2.0, progress=lambda nid, v, t: seen.append((nid, v, t)))
    assert abs(_audio_seconds(result.output("18")) - 10.0) < 0.05
    sampler = [(v, t) for nid, v, t in seen if nid == "12"]
    windows = len(longform.plan_windows(10.0, 2.0, 0.64))
    assert windows == 8
    assert sampler[-1] == (2 * windows, 2 * windows) and len(sampler) == 2 * windows
    assert any(nid == "5" for nid, _, _ in seen) and any(nid == "6" for nid, _, _ in seen)  # encoders stream


def test_hunyuan_tiny_graph_runs_in_windows(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=100, rate=25, size=(48, 32))  # 4 s in 1.6-s windows
    result = _run(tmp_path, "video_to_audio_hunyuan_tiny.json", clip, 1.6)
    assert abs(_audio_seconds(result.output("18")) - 4.0) < 0.05


def test_interrupt_in_a_later_window_leaves_no_file(tmp_path):
    clip = write_clip(tmp_path / "long.mp4", n=25 * 6, rate=25, size=(32, 24))

    def hook(nid, v, total):
        if nid == "12" and v == 5:  # window 3 of 4 (2 steps per window)
            interrupt()

    with pytest.raises(ProcessingInterrupted):
        _run(tmp_path, "video_to_audio_tiny.json", clip, 2.0, progress=hook)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    from kling_foley_core.runner.interrupt import is_interrupted

    assert not is_interrupted()  # the stop was served; work started outside the runner is not cut short


def test_bad_window_inputs_are_one_line_sampler_errors(tmp_path):
    from kling_foley_core.generation import FoleyConditions
    from kling_foley_nodes.common import NodeInputError, tiny_components

    model = tiny_components()["transformer"]
    with pytest.raises(NodeInputError, match=r"Kling-Foley Sampler: overlap_seconds=5 must be between") as e:
        pack.NODE_CLASS_MAPPINGS["KlingFoleySampler"]().sample(model, FoleyConditions(duration=30.0), 0, 1.0,
                                                               window_seconds=8.0, overlap_seconds=5.0)
    assert "\n" not in str(e.value)


def test_a_video_whose_copy_cannot_fit_on_disk_is_refused_up_front(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    from kling_foley_core import cli

    clip = write_clip(tmp_path / "in.mp4", n=50, rate=25, size=(32, 24))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))  # 1 kB free
    code = cli.main(["run", str(WORKFLOWS / "video_to_audio_tiny.json"), "--validate-only", "--output-dir",
                     str(tmp_path / "out"), "--set", f"Load Video.video_path={clip}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "its copy with the new soundtrack needs about" in err and "GB free" in err
    assert "\n" not in err


def test_vocode_node_reports_a_long_clips_chunks_and_stops_between_them(monkeypatch):
    import torch

    import kling_foley_core.models.vocoder_griffinlim as gl
    from kling_foley_core.runner.progress import reset_progress_hook, set_progress_hook

    monkeypatch.setattr(gl, "CHUNK_SECONDS", 1.5)
    monkeypatch.setattr(gl, "OVERLAP_SECONDS", 0.25)
    node = pack.NODE_CLASS_MAPPINGS["KlingFoleyVocode"]()
    mel = {"mel": torch.full((1, 2, 80, 375), -3.0), "duration": 6.0}  # 6 s: 5 chunks
    vocoder = gl.GriffinLimVocoder("16k", n_iter=2)
    seen = []
    token = set_progress_hook(lambda nid, v, total: seen.append((v, total)))
    try:
        (audio,) = node.vocode(vocoder, mel, watermark=False)
        assert audio["waveform"].shape == (1, 2, 96000)
        assert seen[-5:] == [(k, 5) for k in range(1, 6)]

        def stop(nid, v, total):
            if v == 2:
                interrupt()
        reset_progress_hook(token)
        token = set_progress_hook(stop)
        with pytest.raises(ProcessingInterrupted):
            node.vocode(vocoder, mel, watermark=False)
    finally:
        reset_progress_hook(token)
        from kling_foley_core.runner.interrupt import clear_interrupt

        clear_interrupt()
