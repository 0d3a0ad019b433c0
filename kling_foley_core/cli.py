"""``kling-foley`` command line: run ComfyUI workflows headless.

    kling-foley run WORKFLOW.json [--set NODE.input=value ...] [--output-dir DIR] [--validate-only]
    kling-foley batch WORKFLOW.json --inputs FOLDER --set-input NODE.input [--output-dir DIR]

Subcommands live in ``COMMANDS``: each is a small ``add_arguments(parser)`` function plus a
``handler(args, node_classes=None) -> int`` registered with ``register_command(...)``, so ``eval`` or ``generate`` can be added later without touching the rest.

Exit codes: 0 success, 1 a node failed while running, 2 bad command line / workflow / input (one message, no
traceback), 130 interrupted (Ctrl-C). ``-v`` shows progress and per-node timings, ``--debug`` tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

logger = logging.getLogger("kling_foley")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg")


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[..., int]  # handler(args, node_classes=None) -> exit code


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                     handler: Callable[..., int]) -> None:
    """Add a subcommand (later ones such as ``eval`` or ``generate`` register the same way)."""
    COMMANDS[name] = Command(name, help, add_arguments, handler)


# ------------------------------------------------------------------------------------------------ node classes
def load_node_classes(extra_modules: list[str] | None = None) -> dict:
    """The pack's ``NODE_CLASS_MAPPINGS`` (imported lazily, here), plus those of ``--node-module`` modules."""
    mapping: dict = {}
    try:
        mod = importlib.import_module("kling_foley_nodes")
    except ImportError:
        mod = _load_nodes_from_checkout()
    mapping.update(getattr(mod, "NODE_CLASS_MAPPINGS", {}))
    for name in extra_modules or []:
        try:
            extra = importlib.import_module(name)
        except ImportError as e:
            raise SystemExitError(f"--node-module {name!r} cannot be imported: {e}") from None
        if not isinstance(getattr(extra, "NODE_CLASS_MAPPINGS", None), Mapping):
            raise SystemExitError(f"--node-module {name!r} has no NODE_CLASS_MAPPINGS dict")
        mapping.update(extra.NODE_CLASS_MAPPINGS)
    return mapping


def _load_nodes_from_checkout():
    """Source checkout without ``pip install``: load ``nodes/`` next to this package as ``kling_foley_nodes``."""
    init = Path(__file__).resolve().parent.parent / "nodes" / "__init__.py"
    if not init.is_file():
        raise SystemExitError("cannot import the node package kling_foley_nodes; install the project with "
                              "'pip install -e .' (or 'pip install kling-foley')")
    spec = importlib.util.spec_from_file_location("kling_foley_nodes", init, submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kling_foley_nodes"] = mod
    spec.loader.exec_module(mod)
    return mod


class SystemExitError(Exception):
    """A command-line problem: printed as one line, exit code 2."""


# ------------------------------------------------------------------------------------------------ shared options
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", help="ComfyUI workflow .json (API format or the UI's saved format)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.input=value",
                   help="override an input before validation; NODE is a node id, title or class_type; value is "
                        "JSON if it parses, else a string (repeatable)")
    p.add_argument("--output-dir", default=None, help="folder for saved results (default ./output)")
    p.add_argument("--models-dir", default=None, action="append",
                   help="folder holding the kling_foley model kinds (default $KLING_FOLEY_MODELS or "
                        "./models/kling_foley; repeatable)")
    p.add_argument("--node-module", action="append", default=[], metavar="MODULE",
                   help="also load NODE_CLASS_MAPPINGS from this importable module (repeatable)")
    p.add_argument("--output-node", action="append", default=None, metavar="ID",
                   help="run only these output nodes (default: every output node)")


def _setup(args: argparse.Namespace) -> None:
    from .runner import paths

    if args.output_dir is not None:
        paths.set_output_directory(args.output_dir)
    if args.models_dir:
        paths.set_models_directory(args.models_dir)
    check_output_directory(paths.get_output_directory(), "--output-dir" if args.output_dir is not None else
                           "the output folder")


def check_output_directory(folder: Path, name: str = "--output-dir") -> None:
    """Up front, before any model loads: ``folder`` is a folder (or can be made one) where files can be written.

    The write is tried (a temporary file, removed at once), so a read-only file system is found even by root.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent  # the nearest existing folder, where the missing ones will be made
    if not existing.is_dir():
        what = "is a file" if existing.is_file() else "is not a folder"
        where = "" if existing == folder else f": '{existing}' on its path"
        raise SystemExitError(f"{name} '{folder}'{where} {what}; choose a folder for the results")
    try:
        fd, probe = tempfile.mkstemp(prefix=".kling_foley_write_test_", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if existing == folder else f" (in '{existing}', where it would be made)"
        raise SystemExitError(f"{name} '{folder}' is not writable{where}: {e.strerror or e}; choose a folder "
                              "you can write to") from None


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` parse as floats but pass every range check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _make_runner(args: argparse.Namespace, node_classes: Mapping | None):
    from .preflight import check_prompt
    from .runner import WorkflowRunner

    classes = node_classes if node_classes is not None else load_node_classes(args.node_module)
    return WorkflowRunner(classes, checks=[check_prompt])


def _report(result) -> None:
    from .runner import paths

    root = paths.get_output_directory()
    print(f"ran {len(result.executed)} node(s), {len(result.cached)} cached, in {result.seconds:.2f} s")
    for f in result.saved_files():
        print(f"saved {Path(root, f.get('subfolder', ''), f['filename'])}")


def _event_logger(verbose: bool):
    """Per-node log lines with ``-v`` (tqdm bars from the nodes' ProgressBar show either way)."""
    if not verbose:
        return None
    started: dict[str, float] = {}

    def on_event(name: str, data: dict) -> None:
        nid = data["node"]
        if name == "executing":
            started[nid] = time.perf_counter()
            logger.info("running node %s (%s)", nid, data["class_type"])
        elif name == "executed":
            logger.info("node %s (%s) done in %.2f s", nid, data["class_type"], time.perf_counter() - started.get(nid, 0))
        else:
            logger.info("node %s (%s) cached", nid, data["class_type"])

    return on_event


# ------------------------------------------------------------------------------------------------ run
def _run_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--validate-only", action="store_true",
                   help="load, apply --set, validate and print the API-format prompt; run nothing")


def cmd_run(args: argparse.Namespace, node_classes: Mapping | None = None) -> int:
    _setup(args)
    runner = _make_runner(args, node_classes)
    if args.validate_only:
        prompt = runner.prepare(args.workflow, args.overrides, args.output_node)
        print(json.dumps(prompt, indent=2, default=str))
        print(f"workflow is valid ({len(prompt)} nodes)", file=sys.stderr)
        return EXIT_OK
    on_event = _event_logger(args.verbose)
    result = runner.run(args.workflow, overrides=args.overrides, outputs=args.output_node, on_event=on_event)
    _report(result)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ batch
def _batch_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--inputs", required=True, help="folder of input videos, one run per file")
    p.add_argument("--set-input", required=True, metavar="NODE.input",
                   help="the input that receives each file's path (e.g. 'Load Video.video_path')")
    p.add_argument("--extensions", default=",".join(VIDEO_EXTENSIONS),
                   help="comma-separated file extensions to pick up (default: common video types)")
    p.add_argument("--name-input", default=None, metavar="NODE.input",
                   help="set this input to each file's name without extension (e.g. a save node's "
                        "filename_prefix), so results are named after their video")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failing file")


def split_for_this_process(items: list) -> list:
    """This process's contiguous share of ``items`` when launched as several processes, else all of them.

    Under ``accelerate launch`` (or torchrun; recognised by ``MASTER_ADDR``) the split is
    ``accelerate.PartialState().split_between_processes``. Otherwise, or if accelerate cannot set up its state,
    the same split is computed from RANK/WORLD_SIZE alone, so no distributed rendezvous is ever waited for.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return list(items)
    if os.environ.get("MASTER_ADDR"):
        try:
            from accelerate import PartialState

            state = PartialState()
            # On CPU without MPI accelerate may see one process although WORLD_SIZE says more; then its split
            # would hand every file to every rank, so it is only trusted when it agrees with the launcher.
            if state.num_processes == world:
                with state.split_between_processes(list(items)) as mine:
                    return list(mine)
            logger.info("accelerate sees %d process(es) but WORLD_SIZE=%d; splitting by RANK/WORLD_SIZE",
                        state.num_processes, world)
        except Exception as e:  # noqa: BLE001 - fall back to plain env arithmetic
            logger.warning("accelerate could not split the inputs (%s); using RANK/WORLD_SIZE", e)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    if not 0 <= rank < world:
        raise SystemExitError(f"RANK={rank} is outside WORLD_SIZE={world}")
    per, extra = divmod(len(items), world)  # first `extra` ranks take one more, as accelerate does
    start = rank * per + min(rank, extra)
    return list(items[start:start + per + (1 if rank < extra else 0)])


def cmd_batch(args: argparse.Namespace, node_classes: Mapping | None = None) -> int:
    from .runner import NodeExecutionError, WorkflowError, parse_override

    _setup(args)
    folder = Path(args.inputs)
    if not folder.is_dir():
        raise SystemExitError(f"--inputs {args.inputs} is not a folder")
    exts = tuple(e.strip().lower() if e.strip().startswith(".") else "." + e.strip().lower()
                 for e in args.extensions.split(",") if e.strip())
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise SystemExitError(f"--inputs {args.inputs} holds no files with extensions {', '.join(exts)}")
    target = parse_override(args.set_input + "=")  # checks the NODE.input shape
    namer = parse_override(args.name_input + "=") if args.name_input else None

    def per_file(path: Path) -> list[str]:
        sets = [f"{target.node}.{target.input}={json.dumps(str(path.resolve()))}"]
        if namer is not None:
            sets.append(f"{namer.node}.{namer.input}={json.dumps(path.stem)}")
        return [*args.overrides, *sets]

    mine = split_for_this_process(files)
    runner = _make_runner(args, node_classes)
    # Validate once up front: a broken workflow fails fast instead of once per file.
    runner.prepare(args.workflow, per_file(files[0]), args.output_node)
    on_event = _event_logger(args.verbose)
    failed = 0
    for k, path in enumerate(mine, 1):
        print(f"[{k}/{len(mine)}] {path.name}")
        try:
            result = runner.run(args.workflow, overrides=per_file(path), outputs=args.output_node, on_event=on_event)
        except (WorkflowError, NodeExecutionError) as e:
            failed += 1
            print(f"  failed: {e}", file=sys.stderr)
            if args.stop_on_error:
                break
            continue
        _report(result)
    print(f"done: {len(mine) - failed} of {len(mine)} file(s) succeeded")
    return EXIT_OK if failed == 0 else EXIT_FAILED


register_command("run", "run one workflow", _run_arguments, cmd_run)
register_command("batch", "run one workflow once per video file in a folder", _batch_arguments, cmd_batch)


# ------------------------------------------------------------------------------------------------ main
class _OneLineParser(argparse.ArgumentParser):
    """Bad syntax is one line naming the command and the option (not a usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="kling-foley", description="Kling-Foley: run ComfyUI workflows headless.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log node progress")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        # Also accepted after the subcommand; SUPPRESS keeps a global -v from being reset by the default.
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log node progress")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        cmd.add_arguments(p)
        p.set_defaults(_handler=cmd.handler)
    return parser


def main(argv: list[str] | None = None, *, node_classes: Mapping | None = None) -> int:
    """Entry point of the ``kling-foley`` console script. ``node_classes`` replaces the pack's (for tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # bad syntax: one line, exit code 2; --help: exit code 0
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .runner import NodeExecutionError, ProcessingInterrupted, WorkflowError, interrupt

    previous = _install_sigint(interrupt)
    try:
        return args._handler(args, node_classes=node_classes)
    except (WorkflowError, SystemExitError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NodeExecutionError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE if e.is_user_error else EXIT_FAILED
    except (ProcessingInterrupted, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _restore_sigint(previous)


def _install_sigint(interrupt: Callable[[], None]):
    """First Ctrl-C asks nodes to stop at their next check (outputs stay whole); the second one kills."""
    if _is_main_thread():
        def handler(signum, frame):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("\ninterrupting after the current step (Ctrl-C again to abort)", file=sys.stderr)
            interrupt()

        return signal.signal(signal.SIGINT, handler)
    return None


def _restore_sigint(previous) -> None:
    if previous is not None and _is_main_thread():
        signal.signal(signal.SIGINT, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())


# Further subcommands register themselves on import.
from . import cli_generate  # noqa: E402,F401
from . import cli_eval  # noqa: E402,F401
from . import cli_detect  # noqa: E402,F401
