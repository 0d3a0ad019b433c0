"""``kling-foley generate VIDEO`` and ``kling-foley demo``: the main job in one command.

``generate`` runs the same workflow file a ComfyUI user would load (``workflows/<name>.json``), with the video,
prompt and sampler settings applied as overrides, and writes ``<output-dir>/kling_foley/<video name>_00001.mp4``.
``demo`` first renders a SynthHits test clip from held-out real recordings (fetched from the Debian archive on
first use), then does the same; the result keeps the clip's true soundtrack as a second audio track to compare.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping

from .cli import (EXIT_OK, SystemExitError, _event_logger, _make_runner, _report, _setup, finite_float,
                  register_command)

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
    if not name:
        from .default_model import is_available

        if not is_available():  # the default model's weights are not shipped in this installation
            names.remove("video_to_audio_default")
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
    from .video.probe import VideoInputError, check_path

    video = Path(args.video)
    try:  # says what the path is (missing, a directory, a link loop, ...); the runner's checks probe the rest
        check_path(video)
    except VideoInputError as e:
        raise SystemExitError(str(e)) from None
    sets = {"Load Video.video_path": str(video.resolve()), "Load Video.start": args.start,
            "Load Video.length": args.length, "Prompt.prompt": args.prompt,
            "Prompt.negative_prompt": args.negative_prompt, "Sampler.seed": args.seed, "Sampler.cfg": args.cfg,
            "Schedule.steps": args.steps, "Sampler Select.sampler_name": args.sampler,
            "Mux Video.filename_prefix": f"kling_foley/{video.stem}"}
    return [f"{k}={json.dumps(v)}" for k, v in sets.items()] + list(args.overrides)


OUTPUT_EXTENSIONS = (".mp4", ".mov", ".mkv")  # the Mux Video node's containers


def output_container(args: argparse.Namespace, video: Path) -> str:
    """The Mux Video container for ``--output`` (or "auto"), checked against the video's picture codec and the
    destination before any model runs."""
    from .mux import ContainerError, choose_container
    from .video.probe import VideoInputError

    out = Path(args.output) if getattr(args, "output", None) else None
    reencode = any("reencode_picture=true" in o.replace(" ", "").lower() for o in args.overrides)
    if out is not None:
        ext = out.suffix.lower()
        if ext not in OUTPUT_EXTENSIONS:
            raise SystemExitError(f"--output {out}: name a {', '.join(OUTPUT_EXTENSIONS)} file")
        if out.exists() or out.is_symlink():
            raise SystemExitError(f"--output {out}: already exists and is never overwritten; choose another name")
        if not out.parent.is_dir():
            raise SystemExitError(f"--output {out}: the folder '{out.parent}' does not exist; create it first")
    try:
        ext = choose_container(video, out.suffix if out is not None else "auto", reencode_picture=reencode)
    except ContainerError as e:
        fix = f"use --output {out.with_suffix(e.fits)} or " if e.fits and out is not None else ""
        raise SystemExitError(f"{'--output ' + str(out) if out else 'video'}: the picture codec '{e.codec}' of "
                              f"'{video.name}' cannot be stored in {e.ext or 'mp4, mkv or mov'} without re-encoding; "
                              f"{fix}re-encode it with --set \"Mux Video.reencode_picture=true\"") from None
    except VideoInputError as e:
        raise SystemExitError(str(e)) from None
    return ext[1:] if out is not None else "auto"


def _move_output(result, out: Path) -> None:
    """Move the muxed file to ``--output`` without ever replacing a file (hard link, else an atomic copy)."""
    import os
    import shutil

    from .mux import atomic_output
    from .runner import paths

    root = paths.get_output_directory()
    made = [Path(root, f.get("subfolder", ""), f["filename"]) for f in result.saved_files()
            if Path(f["filename"]).suffix.lower() == out.suffix.lower()]
    if not made:
        raise SystemExitError(f"--output {out}: the workflow saved no {out.suffix} file (does it have a Mux Video "
                              "node?)")
    try:
        os.link(made[-1], out)
    except FileExistsError:
        raise SystemExitError(f"--output {out}: appeared while generating; the result stays at {made[-1]}") from None
    except OSError:  # another file system, or no hard links there
        with atomic_output(out) as tmp:
            shutil.copyfile(made[-1], tmp)
    os.unlink(made[-1])
    print(f"moved {made[-1]} to {out}")


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="the (silent) video to add sound to")
    p.add_argument("--prompt", default="", help="describe the sound (optional)")
    p.add_argument("--negative-prompt", default="", help="sounds to steer away from (optional)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25, the papers' setting)")
    p.add_argument("--cfg", type=finite_float, default=4.5, help="guidance strength (default 4.5)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--sampler", default="euler", help="sampler name (euler, heun, midpoint, rk4, dpm_multistep, adaptive)")
    p.add_argument("--start", type=finite_float, default=0.0, help="seconds to skip at the start of the video")
    p.add_argument("--length", type=finite_float, default=0.0, help="seconds to use (0 = to the end)")
    p.add_argument("--workflow", default=None,
                   help=f"shipped workflow name or a .json file (default: {' or '.join(DEFAULT_WORKFLOWS)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value",
                   help="any further override, as for 'kling-foley run'")
    p.add_argument("--output-dir", default=None, help="folder for results (default ./output)")
    p.add_argument("--output", default=None, metavar="PATH",
                   help="write the video to PATH (.mp4, .mov or .mkv; never overwritten). Its container must hold "
                        "the input's picture codec (checked before any model runs); default: "
                        "<output-dir>/kling_foley/<name>_00001 with the container chosen from the codec")
    p.add_argument("--models-dir", default=None, action="append", help="model folder root (see 'run --help')")
    p.add_argument("--node-module", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--output-node", action="append", default=None, help=argparse.SUPPRESS)


def cmd_generate(args: argparse.Namespace, node_classes: Mapping | None = None, extra: list[str] = ()) -> int:
    workflow = find_workflow(args.workflow)
    overrides = generate_overrides(args) + list(extra)
    container = output_container(args, Path(args.video))  # before any model runs; a --set may still override it
    overrides.insert(0, f"Mux Video.container={json.dumps(container)}")
    _setup(args)
    runner = _make_runner(args, node_classes)
    result = runner.run(str(workflow), overrides=overrides, on_event=_event_logger(getattr(args, "verbose", False)))
    print(f"workflow {workflow.stem}")
    _report(result)
    if getattr(args, "output", None):
        _move_output(result, Path(args.output))
    return EXIT_OK


register_command("generate", "add synchronized sound to a video with a shipped workflow", _generate_arguments,
                 cmd_generate)


def render_demo_clip(seed: int, folder: Path) -> tuple[Path, object]:
    """A SynthHits clip with at least one hit, from held-out recordings, written to ``folder``."""
    from .data.recordings import RecordingsError, RecordingsUnavailableError, load_bank
    from .data.synthhits import generate_clip, write_mp4
    from .runner.paths import save_output

    try:
        bank = load_bank()
    except (RecordingsError, RecordingsUnavailableError, OSError) as e:
        raise SystemExitError(f"demo: the real recordings could not be fetched from the Debian archive ({e}); "
                              "run 'kling-foley generate YOUR_VIDEO.mp4' instead") from None
    for index in range(100):
        clip = generate_clip(bank, seed=seed, index=index, split="heldout")
        if clip.has_hits:
            break
    path = save_output(f"{folder.name}/demo_input", "mp4", lambda tmp: write_mp4(clip, tmp))
    return path, clip


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    _generate_arguments(p)
    p.set_defaults(video=None)
    for action in p._actions:  # the clip is rendered, not given
        if action.dest == "video":
            action.nargs, action.help = "?", argparse.SUPPRESS


def cmd_demo(args: argparse.Namespace, node_classes: Mapping | None = None) -> int:
    _setup(args)
    video, clip = render_demo_clip(args.seed, Path("kling_foley"))
    print(f"demo clip {video} ({clip.duration:.2f} s): {clip.caption}")
    for e in clip.events:
        print(f"  hit at {e.time:6.3f} s  {e.sound_class:14s} pan {e.pan:+.2f}")
    args.video = str(video)
    print("the output's first audio track is the generated one; the second, titled 'original', is the clip's "
          "true soundtrack for comparison")
    return cmd_generate(args, node_classes, extra=['Mux Video.filename_prefix="kling_foley/demo"',
                                                   "Mux Video.keep_original_audio=true"])


register_command("demo", "render a test clip and add sound to it (the README's first command)", _demo_arguments,
                 cmd_demo)
