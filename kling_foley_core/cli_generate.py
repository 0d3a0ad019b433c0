"""``kling-foley generate VIDEO``: the main job in one command — add sound to a video with a shipped workflow.

It runs the same workflow file a ComfyUI user would load (``workflows/<name>.json``), with the video, prompt and
sampler settings applied as overrides, and writes ``<output-dir>/kling_foley/<video name>_00001.mp4``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping

from .cli import EXIT_OK, SystemExitError, _event_logger, _make_runner, _report, _setup, register_command

WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"
DEFAULT_WORKFLOWS = ("video_to_audio_default", "video_to_audio_tiny")  # first one that exists wins


def find_workflow(name: str | None) -> Path:
    """A workflow by file path, or by name among the shipped ones."""
    if name and Path(name).suffix == ".json":
        path = Path(name)
        if not path.is_file():
            raise SystemExitError(f"--workflow {name}: file does not exist")
        return path
    names = [name] if name else list(DEFAULT_WORKFLOWS)
    for n in names:
        path = WORKFLOWS_DIR / f"{n}.json"
        if path.is_file():
            return path
    shipped = sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json")) if WORKFLOWS_DIR.is_dir() else []
    if not shipped:
        raise SystemExitError("the shipped workflows/ folder is not next to this installation; install from a "
                          "checkout ('pip install -e .') or run a workflow file with 'kling-foley run FILE'")
    raise SystemExitError(f"--workflow {name!r} is not a shipped workflow; choose one of: {', '.join(shipped)}")


def generate_overrides(args: argparse.Namespace) -> list[str]:
    video = Path(args.video)
    if not video.is_file():
        raise SystemExitError(f"video '{video}' does not exist; pass the path of a video file")
    sets = {"Load Video.video_path": str(video.resolve()), "Load Video.start": args.start,
            "Load Video.length": args.length, "Prompt.prompt": args.prompt,
            "Prompt.negative_prompt": args.negative_prompt, "Sampler.seed": args.seed, "Sampler.cfg": args.cfg,
            "Schedule.steps": args.steps, "Sampler Select.sampler_name": args.sampler,
            "Mux Video.filename_prefix": f"kling_foley/{video.stem}"}
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()] + list(args.overrides)


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="the (silent) video to add sound to")
    p.add_argument("--prompt", default="", help="describe the sound (optional)")
    p.add_argument("--negative-prompt", default="", help="sounds to steer away from (optional)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25, the papers' setting)")
    p.add_argument("--cfg", type=float, default=4.5, help="guidance strength (default 4.5)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--sampler", default="euler", help="sampler name (euler, heun, midpoint, rk4, dpm_multistep, adaptive)")
    p.add_argument("--start", type=float, default=0.0, help="seconds to skip at the start of the video")
    p.add_argument("--length", type=float, default=0.0, help="seconds to use (0 = to the end)")
    p.add_argument("--workflow", default=None,
                   help=f"shipped workflow name or a .json file (default: {' or '.join(DEFAULT_WORKFLOWS)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value",
                   help="any further override, as for 'kling-foley run'")
    p.add_argument("--output-dir", default=None, help="folder for results (default ./output)")
    p.add_argument("--models-dir", default=None, action="append", help="model folder root (see 'run --help')")
    p.add_argument("--node-module", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--output-node", action="append", default=None, help=argparse.SUPPRESS)


def cmd_generate(args: argparse.Namespace, node_classes: Mapping | None = None) -> int:
    workflow = find_workflow(args.workflow)
    overrides = generate_overrides(args)
    _setup(args)
    runner = _make_runner(args, node_classes)
    result = runner.run(str(workflow), overrides=overrides, on_event=_event_logger(getattr(args, "verbose", False)))
    print(f"workflow {workflow.stem}")
    _report(result)
    return EXIT_OK


register_command("generate", "add synchronized sound to a video with a shipped workflow", _generate_arguments,
                 cmd_generate)
