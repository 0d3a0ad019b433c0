"""HunyuanVideo-Foley: load memory (bf16 vs fp8) and block-swap overhead. CPU only; run once, by hand.

    python bench/bench_hunyuan.py [--size xxl|xl] [--skip-load] [--keep DIR]

1. Writes a random-weight safetensors file of the chosen size (bf16, streamed to disk tensor by tensor so the
   writer itself stays small), then loads it in fresh subprocesses with ``precision="bf16"`` and
   ``precision="fp8"`` and reports each child's peak RSS (VmHWM) and load time next to the file size.
2. Times one ``predict_flow`` per step (CFG batch of 2) of a tiny and a small model, resident vs. every block
   swapped CPU→CPU. On a CPU the "transfer" is free, so this isolates the hook/bookkeeping cost; on a GPU each
   step additionally moves the swapped blocks' bytes over PCIe (printed as bytes per step).
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kling_foley_core.compat.checkpoints import init_empty  # noqa: E402
from kling_foley_core.hunyuan import PRESETS, HunyuanFoleyDiT, enable_block_swap  # noqa: E402

_ST = {torch.bfloat16: "BF16", torch.float32: "F32"}


def write_random_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype=torch.bfloat16, seed=0) -> int:
    """Stream a safetensors file: header first, then each tensor generated and written on its own."""
    header, offset = {}, 0
    itemsize = torch.empty(0, dtype=dtype).element_size()
    for name, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        header[name] = {"dtype": _ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + n * itemsize]}
        offset += n * itemsize
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in shapes.items():
            t = (torch.randn(shape, generator=g) * 0.02).to(dtype)
            f.write(t.contiguous().view(torch.uint8).numpy().tobytes())
            del t
    return path.stat().st_size


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return -1


def child_load(path: str, precision: str) -> None:
    from kling_foley_core.hunyuan import load_hunyuan_dit

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = load_hunyuan_dit(path, precision=precision, fp8_compute="bf16")
    dt = time.perf_counter() - t0
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    res = {"precision": precision, "load_s": round(dt, 1), "weights_gb": round(weights / 2**30, 2),
           "after_load": {"peak_rss_gb": round(_status("VmHWM") / 2**30, 2),
                          "rss_anon_gb": round(_status("RssAnon") / 2**30, 2),
                          "rss_file_gb": round(_status("RssFile") / 2**30, 2)}}
    # a memory-mapped load reads nothing yet; touch every weight (what the first forward does) and measure again
    with torch.no_grad():
        for t in model.state_dict().values():
            t.view(-1)[:: max(1, 4096 // t.element_size())].float().sum()
    res["after_touching_weights"] = {"peak_rss_gb": round(_status("VmHWM") / 2**30, 2),
                                     "rss_anon_gb": round(_status("RssAnon") / 2**30, 2),
                                     "rss_file_gb": round(_status("RssFile") / 2**30, 2)}
    print(json.dumps(res))


def bench_load(size: str, keep: str | None) -> None:
    meta = init_empty(HunyuanFoleyDiT, **PRESETS[size])
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    n_params = sum(v.numel() for v in meta.state_dict().values())
    tmp = Path(keep or tempfile.mkdtemp(prefix="hvf_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    need = n_params * 2 * 1.1
    free = shutil.disk_usage(tmp).free
    if free < need:
        print(f"not enough disk in {tmp}: need {need / 2**30:.1f} GiB, have {free / 2**30:.1f} GiB")
        return
    path = tmp / f"hvf_{size}_random_bf16.safetensors"
    try:
        t0 = time.perf_counter()
        if not path.is_file():
            write_random_safetensors(path, shapes)
        size_b = path.stat().st_size
        print(f"{size.upper()}: {n_params / 1e9:.2f} B params; {path.name} is {size_b / 2**30:.2f} GiB "
              f"(written in {time.perf_counter() - t0:.0f} s)")
        for precision in ("bf16", "fp8"):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), precision], capture_output=True,
                                 text=True, check=True)
            print("  load", out.stdout.strip().splitlines()[-1])
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_swap() -> None:
    torch.set_num_threads(1)
    configs = {"tiny": PRESETS["tiny"],
               "small": dict(depth_triple_blocks=2, depth_single_blocks=4, hidden_size=256, num_heads=2,
                             sync_feat_dim=768, condition_dim=768, clip_dim=768, audio_vae_latent_dim=128)}
    g = torch.Generator().manual_seed(0)
    for name, cfg in configs.items():
        model = HunyuanFoleyDiT(**cfg).eval()
        c = model.config
        n = 250  # 5 s of 50 Hz latents
        x = torch.randn(2, c.audio_vae_latent_dim, n, generator=g)
        cond = model.prepare_conditions(torch.randn(2, 40, c.clip_dim, generator=g),
                                        torch.randn(2, 112, c.sync_feat_dim, generator=g),
                                        torch.randn(2, 20, c.condition_dim, generator=g), n)
        t = torch.full((2,), 0.5)

        def one_step():
            t0 = time.perf_counter()
            model.predict_flow(x, t, cond)
            return time.perf_counter() - t0

        # alternate resident / swapped measurements so load from other processes hits both alike
        nblocks = c.depth_triple_blocks + c.depth_single_blocks
        resident, swapped, loads, block_bytes = [], [], 0, 0
        with torch.inference_mode():
            one_step()
            for _ in range(9):
                resident.append(one_step())
                swap = enable_block_swap(model, nblocks, execution_device="cpu", storage_device="cpu")
                swapped.append(one_step())
                loads += swap.loads
                block_bytes = sum(t.numel() * t.element_size() for b in swap.blocks for t in b.state_dict().values())
                swap.remove()
        r, s_ = sorted(resident)[4], sorted(swapped)[4]
        print(f"{name}: resident {r * 1e3:.1f} ms/step, all {nblocks} blocks swapped {s_ * 1e3:.1f} ms/step "
              f"(median of 9 alternating; overhead {(s_ - r) * 1e3:+.2f} ms = {(s_ / r - 1) * 100:+.1f} %; "
              f"{loads // 9} block loads per step; on a GPU {block_bytes / 2**20:.1f} MiB would cross PCIe per step)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_load(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="xxl", choices=["xxl", "xl"])
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--keep", help="directory for the random checkpoint (kept); default: a temp dir, deleted")
    args = ap.parse_args()
    bench_swap()
    if not args.skip_load:
        bench_load(args.size, args.keep)


if __name__ == "__main__":
    main()
