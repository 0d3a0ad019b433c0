"""The node pack: metadata every ComfyUI user relies on, the shipped workflows, and a headless run."""
import json
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

import kling_foley_nodes as pack
from kling_foley_core.runner.executor import WorkflowRunner
from kling_foley_core.runner.workflow import load_workflow
from kling_foley_core.runner.validation import validate_prompt
from video_clips import write_clip

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
# Workflows that start from ComfyUI's own Load Video run only inside ComfyUI (test_workflows_shipped validates them).
HEADLESS_WORKFLOWS = [p for p in WORKFLOWS if '"LoadVideo"' not in p.read_text()]


def test_every_node_is_prefixed_described_and_every_input_has_a_tooltip():
    assert len(pack.NODE_CLASS_MAPPINGS) >= 20
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name.startswith("KlingFoley"), name
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("audio/Kling-Foley"), name
        assert name in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert callable(getattr(cls, cls.FUNCTION)), name
        for section in cls.INPUT_TYPES().values():
            for input_name, spec in section.items():
                assert isinstance(spec[1], dict) and spec[1].get("tooltip"), f"{name}.{input_name}"


def test_the_pack_imports_no_comfyui_module():
    import sys

    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules


# loader class → (input holding a model file name, models/kling_foley/<kind>/)
MODEL_INPUTS = {"KlingFoleyModelLoader": ("checkpoint", "transformer"), "KlingFoleyVAELoader": ("checkpoint", "vae"),
                "KlingFoleyVocoderLoader": ("vocoder", "vocoder"), "KlingFoleyMono2StereoLoader": ("checkpoint", "mono2stereo"),
                "KlingFoleyVisualEncoderLoader": ("weights", "clip"), "KlingFoleySyncEncoderLoader": ("checkpoint", "synchformer"),
                "KlingFoleyTextEncoderLoader": ("weights", "text_encoders")}
MODEL_INPUTS_MULTI = {"KlingFoleyHunyuanLoader": (("dit", "hunyuan"), ("vae", "hunyuan"))}


def _stage_model_files(prompt, root):
    """Create (empty) stand-ins for the model files a workflow names, so loader lists contain them — what a
    user with the downloads has. Returns the names staged (those a real run would need)."""
    staged = []
    pairs = [(node, key, kind) for node in prompt.values()
             for key, kind in ([MODEL_INPUTS[node["class_type"]]] if node["class_type"] in MODEL_INPUTS
                               else MODEL_INPUTS_MULTI.get(node["class_type"], ()))]
    for node, key, kind in pairs:
        name = node["inputs"][key]
        if name.startswith(("tiny", "griffin-lim", "(none")):
            continue
        target = root / kind / name
        if Path(name).suffix:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")
        else:  # a model folder
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text(json.dumps({"_class_name": "KlingMelVAE"} if kind == "vae" else {}))
        staged.append(name)
    return staged


@pytest.mark.parametrize("path", HEADLESS_WORKFLOWS, ids=[p.name for p in HEADLESS_WORKFLOWS])
def test_shipped_workflows_validate_and_tiny_ones_run(path, tmp_path):
    from kling_foley_core.runner import paths

    from kling_foley_core.default_model import is_available

    prompt = load_workflow(path, pack.NODE_CLASS_MAPPINGS)
    staged = _stage_model_files(prompt, tmp_path / "models")
    paths.set_models_directory(tmp_path / "models")
    paths.set_output_directory(tmp_path / "out")
    try:
        if "KlingFoleyDefaultModelLoader" in json.dumps(prompt) and not is_available():
            from kling_foley_core.runner.errors import WorkflowValidationError

            with pytest.raises(WorkflowValidationError, match="foley-tiny weights are not in this installation"):
                validate_prompt(prompt, pack.NODE_CLASS_MAPPINGS)
            return
        validate_prompt(prompt, pack.NODE_CLASS_MAPPINGS)
        if staged or "Load Video" in json.dumps(prompt):
            return  # real checkpoints are not on this machine; video graphs run in the test below
        for node in prompt.values():
            if node["class_type"] == "KlingFoleySchedule":
                node["inputs"]["steps"] = 2
        result = WorkflowRunner(pack.NODE_CLASS_MAPPINGS).run(prompt)
        assert result.saved_files(), "an output node saved nothing"
        for f in result.saved_files():
            assert (tmp_path / "out" / f.get("subfolder", "") / f["filename"]).stat().st_size > 0
    finally:
        paths.set_models_directory(None)
        paths.set_output_directory(None)


def test_workflow_naming_a_missing_model_file_is_rejected_before_running(tmp_path):
    from kling_foley_core.runner import paths
    from kling_foley_core.runner.errors import WorkflowValidationError

    paths.set_models_directory(tmp_path / "models")
    try:
        prompt = load_workflow(WORKFLOWS[0].parent / "video_to_audio_mmaudio.json", pack.NODE_CLASS_MAPPINGS)
        with pytest.raises(WorkflowValidationError, match="mmaudio_large_44k_v2.pth"):
            validate_prompt(prompt, pack.NODE_CLASS_MAPPINGS)
    finally:
        paths.set_models_directory(None)


def test_tiny_workflow_runs_headless_to_a_video_with_stereo_audio_of_its_length(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=30, rate=Fraction(30000, 1001), size=(48, 32))
    prompt = load_workflow(Path(__file__).resolve().parents[1] / "workflows" / "video_to_audio_tiny.json",
                           pack.NODE_CLASS_MAPPINGS)
    prompt["1"]["inputs"]["video_path"] = str(clip)
    prompt["11"]["inputs"]["steps"] = 2
    from kling_foley_core.runner import paths

    paths.set_output_directory(tmp_path / "out")
    try:
        runner = WorkflowRunner(pack.NODE_CLASS_MAPPINGS)
        result = runner.run(prompt)
        out = Path(result.output("18"))
        assert out.is_file() and out.parent.parent == tmp_path / "out"
        with av.open(str(out)) as c:
            a = c.streams.audio[0]
            assert a.codec_context.channels == 2
            assert abs(float(a.duration * a.time_base) - 30 * 1001 / 30000) < 0.05
        # only the seed changes: encoders and loaders come from the cache
        prompt["12"]["inputs"]["seed"] = 1
        again = runner.run(prompt)
        assert "5" in again.cached and "6" in again.cached and "12" in again.executed
        assert Path(again.output("18")) != out and out.is_file()  # a new file, never an overwrite
    finally:
        paths.set_output_directory(None)


def test_preview_renders_frames_over_the_spectrogram(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=25, rate=25, size=(48, 32))
    video, _ = pack.NODE_CLASS_MAPPINGS["KlingFoleyLoadVideo"]().load(str(clip))
    audio = {"waveform": torch.randn(1, 2, 16000) * 0.1, "sample_rate": 16000}
    (img,) = pack.NODE_CLASS_MAPPINGS["KlingFoleySyncPreview"]().render(audio, 256, video)
    assert img.shape[0] == 1 and img.shape[2] == 256 and img.shape[3] == 3
    assert img.shape[1] > 256  # strip + spectrogram
    assert 0 <= float(img.min()) and float(img.max()) <= 1


def test_bad_inputs_name_the_node(tmp_path):
    load = pack.NODE_CLASS_MAPPINGS["KlingFoleyLoadVideo"]()
    with pytest.raises(ValueError, match="video_path is empty"):
        load.load("")
    with pytest.raises(ValueError, match="missing.mp4"):
        load.load(str(tmp_path / "missing.mp4"))
    mux = pack.NODE_CLASS_MAPPINGS["KlingFoleyMuxVideo"]()
    video, _ = pack.NODE_CLASS_MAPPINGS["KlingFoleyVideoFromImages"]().wrap(torch.rand(4, 8, 8, 3), 8.0)
    with pytest.raises(ValueError, match="Kling-Foley Mux Video: audio waveform must be"):
        mux.mux(video, {"waveform": torch.zeros(2, 100), "sample_rate": 16000})
    with pytest.raises(ValueError, match="available samplers"):
        pack.NODE_CLASS_MAPPINGS["KlingFoleySamplerSelect"]().select("nope")


def test_hunyuan_tiny_workflow_runs_through_the_shared_sampler(tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=30, rate=25, size=(48, 32))
    prompt = load_workflow(WORKFLOWS[0].parent / "video_to_audio_hunyuan_tiny.json", pack.NODE_CLASS_MAPPINGS)
    prompt["1"]["inputs"]["video_path"] = str(clip)
    prompt["11"]["inputs"]["steps"] = 2
    from kling_foley_core.runner import paths

    paths.set_output_directory(tmp_path / "out")
    try:
        out = Path(WorkflowRunner(pack.NODE_CLASS_MAPPINGS).run(prompt).output("18"))
        with av.open(str(out)) as c:
            a = c.streams.audio[0]
            assert abs(float(a.duration * a.time_base) - 1.2) < 0.05
    finally:
        paths.set_output_directory(None)


def test_mux_encodes_an_image_batch_and_previews_like_core_save_video(tmp_path):
    from kling_foley_core.runner import paths

    video, _ = pack.NODE_CLASS_MAPPINGS["KlingFoleyVideoFromImages"]().wrap(torch.rand(12, 32, 48, 3), 12.0)
    audio = {"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000}
    paths.set_output_directory(tmp_path)
    try:
        out = pack.NODE_CLASS_MAPPINGS["KlingFoleyMuxVideo"]().mux(video, audio, "take")
    finally:
        paths.set_output_directory(None)
    assert out["ui"]["animated"] == [True] and out["ui"]["images"][0]["filename"] == "take_00001.mp4"
    with av.open(out["result"][0]) as c:
        assert c.streams.video[0].frames == 12 and c.streams.audio[0].codec_context.channels == 2


def test_relative_video_path_is_found_in_comfyui_input_folder(tmp_path, monkeypatch):
    import sys
    import types

    clip = write_clip(tmp_path / "clip.mp4", n=10, rate=25, size=(32, 32))
    fake = types.SimpleNamespace(get_input_directory=lambda: str(tmp_path))
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.chdir(tmp_path.parent)
    video, duration = pack.NODE_CLASS_MAPPINGS["KlingFoleyLoadVideo"]().load("clip.mp4")
    assert Path(video.path) == clip and abs(duration - 0.4) < 1e-6


def test_escaping_prefix_and_missing_model_are_validation_errors_before_running(tmp_path):
    from kling_foley_core.runner import paths
    from kling_foley_core.runner.errors import WorkflowValidationError

    prompt = load_workflow(WORKFLOWS[0].parent / "video_to_audio_tiny.json", pack.NODE_CLASS_MAPPINGS)
    prompt["18"]["inputs"]["filename_prefix"] = "../../etc/take"
    prompt["9"]["inputs"]["checkpoint"] = "mmaudio_small_16k.pth"
    paths.set_models_directory(tmp_path / "models")
    paths.set_output_directory(tmp_path / "out")
    try:
        with pytest.raises(WorkflowValidationError) as e:
            validate_prompt(prompt, pack.NODE_CLASS_MAPPINGS)
        msg = str(e.value)
        assert "leaves the output folder" in msg
        assert "mmaudio_small_16k.pth" in msg and str(tmp_path / "models" / "transformer") in msg
        assert not (tmp_path / "out").exists()  # nothing ran
    finally:
        paths.set_models_directory(None)
        paths.set_output_directory(None)
