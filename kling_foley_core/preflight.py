"""Checks of a validated workflow that need the pack's meaning, run headless before any node executes.

Validation (``runner.validation``) knows only each node's declared inputs. These checks follow the wires of the
pack's nodes, so a problem that would otherwise surface at the Sampler, after the models loaded and the video was
encoded, is a validation error instead:

* every *Load Video* file is probed (missing, a directory, a still image, not a video, ...) and its span
  ``[start, start + length)`` must lie inside the video and hold at least one sync window;
* every *Sampler*'s duration (a *Load Video* duration or a literal, through *Conditioning*) is known here, from the
  probe, before any encoder runs. No length is refused: a clip longer than the model's trained length is generated
  in windows (``longform``); its window plan is made now, so a ``window_seconds`` longer than the model generates in
  one run, or an ``overlap_seconds`` that does not fit, is a validation error. The model's lengths come from its
  config without loading weights; where the config cannot be read cheaply (MMAudio ``.pth`` files,
  HunyuanVideo-Foley) the Sampler checks its window inputs when it runs.

``check_prompt(prompt, node_classes)`` has the shape of a ``WorkflowRunner`` check and returns ``NodeError``s.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

from .limits import MIN_SECONDS, max_seconds, trained_seconds
from .runner.errors import NodeError
from .runner.validation import dependencies, output_nodes
from .runner.workflow import _is_link

log = logging.getLogger(__name__)

LOAD_VIDEO = "KlingFoleyLoadVideo"
CONDITIONING = "KlingFoleyConditioning"
SAMPLER = "KlingFoleySampler"
MUX_VIDEO = "KlingFoleyMuxVideo"
AUDIO_BYTES_PER_SECOND = 48_000  # a generous bound on the muxed soundtrack(s) (AAC stereo, two tracks)
DEFAULT_LOADER = "KlingFoleyDefaultModelLoader"
MODEL_LOADER = "KlingFoleyModelLoader"
TINY = "tiny (random weights, for testing)"  # the loaders' choice of the random tiny stack
_PARAM_INPUTS = {"start", "length"}


def check_prompt(prompt: Mapping, node_classes: Mapping[str, type]) -> list[NodeError]:
    needed = dependencies(prompt, output_nodes(prompt, node_classes))
    errors: list[NodeError] = []
    spans: dict[str, float] = {}
    for nid in needed:
        if prompt[nid].get("class_type") == LOAD_VIDEO:
            _check_video(nid, prompt[nid]["inputs"], spans, errors)
    for nid in needed:
        if prompt[nid].get("class_type") == SAMPLER:
            _check_sampler(nid, prompt, spans, errors)
        elif prompt[nid].get("class_type") == MUX_VIDEO:
            _check_disk(nid, prompt, spans, errors)
    return errors


def _check_video(nid: str, inputs: Mapping, spans: dict, errors: list) -> None:
    from .runner.paths import resolve_input_path
    from .video.probe import VideoInputError, clip_span

    path, start, length = inputs.get("video_path"), inputs.get("start", 0.0), inputs.get("length", 0.0)
    if not isinstance(path, str) or _is_link(start) or _is_link(length):
        return  # linked: known only when the graph runs
    if not path.strip():
        errors.append(NodeError(nid, LOAD_VIDEO, "invalid_input", "video_path is empty; give the path of a video "
                                                                  "file", "video_path"))
        return
    try:
        _info, spans[nid] = clip_span(resolve_input_path(path), start, length)
    except VideoInputError as e:
        name = "length" if e.kind == "bad_param" and "length=" in str(e) else \
            "start" if e.kind == "bad_param" else "video_path"
        errors.append(NodeError(nid, LOAD_VIDEO, "invalid_input", str(e), name))
    except ValueError as e:  # inside ComfyUI: not a file of its input folder
        errors.append(NodeError(nid, LOAD_VIDEO, "invalid_input", str(e), "video_path"))


def _check_disk(nid: str, prompt: Mapping, spans: dict, errors: list) -> None:
    """A long video's muxed copy (its picture copied, plus the soundtrack) must fit in the output folder."""
    import shutil

    from .runner.paths import get_output_directory, resolve_input_path

    video = prompt[nid]["inputs"].get("video")
    src = str(video[0]) if _is_link(video) else None
    if src not in spans:
        return
    seconds = spans[src]
    try:
        from .video.probe import probe_video

        path = resolve_input_path(prompt[src]["inputs"]["video_path"])
        total = probe_video(path).duration or seconds
        need = os.path.getsize(path) * min(1.0, seconds / total) + AUDIO_BYTES_PER_SECOND * seconds
        folder = Path(get_output_directory())
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
    except (OSError, ValueError) as e:
        log.debug("no disk-space check for node %s: %s", nid, e)
        return
    if need > free:
        errors.append(NodeError(nid, MUX_VIDEO, "invalid_input",
                                f"the video of node {src} is {seconds / 3600:.2f} h; its copy with the new soundtrack "
                                f"needs about {need / 1e9:.1f} GB but '{folder}' has {free / 1e9:.1f} GB free; free "
                                f"space, choose another output folder or cut the video (length)", "video"))


def _check_sampler(nid: str, prompt: Mapping, spans: dict, errors: list) -> None:
    inputs = prompt[nid]["inputs"]
    cond, model = inputs.get("conditioning"), inputs.get("model")
    if not (_is_link(cond) and _is_link(model)) or inputs.get("context") is not None:
        return  # a reference context lengthens the span: the Sampler checks it when it runs
    cond_node = prompt.get(str(cond[0]), {})
    if cond_node.get("class_type") != CONDITIONING:
        return
    duration = cond_node["inputs"].get("duration")
    if _is_link(duration):
        src = str(duration[0])
        if src not in spans or prompt[src].get("class_type") != LOAD_VIDEO or int(duration[1]) != 1:
            return
        seconds, where = spans[src], f"the video of node {src} (Load Video)"
    elif isinstance(duration, float):
        seconds, where = duration, f"the duration of node {cond[0]} (Conditioning)"
        if seconds < MIN_SECONDS:
            errors.append(NodeError(str(cond[0]), CONDITIONING, "value_smaller_than_min",
                                    f"duration={seconds:g} s is shorter than one sync window ({MIN_SECONDS:g} s = 16 "
                                    f"frames at 25 fps)", "duration"))
            return
    else:
        return
    _check_windows(nid, inputs, seconds, where, model, prompt, errors)


def _check_windows(nid: str, inputs: Mapping, seconds: float, where: str, model, prompt: Mapping,
                   errors: list) -> None:
    """The Sampler's window plan for ``seconds`` (any length is fine; the window inputs must fit the model)."""
    from .sampling.windows import DEFAULT_OVERLAP, WindowError, plan_windows

    config, model_name = model_config(prompt.get(str(model[0]), {}))
    window, overlap = inputs.get("window_seconds", 0.0), inputs.get("overlap_seconds", 0.0)
    if config is None or _is_link(window) or _is_link(overlap):
        return
    limit = max_seconds(config)
    if window and window > limit + 1e-6:
        errors.append(NodeError(nid, SAMPLER, "value_bigger_than_max",
                                f"window_seconds={window:g} is longer than the model of node {model[0]} ({model_name}) "
                                f"generates in one run ({limit:g} s); give {trained_seconds(config):g} or 0 (its "
                                f"trained length)", "window_seconds"))
        return
    try:
        plan = plan_windows(seconds, window or trained_seconds(config), overlap or DEFAULT_OVERLAP)
    except WindowError as e:
        errors.append(NodeError(nid, SAMPLER, "invalid_input", str(e),
                                "overlap_seconds" if "overlap" in str(e) else "window_seconds"))
        return
    if len(plan) > 1:
        log.info("%s is %.2f s: node %s (Sampler) generates it in %d windows of %g s", where, seconds, nid, len(plan),
                 plan.window)


def model_config(loader: Mapping) -> tuple[Mapping | None, str]:
    """``(config, model name)`` of the transformer a loader node loads, read without loading weights;
    ``(None, name)`` when that takes more than reading a config file."""
    ct, inputs = loader.get("class_type"), loader.get("inputs") or {}
    if ct == DEFAULT_LOADER:
        from . import default_model

        config = Path(default_model.__file__).parent / "weights" / "transformer" / "config.json"
        return _read_config(config), str(inputs.get("model", "foley-tiny"))
    if ct == MODEL_LOADER and inputs.get("checkpoint") == TINY:
        from .models.mmdit_presets import MMDIT_PRESETS

        return MMDIT_PRESETS["tiny"], "tiny MM-DiT"
    if ct == MODEL_LOADER and isinstance(inputs.get("checkpoint"), str):
        from .runner.paths import find_model

        try:
            path = Path(find_model("transformer", inputs["checkpoint"]))
        except (OSError, ValueError):
            return None, inputs["checkpoint"]  # reported by the loader's own validation
        return (_read_config(path / "config.json") if path.is_dir() else None), inputs["checkpoint"]
    return None, str(ct)


def _read_config(config: Path) -> Mapping | None:
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.debug("no model config at %s: %s", config, e)
        return None
