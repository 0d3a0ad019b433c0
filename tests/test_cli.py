"""The kling-foley CLI: exit codes, one-line error messages, run / --validate-only / batch, process splitting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kling_foley_core import cli
from kling_foley_core.runner import paths
from test_runner_nodes import CALLS, NODE_CLASS_MAPPINGS as NODES, api_workflow

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    CALLS.clear()
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    yield
    paths.set_output_directory(None)
    paths.set_models_directory(None)


def _write(tmp_path, wf, name="wf.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(wf))
    return str(p)


def test_run_writes_output_and_reports_it(tmp_path, capsys):
    wf = _write(tmp_path, api_workflow("foley/take"))
    out = tmp_path / "out"
    code = cli.main(["run", wf, "--output-dir", str(out), "--set", "Sampler.seed=5"], node_classes=NODES)
    assert code == 0
    assert (out / "foley" / "take_00001.txt").read_text() == '[86.0, "euler"]\n'
    text = capsys.readouterr().out
    assert "ran 4 node(s), 0 cached" in text and f"saved {out / 'foley' / 'take_00001.txt'}" in text


def test_validate_only_prints_api_prompt_and_runs_nothing(tmp_path, capsys):
    from test_runner_workflow import ui_graph

    wf = _write(tmp_path, ui_graph())
    code = cli.main(["run", wf, "--validate-only", "--set", "3.steps=9", "--output-dir", str(tmp_path / "o")],
                    node_classes=NODES)
    assert code == 0 and not CALLS
    cap = capsys.readouterr()
    prompt = json.loads(cap.out)
    assert prompt["3"]["inputs"]["steps"] == 9 and prompt["3"]["inputs"]["seed"] == 123
    assert "workflow is valid (4 nodes)" in cap.err
    assert not (tmp_path / "o").exists()


def test_validation_errors_exit_2_with_one_message(tmp_path, capsys):
    wf = api_workflow()
    wf["3"]["inputs"]["sampler"] = "dpm"
    del wf["2"]["inputs"]["text"]
    code = cli.main(["run", _write(tmp_path, wf), "--output-dir", str(tmp_path)], node_classes=NODES)
    assert code == 2 and not CALLS
    err = capsys.readouterr().err
    assert err.startswith("error: workflow failed validation (2 errors):")
    assert "Traceback" not in err


@pytest.mark.parametrize("argv_tail,needle", [
    (["--set", "3.sede=1"], "has no input 'sede'"),
    (["--set", "seed"], "must look like NODE.input=value"),
    (["--set", "3.steps=0"], "value 0 is smaller than the minimum 1"),
])
def test_bad_overrides_exit_2(tmp_path, capsys, argv_tail, needle):
    code = cli.main(["run", _write(tmp_path, api_workflow()), *argv_tail], node_classes=NODES)
    assert code == 2 and needle in capsys.readouterr().err


def test_missing_workflow_file(capsys):
    assert cli.main(["run", "no/such/workflow.json"], node_classes=NODES) == 2
    assert capsys.readouterr().err.strip() == "error: workflow file no/such/workflow.json does not exist"


def test_node_failures_exit_codes(tmp_path, capsys):
    wf = api_workflow()
    wf["5"] = {"class_type": "TFail", "inputs": {"x": ["2", 0], "how": "value"}}
    path = _write(tmp_path, wf)
    assert cli.main(["run", path, "--output-node", "5"], node_classes=NODES) == 2  # a node's ValueError: bad input
    assert "node 5 (TFail) failed: ValueError" in capsys.readouterr().err
    wf["5"]["inputs"]["how"] = "runtime"
    path = _write(tmp_path, wf)
    assert cli.main(["run", path, "--output-node", "5"], node_classes=NODES) == 1  # a real failure
    assert "node 5 (TFail) failed: RuntimeError: boom" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    wf = api_workflow()
    wf["5"] = {"class_type": "TFail", "inputs": {"x": ["2", 0], "how": "runtime"}}
    from kling_foley_core.runner import NodeExecutionError

    with pytest.raises(NodeExecutionError):
        cli.main(["--debug", "run", _write(tmp_path, wf), "--output-node", "5"], node_classes=NODES)


def test_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    from kling_foley_core.runner import interrupt
    from test_runner_nodes import TSampler

    def sample(self, *a, **k):
        interrupt()
        from kling_foley_core.runner import check_interrupt
        check_interrupt()

    monkeypatch.setattr(TSampler, "sample", sample)
    code = cli.main(["run", _write(tmp_path, api_workflow()), "--output-dir", str(tmp_path / "o")], node_classes=NODES)
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert CALLS["TSave"] == 0 and not (tmp_path / "o").exists()  # the save node never started


def _videos(tmp_path, n=5) -> Path:
    d = tmp_path / "videos"
    d.mkdir()
    for i in range(n):
        (d / f"clip{i}.mp4").write_bytes(b"")
    (d / "readme.txt").write_text("not a video")
    return d


def test_batch_runs_once_per_video_and_reuses_the_cache(tmp_path, capsys):
    videos = _videos(tmp_path, 3)
    out = tmp_path / "out"
    code = cli.main(["batch", _write(tmp_path, api_workflow()), "--inputs", str(videos), "--set-input",
                     "TEncode.text", "--name-input", "4.filename_prefix", "--output-dir", str(out)], node_classes=NODES)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip0_00001.txt", "clip1_00001.txt", "clip2_00001.txt"]
    assert CALLS["TLoader"] == 1 and CALLS["TEncode"] == 3  # the loader ran once for the whole batch
    assert "done: 3 of 3 file(s) succeeded" in capsys.readouterr().out


def test_batch_errors(tmp_path, capsys):
    wf = _write(tmp_path, api_workflow())
    assert cli.main(["batch", wf, "--inputs", str(tmp_path / "nope"), "--set-input", "2.text"], node_classes=NODES) == 2
    assert "is not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["batch", wf, "--inputs", str(empty), "--set-input", "2.text"], node_classes=NODES) == 2
    assert "holds no files with extensions .mp4" in capsys.readouterr().err
    videos = _videos(tmp_path, 1)
    assert cli.main(["batch", wf, "--inputs", str(videos), "--set-input", "2.txt"], node_classes=NODES) == 2
    assert "has no input 'txt'" in capsys.readouterr().err


@pytest.mark.parametrize("world,n", [(2, 5), (3, 7), (4, 2)])
def test_split_between_processes_covers_every_file_once(monkeypatch, world, n):
    items = list(range(n))
    shares = []
    monkeypatch.setenv("WORLD_SIZE", str(world))
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(cli.split_for_this_process(items))
    assert [x for s in shares for x in s] == items  # contiguous, in order, nothing twice or missing
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert len(shares[0]) >= len(shares[-1])  # the first ranks take the extras, as accelerate does


def test_batch_with_rank_env_runs_only_its_share(tmp_path, monkeypatch):
    videos = _videos(tmp_path, 5)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "out"
    assert cli.main(["batch", _write(tmp_path, api_workflow()), "--inputs", str(videos), "--set-input", "2.text",
                     "--name-input", "4.filename_prefix", "--output-dir", str(out)], node_classes=NODES) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip3_00001.txt", "clip4_00001.txt"]


def test_subcommand_registry_is_extensible(capsys):
    def add(p):
        p.add_argument("--n", type=int, default=1)

    def handler(args, node_classes=None):
        print(f"hello {args.n}")
        return 0

    cli.register_command("hello", "test command", add, handler)
    try:
        assert cli.main(["hello", "--n", "3"]) == 0
        assert capsys.readouterr().out == "hello 3\n"
    finally:
        del cli.COMMANDS["hello"]


def test_console_script_error_has_no_traceback(tmp_path):
    """Out of process: what a user sees, with the test nodes loaded through --node-module."""
    wf = api_workflow()
    wf["3"]["inputs"]["steps"] = 1000
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "kling_foley_core.cli", "run", _write(tmp_path, wf),
                           "--node-module", "test_runner_nodes"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: workflow failed validation: node 3 (TSampler) input 'steps'")
    assert "value 1000 is bigger than the maximum 100" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("accel_procs", [2, 1])
def test_split_uses_accelerate_only_when_it_agrees_with_the_launcher(monkeypatch, accel_procs):
    import contextlib

    import accelerate

    used = []

    class FakeState:
        num_processes = accel_procs

        @contextlib.contextmanager
        def split_between_processes(self, items):
            used.append(True)
            yield items[:1]  # recognisably different from the env arithmetic

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    share = cli.split_for_this_process(list(range(5)))
    if accel_procs == 2:
        assert used and share == [0]
    else:  # CPU torchrun without MPI: accelerate sees 1 process, so RANK/WORLD_SIZE decide
        assert not used and share == [3, 4]


# ------------------------------------------------------------------------------------------------ checked up front
@pytest.mark.parametrize("where", ["file", "under_file"])
def test_unusable_output_dir_is_found_before_any_node_runs(tmp_path, capsys, where):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    code = cli.main(["run", _write(tmp_path, api_workflow()), "--output-dir", str(out)], node_classes=NODES)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not CALLS  # was: the whole graph ran, then the save failed
    assert err.startswith(f"error: --output-dir '{out}'") and "is a file" in err and "\n" not in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_found_before_any_node_runs(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = cli.main(["run", _write(tmp_path, api_workflow()), "--output-dir", str(ro / "x")], node_classes=NODES)
    finally:
        ro.chmod(0o755)
    assert code == 2 and not CALLS and "is not writable" in capsys.readouterr().err


def test_nan_on_the_command_line_exits_2(tmp_path, capsys):
    code = cli.main(["run", _write(tmp_path, api_workflow()), "--set", "Sampler.cfg=NaN"], node_classes=NODES)
    assert code == 2 and not CALLS
    assert "node 3 (TSampler) input 'cfg': expected a finite number, got nan" in capsys.readouterr().err
    for flag in ("--cfg", "--start", "--length"):
        assert cli.main(["generate", "clip.mp4", flag, "nan"]) == 2
        err = capsys.readouterr().err  # one line naming the command and the option, no usage dump
        assert f"argument {flag}: expected a finite number, got 'nan'" in err and err.count("\n") == 1


def _pack_run(tmp_path, video, workflow="video_to_audio_tiny", *extra) -> int:
    """`run --validate-only` of a shipped workflow (the pack's real nodes) on ``video``."""
    wf = HERE.parent / "workflows" / f"{workflow}.json"
    return cli.main(["run", str(wf), "--validate-only", "--output-dir", str(tmp_path / "out"),
                     "--set", f"Load Video.video_path={video}", *extra])


def test_validate_only_says_the_input_video_is_missing(tmp_path, capsys):
    code = _pack_run(tmp_path, tmp_path / "gone.mp4")
    err = capsys.readouterr().err.strip()
    assert code == 2  # was: "workflow is valid", then a failure at run time
    assert "Load Video" in err or "KlingFoleyLoadVideo" in err
    assert "gone.mp4" in err and "file not found" in err and "\n" not in err


def test_a_clip_too_short_fails_validation_and_none_is_too_long(tmp_path, capsys):
    from video_clips import write_clip

    short = write_clip(tmp_path / "short.mp4", n=1, rate=25, size=(16, 16))  # 0.04 s
    code = _pack_run(tmp_path, short)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "0.04 s, shorter than one sync window (0.64 s" in err and "\n" not in err
    long = write_clip(tmp_path / "long.mp4", n=40, rate=1, size=(16, 16))  # 40 s; the default model runs ≤ 10 s
    assert _pack_run(tmp_path, long, "video_to_audio_default") == 0  # was refused: now generated in windows
    capsys.readouterr()
    code = _pack_run(tmp_path, long, "video_to_audio_default", "--set", "Sampler.window_seconds=20")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "window_seconds=20 is longer than the model of node" in err and "(10 s)" in err
    assert "\n" not in err


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.mkdir(), "is a directory, not a video file"),
    (lambda p: (p.symlink_to(p.with_name("b.mp4")), p.with_name("b.mp4").symlink_to(p)), "symbolic link loop"),
])
def test_generate_says_what_the_path_is(tmp_path, capsys, make, needle):
    path = tmp_path / "a.mp4"
    make(path)
    assert cli.main(["generate", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "does not exist" not in err and "\n" not in err


def test_generate_with_a_still_image_exits_2_naming_it(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    png = tmp_path / "frame.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    code = cli.main(["generate", str(png), "--workflow", "video_to_audio_tiny", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is a still image (PNG), not a video" in err and "\n" not in err  # was: TypeError, exit 1


@pytest.mark.parametrize("duration,extra,needle", [
    (0.3, [], "duration=0.3 s is shorter than one sync window"),
    (600, [], None),  # any length: generated in windows
    (60, ["KlingFoleySampler.overlap_seconds=6"], "overlap_seconds=6 must be between 0.64 s"),
])
def test_literal_duration_is_checked_with_its_window_plan(tmp_path, capsys, duration, extra, needle):
    wf = HERE.parent / "workflows" / "text_to_audio_tiny.json"
    sets = [a for kv in [f"KlingFoleyConditioning.duration={duration}", *extra] for a in ("--set", kv)]
    code = cli.main(["run", str(wf), "--validate-only", "--output-dir", str(tmp_path / "out"), *sets])
    err = capsys.readouterr().err.strip()
    if needle is None:
        assert code == 0
    else:
        assert code == 2 and needle in err and "\n" not in err  # was: valid, then a failure at the Sampler
