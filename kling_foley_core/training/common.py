"""What every trainer shares: per-step randomness, EMA, resumable checkpoints, metric logs and loss-curve PNGs.

Design choices that make ``--resume`` continue *exactly*:

* every random draw of step ``s`` (noise, flow time, modality dropout, crops) comes from a generator seeded by
  ``(seed, s)`` (:func:`step_generator`), and the batch order is a pure function of ``(seed, epoch)``
  (:func:`epoch_permutation`). A resumed run therefore sees the same batches and the same draws as an
  uninterrupted one, with no data-loader state to save;
* a checkpoint (``accelerate``'s ``save_state``) holds the models, the optimisers, the EMA weights, the step and
  the RNG states; it is written to a temporary folder and renamed, so a crash never leaves a half checkpoint;
* metrics go to ``metrics.jsonl`` (one line per logged step, appended; a resume first drops lines beyond the
  checkpoint's step), and ``loss.png`` is redrawn from that file with Pillow (no matplotlib dependency).

The trainers use ``accelerate.Accelerator``, so the same script runs on one CPU or on several GPUs
(``accelerate launch -m kling_foley_core.training.train_foley ...``).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


class TrainingError(ValueError):
    """Bad trainer argument or folder (names the option, the value and the fix)."""


# ----------------------------------------------------------------------------------------------------------
# Randomness as a function of (seed, step)
# ----------------------------------------------------------------------------------------------------------
def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for step ``step``; ``stream`` separates independent uses within one step."""
    mixed = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2, dtype=np.uint32)
    return torch.Generator("cpu").manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 7919])).permutation(n)


# ----------------------------------------------------------------------------------------------------------
# EMA
# ----------------------------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers (kept on the CPU side of
    the module's device). ``decay`` warms up as ``min(decay, (1 + s) / (10 + s))`` so early weights fade fast."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise TrainingError(f"ema decay={decay} must be in [0, 1) (e.g. 0.999)")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for k, v in module.state_dict().items():
            if k in self.shadow:  # lerp keeps an entry that does not train (frozen encoder, statistics) exact
                self.shadow[k].lerp_(v.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> nn.Module:
        """Load the averaged weights into ``module`` (other entries untouched)."""
        sd = module.state_dict()
        for k, v in self.shadow.items():
            sd[k].copy_(v.to(sd[k].dtype))
        return module

    def averaged(self, module: nn.Module) -> nn.Module:
        """A deep copy of ``module`` holding the averaged weights."""
        return self.copy_to(copy.deepcopy(module))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise TrainingError(f"EMA state does not match the model (keys differ: {sorted(missing)[:4]}); resume "
                                f"with the same model configuration")
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}


class StepCounter:
    """The global step as a checkpointable object (``accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------
def checkpoint_dirs(out: Path) -> list[Path]:
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")),
                  key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out: Path) -> Path | None:
    dirs = checkpoint_dirs(out)
    return dirs[-1] if dirs else None


def save_checkpoint(accelerator, out: Path, step: int, *, keep: int = 2) -> Path | None:
    """``accelerator.save_state`` into ``out/checkpoints/step-NNNNNNN`` (atomic rename); keeps the newest ``keep``."""
    accelerator.wait_for_everyone()
    final = Path(out) / CHECKPOINTS / f"step-{step:07d}"
    if accelerator.is_main_process:
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(final.with_name(final.name + ".tmp")))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(final.with_name(final.name + ".tmp"), final)
        for old in checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resume_from(accelerator, out: Path, resume: str | None, counter: StepCounter) -> int:
    """Load ``resume`` ("latest", a checkpoint folder, or None = fresh start); returns the step to continue at."""
    if not resume:
        return 0
    path = latest_checkpoint(out) if resume == "latest" else Path(resume)
    if path is None:
        log.info("--resume latest: no checkpoint in %s yet, starting from step 0", Path(out) / CHECKPOINTS)
        return 0
    if not path.is_dir():
        raise TrainingError(f"--resume {resume}: '{path}' is not a checkpoint folder; pass 'latest' or a "
                            f"{CHECKPOINTS}/step-N folder")
    accelerator.load_state(str(path))
    log.info("resumed from %s at step %d", path, counter.step)
    return counter.step


# ----------------------------------------------------------------------------------------------------------
# Metrics and the loss-curve PNG
# ----------------------------------------------------------------------------------------------------------
class MetricLog:
    """Append-only ``metrics.jsonl`` (``{"step": s, name: value, ...}``) with a PNG of the curves."""

    def __init__(self, out: Path, enabled: bool = True):
        self.path = Path(out) / "metrics.jsonl"
        self.png = Path(out) / "loss.png"
        self.enabled = enabled

    def truncate(self, step: int) -> None:
        """Drop lines past ``step`` (after a resume from an earlier checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(k + "\n" for k in keep))

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: round(float(v), 6) for k, v in values.items()}}) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]

    def plot(self, keys: Iterable[str] | None = None, title: str = "") -> Path | None:
        if not self.enabled:
            return None
        rows = self.read()
        if not rows:
            return None
        keys = list(keys) if keys is not None else sorted({k for r in rows for k in r if k != "step"})
        series = {k: [(r["step"], r[k]) for r in rows if k in r and math.isfinite(r[k])] for k in keys}
        return plot_curves({k: v for k, v in series.items() if v}, self.png, title=title)


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or len(y) < n:
        return y
    c = np.cumsum(np.concatenate([[0.0], y]))
    out = (c[n:] - c[:-n]) / n
    return np.concatenate([y[: n - 1], out])


def _panel(d, box: tuple[int, int, int, int], name: str, pts: list[tuple[float, float]], colour) -> None:
    """One series in its own axes (own y range; log scale when every value is positive)."""
    x0, y0, x1, y1 = box
    left, bottom, top = x0 + 62, y1 - 28, y0 + 20
    right = x1 - 12
    xs = np.array([p[0] for p in pts], dtype=np.float64)
    ys = np.array([p[1] for p in pts], dtype=np.float64)
    logy = bool((ys > 0).all())
    ty = np.log10(ys) if logy else ys
    ty = _smooth(ty, max(1, len(ty) // 50))
    lo, hi = float(ty.min()), float(ty.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    xl, xh = float(xs.min()), float(xs.max())
    if xh - xl < 1e-9:
        xh = xl + 1.0

    def px(x, y):
        return (left + (x - xl) / (xh - xl) * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top))

    d.text((left, y0 + 4), f"{name}{' (log)' if logy else ''}  last {pts[-1][1]:.4g}", fill="black")
    d.rectangle([left, top, right, bottom], outline="black")
    for k in range(3):
        yv = lo + (hi - lo) * k / 2
        _, yp = px(xl, yv)
        d.line([left - 4, yp, left, yp], fill="black")
        d.text((x0 + 4, yp - 6), f"{10 ** yv:.4g}" if logy else f"{yv:.4g}", fill="black")
    for k in range(3):
        xv = xl + (xh - xl) * k / 2
        xp, _ = px(xv, lo)
        d.line([xp, bottom, xp, bottom + 4], fill="black")
        d.text((xp - 10, bottom + 6), f"{xv:.0f}", fill="black")
    if len(xs) == 1:
        a, b = px(xs[0], ty[0])
        d.ellipse([a - 2, b - 2, a + 2, b + 2], fill=colour)
    else:
        d.line([px(x, y) for x, y in zip(xs, ty)], fill=colour, width=2)


def plot_curves(series: dict[str, list[tuple[float, float]]], path: Path, *, title: str = "",
                size: tuple[int, int] = (900, 520)) -> Path:
    """Loss curves as a PNG drawn with Pillow: one panel per series (each with its own y scale, log when all
    values are positive, lightly smoothed), x = step."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((8, 4), title, fill="black")
    items = [(k, v) for k, v in series.items() if v]
    n = max(1, len(items))
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    cw, ch = w // cols, (h - 20) // rows
    for k, (name, pts) in enumerate(items):
        r, c = divmod(k, cols)
        _panel(d, (c * cw, 20 + r * ch, (c + 1) * cw, 20 + (r + 1) * ch), name, pts, _COLOURS[k % len(_COLOURS)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    img.save(tmp)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------------
# Small shared helpers for the trainer CLIs
# ----------------------------------------------------------------------------------------------------------
def add_common_args(ap: argparse.ArgumentParser, *, steps: int, batch_size: int, lr: float) -> None:
    ap.add_argument("--data", type=Path, nargs="+", required=True,
                    help="SynthHits dataset folder(s) (shard-*.npz or mp4+json); several train on all their clips")
    ap.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics, final weights")
    ap.add_argument("--cache", type=Path, nargs="+", default=None,
                    help="feature cache folder, one per --data folder (default ~/.cache/kling_foley/features/"
                         "<dataset hash>)")
    ap.add_argument("--steps", type=int, default=steps, help="total optimisation steps")
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (and at the end)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--resume", default=None, help="'latest' or a checkpoints/step-N folder")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="checkpoint and stop at this step (the schedule still spans --steps); resume later")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar (e.g. in CI logs)")


def check_common_args(args) -> None:
    for name in ("steps", "batch_size", "save_every", "log_every"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')}={getattr(args, name)} must be a positive integer")
    if not args.lr > 0:
        raise TrainingError(f"--lr={args.lr} must be > 0")
    for data in args.data:
        if not Path(data).is_dir():
            raise TrainingError(f"--data {data}: no such folder; generate one with "
                                f"`python -m kling_foley_core.data.synthhits --out DIR --n N`")
    if args.threads:
        torch.set_num_threads(args.threads)


def end_step(args) -> int:
    """Where this invocation stops: ``--steps``, or earlier with ``--stop-at``."""
    return args.steps if args.stop_at is None else max(0, min(args.steps, args.stop_at))


def make_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def progress(total: int, initial: int, disable: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=disable, desc=desc, dynamic_ncols=True, smoothing=0.05)


def lr_at(step: int, base: float, warmup: int, total: int, final_fraction: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``final_fraction·base``."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_folder_from(src: Path, out: Path, edit: Callable[[Path], None]) -> Path:
    """Write ``out`` as a copy of folder ``src`` changed by ``edit(copy)``: built beside it under a temporary name
    and renamed into place at the end, so a failure (a TrainingError, a full disk) leaves no half-written ``out``."""
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        edit(tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise TrainingError(f"OUT {out}: writing failed ({e.strerror or e}); nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def cli_main(build_parser, run, argv: list[str] | None = None) -> int:
    """The trainers' shared entry point: parse, run, and turn a TrainingError into one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except TrainingError as e:
        print(f"error: {e}")
        return 2
    return 0
