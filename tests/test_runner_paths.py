"""Output folder, filename_prefix checks, counters, atomic writes, model lookup, ComfyUI detection at call time."""
from __future__ import annotations

import sys
import types

import pytest

from kling_foley_core.runner import ModelNotFoundError, OutputPathError, check_interrupt, interrupt, paths
from kling_foley_core.runner.interrupt import clear_interrupt
from kling_foley_core.runner.progress import ProgressBar, reset_progress_hook, set_progress_hook


@pytest.fixture(autouse=True)
def _reset(monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    monkeypatch.delenv(paths.MODELS_ENV, raising=False)
    yield
    paths.set_output_directory(None)
    paths.set_models_directory(None)
    clear_interrupt()


def test_default_and_cli_output_directory(tmp_path):
    assert str(paths.get_output_directory()) == "output"
    paths.set_output_directory(tmp_path)
    assert paths.get_output_directory() == tmp_path


def test_counter_continues_after_highest_existing_file(tmp_path):
    paths.set_output_directory(tmp_path)
    first = paths.next_output_path("foley/take", "wav")
    assert first == tmp_path / "foley" / "take_00001.wav"
    (tmp_path / "foley" / "take_00007_.flac").write_bytes(b"")  # ComfyUI's own naming counts too
    (tmp_path / "foley" / "take_00003.mp4").write_bytes(b"")
    (tmp_path / "foley" / "takeover_00050.wav").write_bytes(b"")  # another stem: ignored
    assert paths.next_output_path("foley/take", ".wav") == tmp_path / "foley" / "take_00008.wav"


@pytest.mark.parametrize("prefix", ["../escape", "foley/../../x", "/etc/passwd", "C:/x", "", "foley/", "a/.."])
def test_prefix_that_leaves_the_output_folder_or_is_empty_is_refused(tmp_path, prefix):
    with pytest.raises(OutputPathError, match="filename_prefix"):
        paths.next_output_path(prefix, "wav", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_prefix_may_climb_inside_the_output_folder(tmp_path):
    assert paths.next_output_path("a/../b/take", "wav", tmp_path) == tmp_path / "b" / "take_00001.wav"


def test_date_variables_and_bad_extension(tmp_path):
    p = paths.next_output_path("%year%/x", "wav", tmp_path)
    assert p.parent.name.isdigit() and len(p.parent.name) == 4
    with pytest.raises(OutputPathError, match="extension"):
        paths.next_output_path("x", "w/av", tmp_path)


def test_ui_entry(tmp_path):
    paths.set_output_directory(tmp_path)
    p = paths.next_output_path("a/b/take", "wav")
    assert paths.output_ui_entry(p) == {"filename": "take_00001.wav", "subfolder": "a/b", "type": "output"}


def test_atomic_write_commits_only_on_success_and_never_overwrites(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with paths.atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
    with paths.atomic_write(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(OutputPathError, match="already exists"):
        with paths.atomic_write(target) as tmp:
            tmp.write_text("again")
    assert target.read_text() == "whole"


def test_comfy_output_directory_when_folder_paths_is_importable(tmp_path, monkeypatch):
    fp = types.ModuleType("folder_paths")
    fp.get_output_directory = lambda: str(tmp_path / "comfy_out")
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    paths.set_output_directory(tmp_path / "cli")  # ComfyUI wins when present
    assert paths.get_output_directory() == tmp_path / "comfy_out"


def test_model_lookup_headless_env_and_explicit(tmp_path, monkeypatch):
    (tmp_path / "m1" / "vae").mkdir(parents=True)
    (tmp_path / "m2" / "vae" / "sub").mkdir(parents=True)
    (tmp_path / "m2" / "vae" / "a.safetensors").write_bytes(b"")
    (tmp_path / "m2" / "vae" / "sub" / "b.pth").write_bytes(b"")
    (tmp_path / "m2" / "vae" / "notes.txt").write_bytes(b"")
    monkeypatch.setenv(paths.MODELS_ENV, f"{tmp_path / 'm1'}:{tmp_path / 'm2'}".replace(":", __import__("os").pathsep))
    assert paths.find_model("vae", "a.safetensors") == tmp_path / "m2" / "vae" / "a.safetensors"
    assert paths.list_models("vae") == ["a.safetensors", "sub/b.pth"]
    with pytest.raises(ModelNotFoundError) as exc:
        paths.find_model("vae", "missing.safetensors")
    msg = str(exc.value)
    assert "'missing.safetensors'" in msg and str(tmp_path / "m1" / "vae") in msg and str(tmp_path / "m2" / "vae") in msg
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, FileNotFoundError)
    paths.set_models_directory(tmp_path / "m1")  # --models-dir beats the env var
    with pytest.raises(ModelNotFoundError, match=r"expected it in .*m1/vae \(set KLING_FOLEY_MODELS"):
        paths.find_model("vae", "a.safetensors")
    with pytest.raises(ModelNotFoundError, match="must not contain"):
        paths.find_model("vae", "../m2/vae/a.safetensors")


def test_model_lookup_inside_comfy(tmp_path, monkeypatch):
    (tmp_path / "models" / "kling_foley" / "mmdit").mkdir(parents=True)
    (tmp_path / "extra" / "mmdit").mkdir(parents=True)
    (tmp_path / "extra" / "mmdit" / "x.safetensors").write_bytes(b"")
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {"kling_foley": ([str(tmp_path / "extra")], set())}
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    assert paths.model_folders("mmdit") == [tmp_path / "models" / "kling_foley" / "mmdit", tmp_path / "extra" / "mmdit"]
    assert paths.find_model("mmdit", "x.safetensors") == tmp_path / "extra" / "mmdit" / "x.safetensors"


def test_progress_bar_uses_comfy_when_importable_at_call_time(monkeypatch):
    updates = []

    class FakeComfyBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total))

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = FakeComfyBar
    comfy.utils = utils
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    seen = []
    token = set_progress_hook(lambda nid, v, t: seen.append((v, t)))
    try:
        with ProgressBar(3) as bar:
            bar.update(1)
            bar.update(2)
    finally:
        reset_progress_hook(token)
    assert updates == [(1, 3), (3, 3)] and seen == [(1, 3), (3, 3)]
    assert bar._tqdm is None


def test_progress_bar_headless_uses_tqdm_and_checks_interrupt(monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy", None)  # makes `import comfy.utils` fail
    bar = ProgressBar(4, desc="steps")
    assert bar._tqdm is not None
    bar.update(1)
    interrupt()
    with pytest.raises(InterruptedError):
        bar.update(1)
    bar.close()


def test_check_interrupt_defers_to_comfy_inside_comfy(monkeypatch):
    class InterruptProcessingException(Exception):
        pass

    mm = types.ModuleType("comfy.model_management")
    state = {"on": False}

    def throw():
        if state["on"]:
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    check_interrupt()  # nothing requested
    state["on"] = True
    with pytest.raises(InterruptProcessingException):
        check_interrupt()


def test_save_output_takes_the_next_name_when_another_process_grabbed_it(tmp_path):
    def write(tmp):
        tmp.write_text("mine")
        (tmp_path / "take_00001.wav").write_text("other process")  # appears while we write

    p = paths.save_output("take", "wav", write, tmp_path)
    assert p == tmp_path / "take_00002.wav" and p.read_text() == "mine"
    assert (tmp_path / "take_00001.wav").read_text() == "other process"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["take_00001.wav", "take_00002.wav"]

    def failing(tmp):
        tmp.write_text("half")
        interrupt()
        check_interrupt()

    with pytest.raises(InterruptedError):
        paths.save_output("take", "wav", failing, tmp_path)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["take_00001.wav", "take_00002.wav"]


def test_outputs_get_the_usual_permissions_not_owner_only(tmp_path):
    import os
    import stat

    from kling_foley_core.runner.paths import atomic_write, save_output

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.wav") as tmp:
            tmp.write_bytes(b"x")
        b = save_output("clip", "wav", lambda p: p.write_bytes(b"y"), output_dir=tmp_path)
    finally:
        os.umask(mask)
    for path in (tmp_path / "a.wav", b):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_model_folder_is_one_list_entry_and_a_file_inside_it_stands_for_the_folder(tmp_path):
    (tmp_path / "vae" / "tiny" / "nested").mkdir(parents=True)
    (tmp_path / "vae" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "vae" / "tiny" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "vae" / "tiny" / "nested" / "other.pth").write_bytes(b"")
    (tmp_path / "vae" / "loose").mkdir()
    (tmp_path / "vae" / "loose" / "v1-16.pth").write_bytes(b"")
    paths.set_models_directory(tmp_path)
    assert paths.list_models("vae") == ["loose/v1-16.pth", "tiny"]
    assert paths.find_model("vae", "tiny/diffusion_pytorch_model.safetensors") == tmp_path / "vae" / "tiny"
    assert paths.find_model("vae", "loose/v1-16.pth") == tmp_path / "vae" / "loose" / "v1-16.pth"
