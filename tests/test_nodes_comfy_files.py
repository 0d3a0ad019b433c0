"""Inside ComfyUI the pack reads only ComfyUI's folders, takes core's VIDEO, and its loaders list and dispatch
model folders; errors name ComfyUI's folders. ComfyUI is faked by a ``folder_paths`` (and ``comfy_api``) module."""
import gc
import inspect
import io
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

import kling_foley_nodes as pack
from kling_foley_core.runner import paths
from kling_foley_nodes.common import TINY
from video_clips import write_clip

NODES = pack.NODE_CLASS_MAPPINGS
FOLEY_TINY_VAE = Path(paths.__file__).resolve().parents[1] / "default_model" / "weights" / "vae"


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """A ComfyUI install: input/, output/, models/ under tmp_path/ComfyUI, and a secret file outside it."""
    root = tmp_path / "ComfyUI"
    for sub in ("input", "output", "models"):
        (root / sub).mkdir(parents=True)
    fp = types.ModuleType("folder_paths")
    fp.get_input_directory = lambda: str(root / "input")
    fp.get_output_directory = lambda: str(root / "output")
    fp.models_dir = str(root / "models")
    fp.folder_names_and_paths = {}
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.chdir(root)  # ComfyUI runs from its own folder: relative names must not reach it
    return root


@pytest.fixture
def core_video_types(monkeypatch):
    """ComfyUI's comfy_api.input_impl: VideoFromFile (a path or BytesIO) and VideoFromComponents (frames)."""

    class VideoFromFile:
        def __init__(self, file):
            self.file = file

        def get_stream_source(self):
            if isinstance(self.file, io.BytesIO):
                self.file.seek(0)
            return self.file

        def get_components(self):
            raise AssertionError("a file-backed VIDEO must be streamed, not decoded into an IMAGE batch")

    class VideoFromComponents:
        def __init__(self, images, frame_rate):
            self.parts = types.SimpleNamespace(images=images, frame_rate=frame_rate, audio=None)

        def get_components(self):
            return self.parts

    impl = types.ModuleType("comfy_api.input_impl")
    impl.VideoFromFile, impl.VideoFromComponents = VideoFromFile, VideoFromComponents
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.input_impl", impl)
    return impl


# ------------------------------------------------------------------------------------------------- Load Video
def test_load_video_lists_and_reads_the_input_folder_with_the_upload_widget(comfy):
    write_clip(comfy / "input" / "clip.mp4", n=10, rate=25, size=(32, 32))
    (comfy / "input" / "takes").mkdir()
    write_clip(comfy / "input" / "takes" / "b.mkv", n=10, rate=25, size=(32, 32))
    (comfy / "input" / "photo.png").write_bytes(b"png")
    spec = NODES["KlingFoleyLoadVideo"].INPUT_TYPES()["required"]["video_path"]
    assert spec[0] == ["clip.mp4", "takes/b.mkv"] and spec[1]["video_upload"] is True
    load = NODES["KlingFoleyLoadVideo"]
    for name in ("clip.mp4", "takes/b.mkv", "clip.mp4 [input]", "./takes/b.mkv"):
        assert load.VALIDATE_INPUTS(name) is True, name
    video, duration = load().load("takes/b.mkv")
    assert Path(video.path) == comfy / "input" / "takes" / "b.mkv" and abs(duration - 0.4) < 1e-6


@pytest.mark.parametrize("name", ["{secret}", "../secret.mp4", "~/../../{rel}", "takes/../../secret.mp4",
                                  "secret.mp4 [output]"])
def test_a_file_outside_the_input_folder_is_refused_without_telling_whether_it_exists(comfy, name):
    outside = comfy.parent
    write_clip(outside / "secret.mp4", n=10, rate=25, size=(32, 32))  # exists, and is a readable video
    (comfy / "output" / "secret.mp4").write_bytes((outside / "secret.mp4").read_bytes())
    rel = (outside / "secret.mp4").relative_to("/")
    answers = []
    for target in ("secret.mp4", "gone.mp4"):  # the same name with an existing and a missing file
        n = name.format(secret=outside / target, rel=rel).replace("secret.mp4", target)
        msg = NODES["KlingFoleyLoadVideo"].VALIDATE_INPUTS(n)
        assert isinstance(msg, str) and "input/" in msg, msg
        with pytest.raises(ValueError) as e:
            NODES["KlingFoleyLoadVideo"]().load(n)
        assert "Kling-Foley Load Video" in str(e.value)
        answers.append((msg.replace(n, "NAME"), str(e.value).replace(n, "NAME")))
    assert answers[0] == answers[1]
    assert not list((comfy / "output").rglob("*.partial*"))


def test_an_unreadable_file_in_the_input_folder_is_named_by_its_input_path(comfy):
    (comfy / "input" / "notes.mp4").write_text("not a video")
    with pytest.raises(ValueError) as e:
        NODES["KlingFoleyLoadVideo"]().load("notes.mp4")
    assert "input/notes.mp4" in str(e.value) and str(comfy) not in str(e.value)


def test_headless_load_video_still_takes_any_path(tmp_path):
    (tmp_path / "anywhere").mkdir()
    clip = write_clip(tmp_path / "anywhere" / "clip.mp4", n=10, rate=25, size=(32, 32))
    assert NODES["KlingFoleyLoadVideo"].INPUT_TYPES()["required"]["video_path"][0] == "STRING"
    video, _ = NODES["KlingFoleyLoadVideo"]().load(str(clip))
    assert video.path == str(clip)


# ------------------------------------------------------------------------------------------ core VIDEO in/out
def test_a_file_backed_core_video_is_streamed_from_its_file(tmp_path, core_video_types):
    clip = write_clip(tmp_path / "clip.mp4", n=50, rate=25, size=(32, 32))
    video, duration = NODES["KlingFoleyVideoFromVIDEO"]().wrap(core_video_types.VideoFromFile(str(clip)), 0.4, 1.0)
    assert video.path == str(clip) and video.images is None
    assert (video.start, duration) == (0.4, 1.0)


def test_an_in_memory_core_video_is_copied_once_as_a_file_and_removed_with_the_video(tmp_path, core_video_types):
    clip = write_clip(tmp_path / "clip.mp4", n=25, rate=25, size=(32, 32))
    source = core_video_types.VideoFromFile(io.BytesIO(clip.read_bytes()))
    video, duration = NODES["KlingFoleyVideoFromVIDEO"]().wrap(source)
    copy = Path(video.path)
    assert copy.read_bytes() == clip.read_bytes() and abs(duration - 1.0) < 1e-6
    del video
    gc.collect()
    assert not copy.exists()


def test_a_core_video_made_of_frames_uses_those_frames_cut_to_start_and_length(core_video_types):
    frames = torch.rand(20, 8, 8, 3)
    video, duration = NODES["KlingFoleyVideoFromVIDEO"]().wrap(core_video_types.VideoFromComponents(frames, 10),
                                                                0.5, 1.0)
    assert video.path is None and video.fps == 10.0 and duration == 1.0
    assert video.images.data_ptr() == frames[5].data_ptr() and video.images.shape[0] == 10  # a view, no copy
    with pytest.raises(ValueError, match="Kling-Foley Video From VIDEO: start=3"):
        NODES["KlingFoleyVideoFromVIDEO"]().wrap(core_video_types.VideoFromComponents(frames, 10), 3.0)


def test_mux_gives_a_core_video_of_its_file_and_none_headless(tmp_path, monkeypatch, core_video_types):
    video, _ = NODES["KlingFoleyVideoFromImages"]().wrap(torch.rand(8, 16, 16, 3), 8.0)
    audio = {"waveform": torch.zeros(1, 2, 16000), "sample_rate": 16000}
    assert NODES["KlingFoleyMuxVideo"].RETURN_TYPES[-1] == "VIDEO"
    paths.set_output_directory(tmp_path)
    try:
        out = NODES["KlingFoleyMuxVideo"]().mux(video, audio, "take")
        assert isinstance(out["result"][1], core_video_types.VideoFromFile)
        assert out["result"][1].get_stream_source() == out["result"][0]
        monkeypatch.delitem(sys.modules, "comfy_api.input_impl")
        monkeypatch.setitem(sys.modules, "comfy_api", None)  # headless: comfy_api cannot be imported
        assert NODES["KlingFoleyMuxVideo"]().mux(video, audio, "take")["result"][1] is None
    finally:
        paths.set_output_directory(None)


# ---------------------------------------------------------------------------------------------------- loaders
def _vae_folder(models: Path, name: str) -> Path:
    target = models / "kling_foley" / "vae" / name
    shutil.copytree(FOLEY_TINY_VAE, target)
    return target


def test_vae_loader_loads_a_kling_mel_vae_folder_such_as_foley_tinys(comfy):
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE

    _vae_folder(comfy / "models", "foley-tiny")
    choices = NODES["KlingFoleyVAELoader"].INPUT_TYPES()["required"]["checkpoint"][0]
    assert [c for c in choices if c.startswith("foley-tiny")] == ["foley-tiny"]  # the folder, not its files
    assert NODES["KlingFoleyVAELoader"].VALIDATE_INPUTS("foley-tiny") is True
    (vae,) = NODES["KlingFoleyVAELoader"]().load("foley-tiny")
    assert isinstance(vae, KlingMelVAE) and vae.config.latent_dim == 20
    # a saved workflow that named the weights file inside the folder loads the folder
    (again,) = NODES["KlingFoleyVAELoader"]().load("foley-tiny/diffusion_pytorch_model.safetensors")
    assert isinstance(again, KlingMelVAE)


def test_vae_loader_refuses_a_folder_that_is_not_a_mel_vae_before_running(comfy):
    target = _vae_folder(comfy / "models", "odd")
    (target / "config.json").write_text(json.dumps({"_class_name": "BigVGANVocoder"}))
    msg = NODES["KlingFoleyVAELoader"].VALIDATE_INPUTS("odd")
    assert "'odd' is not a Mel-VAE" in msg and "BigVGANVocoder" in msg


def test_hunyuan_loader_reports_a_missing_file_for_its_own_input_only(tmp_path):
    from kling_foley_core.runner.validation import collect_errors
    from kling_foley_core.runner.workflow import load_workflow

    prompt = load_workflow(Path(__file__).resolve().parents[1] / "workflows" / "video_to_audio_hunyuan_tiny.json", NODES)
    loader = next(n for n in prompt.values() if n["class_type"] == "KlingFoleyHunyuanLoader")
    paths.set_models_directory(tmp_path)
    try:
        for field, name in (("dit", "hunyuanvideo_foley.pth"), ("vae", "vae_128d_48k.pth")):
            loader["inputs"].update(dit=TINY, vae=TINY)
            loader["inputs"][field] = name
            errors = [e for e in collect_errors(json.loads(json.dumps(prompt)), NODES)
                      if e.class_type == "KlingFoleyHunyuanLoader"]
            assert errors and all(name in e.message for e in errors), errors
            assert {e.input_name for e in errors} <= {field, None}, errors  # None: the node's own VALIDATE_INPUTS
        with pytest.raises(ValueError, match=r"HunyuanVideo-Foley Loader: vae: .*vae_128d_48k.pth"):
            NODES["KlingFoleyHunyuanLoader"]().load(TINY, "vae_128d_48k.pth", "fp32")
    finally:
        paths.set_models_directory(None)
    # ComfyUI files a VALIDATE_INPUTS answer under every input the method takes: it must take the DiT's alone
    assert list(inspect.signature(NODES["KlingFoleyHunyuanLoader"].VALIDATE_INPUTS).parameters) == ["dit"]


def test_errors_inside_comfyui_name_comfyuis_folders_not_the_cli_options(comfy):
    model_msg = NODES["KlingFoleyModelLoader"].VALIDATE_INPUTS("mmaudio_large_44k_v2.pth")
    assert "models/kling_foley/transformer/" in model_msg and "--models-dir" not in model_msg
    for prefix in ("/tmp/take", "../take"):
        prefix_msg = NODES["KlingFoleyMuxVideo"].VALIDATE_INPUTS(prefix)
        assert "output/" in prefix_msg and "--output-dir" not in prefix_msg and str(comfy) not in prefix_msg
    # an absolute model path is refused by its name: the answer is the same whether the file exists or not
    (comfy.parent / "x.pth").write_bytes(b"")
    answers = {NODES["KlingFoleyVAELoader"].VALIDATE_INPUTS(str(comfy.parent / n)).replace(n, "N")
               for n in ("x.pth", "y.pth")}
    assert len(answers) == 1 and "models/kling_foley/vae/" in answers.pop()
