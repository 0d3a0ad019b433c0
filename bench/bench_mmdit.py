"""MM-DiT benchmark on this machine (CPU): step time, batched CFG, torch.compile, peak memory when loading.

    python bench/bench_mmdit.py [--seconds 8] [--repeats 3] [--threads N] [--compile] [--no-rss]
                                [--rss-preset mmaudio_large_44k] [--rss-dtype fp16]

Cases (random weights, fp32, inference mode, median of ``--repeats`` after one warm-up):

* one velocity evaluation (``predict_flow``) at batch 1 for the ``tiny`` preset and MMAudio ``small_16k`` size
  (157 M parameters) on a clip of ``--seconds``;
* classifier-free guidance: one forward at batch 2 (cond ⊕ uncond, what ``CFGDenoiser(batched=True)`` does)
  against two sequential batch-1 forwards; the speed-up is the ratio;
* ``--compile``: the same step under ``torch.compile`` (cold compile time reported separately; tens of seconds);
* peak RSS (in a fresh subprocess: ``VmHWM``, i.e. what ``getrusage().ru_maxrss`` reports minus the parent's
  pages it inherits at fork/exec) when loading a ~1 B-parameter random
  checkpoint from a safetensors folder, for the library loader (meta init + memory-mapped ``assign``),
  diffusers' ``from_pretrained`` and a naive ``model = Cls(); load_state_dict(load_file(...))``, as a multiple
  of the file size. The high-water mark is reset after the imports (``/proc/self/clear_refs``), so the figure
  is the load's own peak; weights are touched after loading so that lazily mapped pages count too.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(name: str, value: str, note: str = "") -> None:
    print(f"| {name:58s} | {value:>14s} | {note}")


def _randomize(model) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim >= 2 else 1
            p.copy_(torch.randn(p.shape, generator=g) * ((0.8 / fan_in ** 0.5) if p.ndim >= 2 else 0.1))


def bench_forward(preset: str, seconds: float, repeats: int, compile_: bool) -> None:
    from kling_foley_core.models.mmdit_presets import build_mmdit
    from kling_foley_core.sampling import CFGDenoiser

    model = build_mmdit(preset).eval()
    _randomize(model)
    n_params = sum(p.numel() for p in model.parameters())
    lens = model.sequence_lengths(min(seconds, model.config.max_duration))
    c = model.config
    g = torch.Generator().manual_seed(1)
    feats = dict(clip_f=torch.randn(1, lens.clip, c.clip_dim, generator=g),
                 sync_f=torch.randn(1, lens.sync, c.sync_dim, generator=g),
                 text_f=torch.randn(1, c.text_seq_len, c.text_dim, generator=g))
    x = torch.randn(1, lens.latent, c.latent_dim, generator=g)
    label = f"{preset} ({n_params / 1e6:.1f} M, {lens.latent}+{lens.clip}+{c.text_seq_len} tokens)"
    with torch.inference_mode():
        cond = model.prepare_conditions(**feats, duration=lens.duration)
        uncond = model.get_empty_conditions(1, like=cond)
        t_prep = _time(lambda: model.prepare_conditions(**feats, duration=lens.duration), repeats)
        t1 = _time(lambda: model.predict_flow(x, 0.5, cond), repeats)
        batched = CFGDenoiser(model, cond, uncond, 4.5, batched=True)
        sequential = CFGDenoiser(model, cond, uncond, 4.5, batched=False)
        t_b = _time(lambda: batched(x, torch.tensor(0.5)), repeats)
        t_s = _time(lambda: sequential(x, torch.tensor(0.5)), repeats)
    _row(f"{label}: prepare_conditions (once per clip)", f"{t_prep * 1e3:.1f} ms")
    _row(f"{label}: predict_flow batch 1", f"{t1 * 1e3:.1f} ms", f"{1 / t1:.1f} steps/s")
    _row(f"{label}: CFG step, 2 sequential batch-1 calls", f"{t_s * 1e3:.1f} ms")
    _row(f"{label}: CFG step, one batch-2 call", f"{t_b * 1e3:.1f} ms", f"speed-up ×{t_s / t_b:.2f} (target ≥ 1.6)")
    if compile_:
        fn = torch.compile(lambda xx: model.predict_flow(xx, 0.5, cond))
        with torch.inference_mode():
            t0 = time.perf_counter()
            fn(x)
            cold = time.perf_counter() - t0
            t_c = _time(lambda: fn(x), repeats)
            err = (fn(x) - model.predict_flow(x, 0.5, cond)).abs().max().item()
        _row(f"{label}: torch.compile cold compile", f"{cold:.1f} s")
        _row(f"{label}: predict_flow batch 1, compiled", f"{t_c * 1e3:.1f} ms",
             f"×{t1 / t_c:.2f} vs eager, max |Δ| {err:.1e}")


# ------------------------------------------------------------------------------------------------------------------
def _child_load(folder: str, how: str) -> None:
    """Runs in a fresh interpreter: imports, then loads, touches every weight and prints peak RSS as JSON."""
    import gc

    from safetensors.torch import load_file

    from kling_foley_core.compat.convert_mmaudio import load_mmdit
    from kling_foley_core.models.mmdit import KlingFoleyMMDiT

    def rss() -> int:
        # Peak RSS of this process. ru_maxrss also carries the parent's RSS at fork/exec (the kernel folds the
        # pre-exec image into signal->maxrss), so prefer VmHWM, which clear_refs resets; ru_maxrss otherwise.
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    gc.collect()
    try:  # reset the high-water mark so that import-time peaks do not mask the load (Linux ≥ 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = rss()
    t0 = time.perf_counter()
    if how == "library":
        model = load_mmdit(folder)
    elif how == "diffusers":
        # diffusers upcasts to fp32 unless told the dtype: give it the file's own dtype for a fair comparison
        from safetensors import safe_open
        with safe_open(str(Path(folder) / "diffusion_pytorch_model.safetensors"), "pt") as f:
            dtype = f.get_slice(next(iter(f.keys()))).get_dtype()
        torch_dtype = {"F16": torch.float16, "BF16": torch.bfloat16}.get(dtype, torch.float32)
        model = KlingFoleyMMDiT.from_pretrained(folder, torch_dtype=torch_dtype)
    else:
        cfg = {k: v for k, v in json.loads((Path(folder) / "config.json").read_text()).items() if not k.startswith("_")}
        model = KlingFoleyMMDiT(**cfg)  # fp32 random init, then a full in-memory copy of the file
        sd = load_file(str(Path(folder) / "diffusion_pytorch_model.safetensors"))
        model.load_state_dict(sd)
        del sd
        gc.collect()
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        total = sum(float(p.float().abs().sum()) for p in model.parameters())  # page every weight in
    print(json.dumps({"base": base, "peak": rss(), "seconds": elapsed, "dtype": str(model.dtype),
                      "finite": total == total}))


def bench_rss(preset: str, dtype_name: str) -> None:
    from safetensors.torch import save_file

    from kling_foley_core.models.mmdit_presets import build_mmdit

    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    tmp = Path(tempfile.mkdtemp(prefix="bench_mmdit_"))
    folder = tmp / f"{preset}_{dtype_name}"
    try:
        meta = build_mmdit(preset, device="meta")
        folder.mkdir()
        meta.save_config(folder)
        g = torch.Generator().manual_seed(0)
        sd = {k: (torch.randn(v.shape, generator=g) * 0.02).to(dtype) for k, v in meta.state_dict().items()}
        n_params = sum(v.numel() for v in sd.values())
        save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
        del sd
        size = (folder / "diffusion_pytorch_model.safetensors").stat().st_size
        _row(f"checkpoint: {preset}, {n_params / 1e9:.2f} B params, {dtype_name}", f"{size / 2**30:.2f} GiB")
        for how in ("library", "diffusers", "naive"):
            proc = subprocess.run([sys.executable, __file__, "--_child", str(folder), how], capture_output=True,
                                  text=True)
            if proc.returncode:
                _row(f"load ({how})", "failed", proc.stderr.strip().splitlines()[-1] if proc.stderr else "")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            extra = (r["peak"] - r["base"]) / size
            _row(f"load ({how}): peak RSS − RSS after imports", f"{(r['peak'] - r['base']) / 2**30:.2f} GiB",
                 f"×{extra:.2f} file size (target ≤ 1.2); total peak {r['peak'] / 2**30:.2f} GiB; "
                 f"{r['seconds']:.1f} s; {r['dtype']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (cold compile: tens of seconds)")
    p.add_argument("--no-rss", action="store_true", help="skip the loading-memory measurement")
    p.add_argument("--rss-preset", default="mmaudio_large_44k", help="preset of the random checkpoint (~1 B params)")
    p.add_argument("--rss-dtype", default="fp16", choices=["fp16", "fp32", "bf16"])
    p.add_argument("--presets", default="tiny,mmaudio_small_16k")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        _child_load(*args._child)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, clip {args.seconds:g} s, "
          f"median of {args.repeats}")
    print(f"| {'case':58s} | {'value':>14s} | note")
    for preset in filter(None, args.presets.split(",")):
        bench_forward(preset, args.seconds, args.repeats, args.compile)
    if not args.no_rss:
        bench_rss(args.rss_preset, args.rss_dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
