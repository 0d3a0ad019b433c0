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


# --mode → the shipped workflow that runs it (FoleyGenEx's paradigms; v2a is the default workflow)
MODE_WORKFLOWS = {"v2a": None, "tc-vta": "text_controlled_default", "ac-vta": "reference_audio_default",
                  "fe": "foley_extension_default", "edit": "soundtrack_edit_default", "tta": "text_to_audio_default"}
MODE_HELP = ("v2a: sound for the video; tc-vta: the prompt sets the timbre, the video the timing; ac-vta: --audio is "
             "a reference whose timbre is copied; fe: --audio is the soundtrack's start, the rest is generated; "
             "edit: --edit-start..--edit-end of --audio (default: the video's own soundtrack) is regenerated; "
             "tta: no video, --prompt and --duration")


def check_mode(args: argparse.Namespace) -> None:
    """The mode's own arguments, before anything loads (one-line errors naming the option)."""
    from .video.probe import describe_unusable_path

    mode = args.mode
    if mode != "v2a" and args.workflow:
        raise SystemExitError(f"--mode {mode} runs its own workflow ({MODE_WORKFLOWS[mode]}); drop --workflow or "
                              "--mode")
    if mode == "tta":
        if args.video is not None:
            raise SystemExitError("--mode tta makes audio from the prompt alone and takes no video; drop the video, "
                                  "or use --mode tc-vta to set the timbre of a video's sound with the prompt")
        if not args.prompt.strip():
            raise SystemExitError("--mode tta needs --prompt (the sounds to make, e.g. 'four snares in the center')")
        if not args.duration > 0:
            raise SystemExitError(f"--duration {args.duration:g}: --mode tta needs the seconds of audio to make (> 0)")
        return
    if args.video is None:
        raise SystemExitError(f"--mode {mode} needs a video (or use --mode tta for audio from a prompt alone)")
    if args.duration:
        raise SystemExitError("--duration is for --mode tta; a video's length sets the duration (use --length)")
    if mode in ("ac-vta", "fe") and not args.audio:
        what = "a recording whose timbre to copy" if mode == "ac-vta" else "the soundtrack of the video's start"
        raise SystemExitError(f"--mode {mode} needs --audio FILE ({what})")
    if args.audio and mode in ("v2a", "tc-vta"):
        raise SystemExitError(f"--audio is used by --mode ac-vta, fe or edit, not {mode}")
    if args.audio:
        problem = describe_unusable_path(Path(args.audio))
        if problem is not None:
            raise SystemExitError(f"--audio {args.audio}: {problem[1]}")
    if mode == "edit" and not 0 <= args.edit_start < args.edit_end:
        raise SystemExitError(f"--edit-start {args.edit_start:g} --edit-end {args.edit_end:g}: give the window to "
                              "regenerate in seconds, 0 <= start < end")
    if mode != "edit" and (args.edit_start or args.edit_end):
        raise SystemExitError("--edit-start/--edit-end are for --mode edit")
    if args.context_seconds < 0:
        raise SystemExitError(f"--context-seconds {args.context_seconds:g} must be >= 0 (0 = all of --audio)")


def generate_overrides(args: argparse.Namespace) -> list[str]:
    from .video.probe import VideoInputError, check_path

    sets = {"Prompt.prompt": args.prompt, "Prompt.negative_prompt": args.negative_prompt, "Sampler.seed": args.seed,
            "Sampler.cfg": args.cfg, "Schedule.steps": args.steps, "Sampler Select.sampler_name": args.sampler}
    if getattr(args, "guidance", None):
        sets["Sampler.guidance"] = args.guidance
    if getattr(args, "guidance_rescale", None) is not None:
        sets["Sampler.guidance_rescale"] = args.guidance_rescale
    if getattr(args, "apg_eta", None) is not None:
        sets["Sampler.apg_eta"] = args.apg_eta
    if args.mode == "tta":
        stem = "".join(c if c.isalnum() else "_" for c in args.prompt.strip())[:40].strip("_") or "text"
        sets.update({"Conditioning.duration": args.duration, "Save Audio.filename_prefix": f"kling_foley/{stem}"})
        return [f"{k}={json.dumps(v)}" for k, v in sets.items()] + list(args.overrides)
    video = Path(args.video)
    try:  # says what the path is (missing, a directory, a link loop, ...); the runner's checks probe the rest
        check_path(video)
    except VideoInputError as e:
        raise SystemExitError(str(e)) from None
    sets.update({"Load Video.video_path": str(video.resolve()), "Load Video.start": args.start,
                 "Load Video.length": args.length, "Mux Video.filename_prefix": f"kling_foley/{video.stem}"})
    if args.mode in ("ac-vta", "fe", "edit"):
        sets["Known Audio.audio_path"] = str(Path(args.audio or video).resolve())
        sets["Audio Context.context_seconds"] = args.context_seconds
    if args.mode == "edit":
        sets.update({"Audio Context.edit_start": args.edit_start, "Audio Context.edit_end": args.edit_end})
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


def watermark_off(workflow: Path, node_classes: Mapping) -> list[str]:
    """``--no-watermark``: 'ID.watermark=false' for each node of the workflow that has a 'watermark' input."""
    from .runner.nodeinfo import input_specs
    from .runner.workflow import load_workflow

    prompt = load_workflow(str(workflow), node_classes)
    marking = [nid for nid, node in prompt.items() if node.get("class_type") in node_classes
               and any(s.name == "watermark" for s in input_specs(node_classes[node["class_type"]]))]
    return [f"{nid}.watermark=false" for nid in marking]


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", nargs="?", default=None, help="the (silent) video to add sound to (none for --mode tta)")
    p.add_argument("--mode", choices=tuple(MODE_WORKFLOWS), default="v2a", help=MODE_HELP)
    p.add_argument("--audio", default=None, metavar="FILE",
                   help="known audio for --mode ac-vta / fe / edit (any audio file or a video's soundtrack)")
    p.add_argument("--context-seconds", type=finite_float, default=0.0,
                   help="fe: seconds at the end of --audio kept as context; ac-vta: seconds of the reference used "
                        "(0 = all)")
    p.add_argument("--edit-start", type=finite_float, default=0.0, help="edit: start of the window to regenerate (s)")
    p.add_argument("--edit-end", type=finite_float, default=0.0, help="edit: end of the window to regenerate (s)")
    p.add_argument("--duration", type=finite_float, default=0.0, help="tta: seconds of audio to make")
    p.add_argument("--prompt", default="", help="describe the sound (optional)")
    p.add_argument("--negative-prompt", default="", help="sounds to steer away from (optional)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25, the papers' setting)")
    p.add_argument("--cfg", type=finite_float, default=4.5, help="guidance strength (default 4.5)")
    p.add_argument("--guidance", choices=("all", "text", "reference"), default=None,
                   help="what --cfg pushes away from: all conditions, only the text (video and known audio kept "
                        "in both branches, so --cfg strengthens the prompt's timbre), or only the reference (the "
                        "context pathway's summary of the known audio; models trained with it); default: the "
                        "workflow's own (text for --mode tc-vta and edit, all otherwise)")
    p.add_argument("--guidance-rescale", type=finite_float, default=None, metavar="PHI",
                   help="CFG rescale in [0, 1] (as diffusers' guidance_rescale): less over-saturated, quieter hits "
                        "at high --cfg (default: the workflow's own, 0)")
    p.add_argument("--apg-eta", type=finite_float, default=None, metavar="ETA",
                   help="adaptive projected guidance in [0, 1]: the share of guidance's push along the sound already "
                        "there (1 = plain CFG; default: the workflow's own, 0 for the default model: hits at the "
                        "recordings' level)")
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
    p.add_argument("--no-watermark", action="store_true",
                   help="leave out the inaudible provenance watermark generated audio carries by default "
                        "('kling-foley detect FILE' finds it)")
    p.add_argument("--node-module", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--output-node", action="append", default=None, help=argparse.SUPPRESS)


def cmd_generate(args: argparse.Namespace, node_classes: Mapping | None = None, extra: list[str] = ()) -> int:
    mode = getattr(args, "mode", "v2a")
    for name, default in (("mode", "v2a"), ("audio", None), ("context_seconds", 0.0), ("edit_start", 0.0),
                          ("edit_end", 0.0), ("duration", 0.0)):
        setattr(args, name, getattr(args, name, default))
    check_mode(args)
    workflow = find_workflow(MODE_WORKFLOWS[mode] or args.workflow)
    overrides = generate_overrides(args) + list(extra)
    if mode == "tta":
        if getattr(args, "output", None):
            out = Path(args.output)
            if out.suffix.lower() not in (".flac", ".wav"):
                raise SystemExitError(f"--output {out}: --mode tta writes audio; name a .flac or .wav file")
            if out.exists() or out.is_symlink() or not out.parent.is_dir():
                raise SystemExitError(f"--output {out}: already exists or its folder does not; choose another name")
            overrides.insert(0, f"Save Audio.format={json.dumps(out.suffix.lower()[1:])}")
    else:
        container = output_container(args, Path(args.video))  # before any model runs; a --set may override it
        overrides.insert(0, f"Mux Video.container={json.dumps(container)}")
    _setup(args)
    runner = _make_runner(args, node_classes)
    if getattr(args, "no_watermark", False):
        overrides += watermark_off(workflow, runner.node_classes)
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
