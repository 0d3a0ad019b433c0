"""The shipped workflows: UI format laid out for reading, every node of the pack used, every file valid."""
import json
from pathlib import Path

import pytest

from kling_foley_core.cli import load_node_classes
from kling_foley_core.runner import WorkflowLoadError, collect_errors, load_workflow
from kling_foley_core.runner.ui_format import STAGES, api_to_ui, main as ui_format_main

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
CLASSES = load_node_classes()


class LoadVideo:
    """ComfyUI's core Load Video, as it declares itself (for the workflows that start from ComfyUI's VIDEO)."""

    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": (["input.mp4"], {"video_upload": True})}}


class GetVideoComponents:
    """ComfyUI's core Extract frame: a VIDEO's frames, audio and frame rate."""

    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",)}}


COMFY_CORE = {"LoadVideo": LoadVideo, "GetVideoComponents": GetVideoComponents}


def _ui(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_node_of_the_pack_appears_in_a_shipped_workflow():
    used = {node["type"] for path in WORKFLOWS for node in _ui(path)["nodes"]}
    assert sorted(set(CLASSES) - used) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_shipped_workflow_is_laid_out_with_groups_and_a_note(path):
    ui = _ui(path)
    graph_nodes = [n for n in ui["nodes"] if n["type"] != "Note"]
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 100
    assert [g["title"] for g in ui["groups"]] == [s for s in STAGES if any(g["title"] == s for g in ui["groups"])]
    boxes = [(n["pos"][0], n["pos"][1], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in ui["nodes"]]
    for i, a in enumerate(boxes):  # no two nodes overlap
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (path.name, a, b)
    for node in graph_nodes:  # every node sits inside exactly one group
        x, y = node["pos"]
        inside = [g for g in ui["groups"] if g["bounding"][0] <= x <= g["bounding"][0] + g["bounding"][2]
                  and g["bounding"][1] <= y <= g["bounding"][1] + g["bounding"][3]]
        assert len(inside) == 1, (path.name, node["id"], node["type"])
    for link in ui["links"]:  # wires run left to right
        src = next(n for n in ui["nodes"] if n["id"] == link[1])
        dst = next(n for n in ui["nodes"] if n["id"] == link[3])
        assert src["pos"][0] + src["size"][0] < dst["pos"][0], (path.name, link)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_shipped_workflow_validates(path, tmp_path):
    from kling_foley_core.runner import paths

    from test_nodes import _stage_model_files

    classes = {**CLASSES, **COMFY_CORE} if '"LoadVideo"' in path.read_text() else CLASSES
    prompt = load_workflow(path, classes)
    _stage_model_files(prompt, tmp_path / "models")
    paths.set_models_directory(tmp_path / "models")
    try:
        assert collect_errors(prompt, classes) == []
    finally:
        paths.set_models_directory(None)


def test_comfyui_only_workflows_name_the_core_node_headless():
    path = next(p for p in WORKFLOWS if p.stem == "video_to_audio_from_comfy_video")
    errors = collect_errors(load_workflow(path, CLASSES), CLASSES)
    assert any("LoadVideo" in str(e) for e in errors)


def _api(path: Path) -> dict:
    return load_workflow(path, {**CLASSES, **COMFY_CORE})


@pytest.mark.parametrize("name", ["video_to_audio_tiny", "sampler_swap_tiny"])
def test_converter_round_trips_through_the_runner(name):
    """API → UI (api_to_ui) → API (the runner's reader) gives back the same prompt."""
    prompt = _api(next(p for p in WORKFLOWS if p.stem == name))
    prompt["12"]["inputs"]["seed"] = 1234
    again = load_workflow(api_to_ui(prompt, CLASSES, note="n"), CLASSES)
    assert again == prompt


def test_a_ui_save_from_comfyui_with_the_upload_value_reads_headless():
    """ComfyUI saves Load Video's upload button value after the path; the headless reader skips it."""
    prompt = _api(WORKFLOWS[0].parent / "video_to_audio_tiny.json")
    prompt["1"]["inputs"].update(start=1.5, length=2.0)
    ui = api_to_ui(prompt, CLASSES)
    load = next(n for n in ui["nodes"] if n["type"] == "KlingFoleyLoadVideo")
    assert load["widgets_values"] == ["input.mp4", "image", 1.5, 2.0]
    assert load_workflow(ui, CLASSES)["1"]["inputs"] == {"video_path": "input.mp4", "start": 1.5, "length": 2.0}


def test_the_converter_command_writes_a_ui_file_and_relays_out_keeping_the_note(tmp_path):
    api = tmp_path / "wf.json"
    api.write_text(json.dumps(_api(WORKFLOWS[0].parent / "text_to_audio_tiny.json")))
    assert ui_format_main([str(api), str(tmp_path / "ui.json"), "--note", "Rain on a roof."]) == 0
    ui = json.loads((tmp_path / "ui.json").read_text())
    assert {g["title"] for g in ui["groups"]} == {"Load", "Encode", "Sample", "Decode & save"}
    assert ui_format_main([str(tmp_path / "ui.json"), str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert [n["widgets_values"] for n in again["nodes"] if n["type"] == "Note"] == [["Rain on a roof."]]
    assert load_workflow(again, CLASSES) == load_workflow(ui, CLASSES) == load_workflow(api, CLASSES)


def test_the_converter_names_a_link_to_a_missing_node(tmp_path, capsys):
    api = tmp_path / "wf.json"
    api.write_text(json.dumps({"1": {"class_type": "KlingFoleyVAEDecode", "inputs": {"vae": ["9", 0],
                                                                                   "latent": ["9", 1]}}}))
    assert ui_format_main([str(api)]) == 2
    assert "reads node 9, which is not in the workflow" in capsys.readouterr().err
    with pytest.raises(WorkflowLoadError):
        load_workflow(tmp_path / "missing.json", CLASSES)
