"""Where nodes read models from and write results to, inside ComfyUI and headless.

* Output directory: ComfyUI's ``folder_paths.get_output_directory()`` when ComfyUI is importable at call time,
  else the directory the CLI set (``--output-dir``), else ``./output``.
* ``filename_prefix`` works like ComfyUI's save nodes: it may name sub-folders (``"foley/take"``), it may use
  ``%date%``-style variables, and it may never leave the output folder (``..``, absolute paths are refused).
* ``next_output_path`` gives the next free ``<prefix>_00001.<ext>`` (counter one above the highest one present,
  like ComfyUI's SaveAudio), and ``atomic_write`` writes through a temporary file that is renamed into place only
  when the writer finished, so an error or an interrupt never leaves a half-written or overwritten file;
  ``save_output(prefix, ext, write)`` combines both and is safe when several processes share the folder.
* Model folders: ``models/kling_foley/<kind>/`` inside ComfyUI (plus any extra paths registered under the
  ``kling_foley`` folder name), headless the ``KLING_FOLEY_MODELS`` environment variable (``os.pathsep``
  separated) or an explicit directory, default ``./models/kling_foley``. A folder holding ``config.json`` is one
  model: lists show the folder, never the files inside it.
* Input files: headless any path (absolute, ``~``, relative to the working folder). Inside ComfyUI only files in
  its ``input/`` folder and sub-folders, named relative to it: anything else is refused from its name alone,
  before the file system is asked, so the answer never tells whether a file outside ``input/`` exists.
* Errors raised inside ComfyUI name ComfyUI's folders (``models/kling_foley/<kind>/``, ``input/``, ``output/``);
  headless they name the CLI's ``--models-dir`` / ``--output-dir``.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import ModelNotFoundError, OutputPathError, WorkflowError

MODELS_ENV = "KLING_FOLEY_MODELS"
MODEL_FOLDER_NAME = "kling_foley"
DEFAULT_OUTPUT_DIR = "output"
DEFAULT_MODELS_DIR = os.path.join("models", MODEL_FOLDER_NAME)

_output_dir: str | None = None
_models_dirs: list[str] | None = None


def _comfy_folder_paths():
    try:  # at call time: inside ComfyUI this module is already imported and cheap to get
        import folder_paths  # type: ignore[import-not-found]

        return folder_paths
    except Exception:  # noqa: BLE001 - anything but a working ComfyUI means "headless"
        return None


def in_comfyui() -> bool:
    """True when running inside ComfyUI (its ``folder_paths`` module is importable)."""
    return _comfy_folder_paths() is not None


# --------------------------------------------------------------------------------------------- output folder
def set_output_directory(path: str | os.PathLike | None) -> None:
    """Headless output folder (the CLI's ``--output-dir``); ``None`` restores the default ``./output``."""
    global _output_dir
    _output_dir = None if path is None else os.fspath(path)


def get_output_directory() -> Path:
    fp = _comfy_folder_paths()
    if fp is not None and hasattr(fp, "get_output_directory"):
        return Path(fp.get_output_directory())
    return Path(_output_dir if _output_dir is not None else DEFAULT_OUTPUT_DIR)


def _expand_variables(prefix: str) -> str:
    now = time.localtime()
    subs = {
        "%year%": f"{now.tm_year}",
        "%month%": f"{now.tm_mon:02d}",
        "%day%": f"{now.tm_mday:02d}",
        "%hour%": f"{now.tm_hour:02d}",
        "%minute%": f"{now.tm_min:02d}",
        "%second%": f"{now.tm_sec:02d}",
        "%date%": time.strftime("%Y-%m-%d", now),
    }
    for key, value in subs.items():
        prefix = prefix.replace(key, value)
    return prefix


def resolve_output_prefix(filename_prefix: str, output_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Split ``filename_prefix`` into (folder inside the output directory, file-name stem) and check it.

    Raises ``OutputPathError`` naming the prefix when it is empty, absolute, or climbs out of the output folder.
    """
    if not isinstance(filename_prefix, str) or not filename_prefix.strip():
        raise OutputPathError(f"filename_prefix must be a non-empty string, got {filename_prefix!r}")
    prefix = _expand_variables(filename_prefix.strip()).replace("\\", "/")
    if os.path.isabs(prefix) or prefix.startswith("/") or re.match(r"^[A-Za-z]:", prefix):
        where = ("ComfyUI's output/ folder" if in_comfyui() and output_dir is None
                 else "the output folder (e.g. 'foley/take') and choose the folder itself with --output-dir")
        raise OutputPathError(
            f"filename_prefix {filename_prefix!r} is an absolute path; use a path relative to {where}"
        )
    root = Path(output_dir if output_dir is not None else get_output_directory()).resolve()
    sub, _, stem = prefix.rpartition("/")
    if not stem or stem in (".", ".."):
        raise OutputPathError(f"filename_prefix {filename_prefix!r} has no file name part (e.g. 'foley/take')")
    folder = (root / sub).resolve() if sub else root
    if os.path.commonpath([str(root), str(folder)]) != str(root):
        where = "(ComfyUI's output/)" if in_comfyui() and output_dir is None else str(root)
        raise OutputPathError(
            f"filename_prefix {filename_prefix!r} leaves the output folder {where}; remove '..' from it"
        )
    return folder, stem


def _existing_counter(name: str, stem: str) -> int | None:
    m = re.match(re.escape(stem) + r"_(\d+)_?(?:\.|$)", name)
    return int(m.group(1)) if m else None


def next_output_path(filename_prefix: str, ext: str, output_dir: str | os.PathLike | None = None,
                     *, create: bool = True) -> Path:
    """Next free ``<folder>/<stem>_<counter:05d>.<ext>``: one above the highest counter already used by the stem.

    Counters of any extension count (``take_00003.wav`` makes the next ``.mp4`` ``take_00004``) so the files
    of one run stay paired, as in ComfyUI.
    """
    folder, stem = resolve_output_prefix(filename_prefix, output_dir)
    ext = ext.lstrip(".")
    if not re.fullmatch(r"[A-Za-z0-9]+", ext):
        raise OutputPathError(f"file extension {ext!r} must be letters and digits only (e.g. 'wav', 'mp4')")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    used = [c for c in (_existing_counter(p.name, stem) for p in folder.iterdir()) if c is not None] \
        if folder.is_dir() else []
    counter = max(used, default=0) + 1
    path = folder / f"{stem}_{counter:05d}.{ext}"
    while path.exists():  # another writer raced us; never overwrite
        counter += 1
        path = folder / f"{stem}_{counter:05d}.{ext}"
    return path


def output_ui_entry(path: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> dict:
    """The ``{"filename", "subfolder", "type": "output"}`` record ComfyUI's UI expects for a saved file."""
    root = Path(output_dir if output_dir is not None else get_output_directory()).resolve()
    p = Path(path).resolve()
    sub = p.parent.relative_to(root).as_posix() if p.parent != root else ""
    return {"filename": p.name, "subfolder": sub, "type": "output"}


def _temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """An empty temporary file in ``folder`` with the permissions a plainly created file would get (mkstemp makes
    it owner-only, which the finished output would otherwise keep)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(name, 0o666 & ~mask)
    return Path(name)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block finishes without error.

    On any exception (including an interrupt) the temporary file is removed and ``path`` is untouched. With
    ``overwrite=False`` an existing ``path`` is an error, checked again at commit time.
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise OutputPathError(f"output file {final} already exists; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_file(final.parent, f".{final.stem}.", f".partial{final.suffix}")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)  # fails if final appeared meanwhile: never clobber
            except FileExistsError:
                raise OutputPathError(f"output file {final} already exists; refusing to overwrite it") from None
            except OSError:  # filesystem without hard links
                if final.exists():
                    raise OutputPathError(f"output file {final} already exists; refusing to overwrite it") from None
                os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_output(filename_prefix: str, ext: str, write: Callable[[Path], None],
                output_dir: str | os.PathLike | None = None) -> Path:
    """Write a new output file safely and return its path: the usual one-call helper for save nodes.

    ``write(tmp_path)`` writes the whole file to a temporary path in the target folder; only then is it linked
    under the next free ``<prefix>_<counter>.<ext>`` name. If another process took that name meanwhile (several
    ``batch`` workers sharing an output folder) the next counter is tried, so nothing is ever overwritten, and
    on any error or interrupt inside ``write`` no file is left behind.
    """
    folder, stem = resolve_output_prefix(filename_prefix, output_dir)
    first = next_output_path(filename_prefix, ext, output_dir)  # checks ext, creates the folder
    tmp = _temp_file(folder, f".{stem}.", f".partial.{ext.lstrip('.')}")
    try:
        write(tmp)
        path = first
        for _ in range(10_000):
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                path = next_output_path(filename_prefix, ext, output_dir)
            except OSError:  # no hard links on this filesystem: best effort, still never clobbers knowingly
                if path.exists():
                    path = next_output_path(filename_prefix, ext, output_dir)
                    continue
                os.replace(tmp, path)
                return path
        raise OutputPathError(f"could not find a free file name for filename_prefix {filename_prefix!r}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------------------------- model folders
def set_models_directory(paths: str | os.PathLike | list | None) -> None:
    """Headless model root(s) (the CLI's ``--models-dir``); overrides ``KLING_FOLEY_MODELS``. ``None`` resets."""
    global _models_dirs
    if paths is None:
        _models_dirs = None
    elif isinstance(paths, (list, tuple)):
        _models_dirs = [os.fspath(p) for p in paths]
    else:
        _models_dirs = [os.fspath(paths)]


def model_roots() -> list[Path]:
    """The ``kling_foley`` model roots searched, in priority order."""
    fp = _comfy_folder_paths()
    if fp is not None and hasattr(fp, "models_dir"):
        roots = [Path(fp.models_dir) / MODEL_FOLDER_NAME]
        names = getattr(fp, "folder_names_and_paths", {}) or {}
        if MODEL_FOLDER_NAME in names:  # extra_model_paths.yaml entries or a registration by the node pack
            roots += [Path(p) for p in fp.get_folder_paths(MODEL_FOLDER_NAME)]
        return list(dict.fromkeys(roots))
    if _models_dirs is not None:
        return [Path(p) for p in _models_dirs]
    env = os.environ.get(MODELS_ENV)
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path(DEFAULT_MODELS_DIR)]


def model_folders(kind: str) -> list[Path]:
    """``<root>/<kind>`` for every model root (``kind`` such as ``"mmdit"``, ``"vae"``, ``"vocoder"``)."""
    if not kind or "/" in kind or "\\" in kind or kind in (".", ".."):
        raise ValueError(f"model kind must be a plain folder name like 'vae', got {kind!r}")
    return [root / kind for root in model_roots()]


def is_model_folder(path: Path) -> bool:
    """A folder holding ``config.json`` is one model (diffusers/transformers layout), listed and loaded whole."""
    return path.is_dir() and (path / "config.json").is_file()


def list_models(kind: str, extensions: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")) -> list[str]:
    """A loader's COMBO list: model files and model folders (relative to their folder, ``/``-separated, sorted).

    A model folder (see :func:`is_model_folder`) is one entry; the files inside it are not listed.
    """
    found: set[str] = set()
    exts = tuple(e.lower() for e in extensions)
    for folder in model_folders(kind):
        if not folder.is_dir():
            continue
        for here, dirs, files in os.walk(folder):  # a linked model folder is listed, linked trees not walked
            base = Path(here)
            models = [d for d in dirs if is_model_folder(base / d)]
            found.update((base / d).relative_to(folder).as_posix() for d in models)
            dirs[:] = sorted(d for d in dirs if d not in models and not d.startswith("."))
            found.update((base / f).relative_to(folder).as_posix() for f in files
                         if f.lower().endswith(exts) and not f.startswith("."))
    return sorted(found)


def find_model(kind: str, name: str | os.PathLike) -> Path:
    """Full path of model file (or folder) ``name`` of ``kind``. Headless an absolute path is taken as it is;
    inside ComfyUI only names inside its model folders are read. A file inside a model folder (the
    ``config.json`` + weights layout) stands for that folder.

    Raises ``ModelNotFoundError`` naming the file and every folder searched.
    """
    name = os.fspath(name)
    if not name:
        raise ModelNotFoundError(f"no {kind} model file given; put one in {_folders_text(kind)}")
    if _looks_absolute(name):
        if in_comfyui():  # refused by its name alone: the message must not tell whether the file exists
            raise ModelNotFoundError(f"{kind} model {name!r} is a path outside ComfyUI's models/{MODEL_FOLDER_NAME}/"
                                     f"{kind}/ folder; put the file there and pick it from the list")
        path = Path(name).expanduser()
        if path.exists():
            return _whole_model(path, None)
        raise ModelNotFoundError(f"{kind} model file {name} does not exist")
    if ".." in Path(name).parts:
        raise ModelNotFoundError(f"{kind} model name {name!r} must not contain '..'")
    for folder in model_folders(kind):
        candidate = folder / name
        if candidate.exists():
            return _whole_model(candidate, folder)
    if in_comfyui():
        hint = f"put it in ComfyUI's models/{MODEL_FOLDER_NAME}/{kind}/ folder ({_folders_text(kind)}) and refresh"
    else:
        hint = (f"expected it in {_folders_text(kind)} (set {MODELS_ENV} or --models-dir to the folder holding "
                f"'{kind}/')")
    raise ModelNotFoundError(f"{kind} model file {name!r} not found; {hint}")


def _looks_absolute(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", name) is not None


def _whole_model(path: Path, root: Path | None) -> Path:
    """``path``, or the model folder it lies in (a pick of ``folder/diffusion_pytorch_model.safetensors``)."""
    if path.is_file() and path.parent != root and is_model_folder(path.parent):
        return path.parent
    return path


def _folders_text(kind: str) -> str:
    folders = [str(f) for f in model_folders(kind)]
    return folders[0] if len(folders) == 1 else "one of " + ", ".join(folders)


# --------------------------------------------------------------------------------------------- input files
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv",
                    ".flv", ".ogv", ".3gp")


class InputPathError(WorkflowError):
    """An input file name that cannot be read here (inside ComfyUI: not in its input folder)."""


def resolve_input_path(path: str | os.PathLike) -> Path:
    """An input file named by the user.

    Headless: absolute, ``~``, or relative to the working folder, returned as given when nothing exists there
    (the caller's own check then names it). Inside ComfyUI: :func:`comfy_input_file`.
    """
    if in_comfyui():
        return comfy_input_file(path)
    return Path(os.fspath(path)).expanduser()


def _input_directory() -> Path:
    return Path(_comfy_folder_paths().get_input_directory())


def comfy_input_file(name: str | os.PathLike) -> Path:
    """The existing file ``name`` names inside ComfyUI's input folder (sub-folders allowed, ``clip.mp4 [input]``
    accepted as the upload widget writes it).

    Raises :class:`InputPathError` for an absolute path, ``~``, ``..`` or a file that is not there. A name that would leave the input folder is refused from the name alone, before the file system
    is asked, with the same message whether or not such a file exists.
    """
    text = os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
    if text is None or not text.strip():
        raise InputPathError(f"no input file given ({name!r}); upload a video or pick one from ComfyUI's input/ folder")
    rel = text.strip()
    if rel.endswith("[input]"):
        rel = rel[: -len("[input]")].rstrip()
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if _looks_absolute(rel) or "\0" in rel or ".." in parts or not parts:
        raise InputPathError(f"{text!r} is not a file of ComfyUI's input/ folder: inside ComfyUI only files in "
                             "input/ (and its sub-folders) are read; upload the video with the node's upload "
                             "button or copy it into input/, then pick it from the list")
    path = _input_directory().joinpath(*parts)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "was not found"
        raise InputPathError(f"{text!r} {what} in ComfyUI's input/ folder; upload the video with the node's upload "
                             "button or copy it into input/, then pick it from the list")
    return path


def list_input_videos() -> list[str]:
    """Video files in ComfyUI's input folder and its sub-folders (``sub/clip.mp4``), sorted, for a COMBO list;
    an empty list headless."""
    if not in_comfyui():
        return []
    root = _input_directory()
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(here)
        found += [(base / f).relative_to(root).as_posix() for f in files
                  if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith(".")]
    return sorted(found)
