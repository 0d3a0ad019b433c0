"""Make the BigVGAN parity fixtures in tests/fixtures/bigvgan/ with NVIDIA's own package.

Run it where ``bigvgan`` (NVIDIA, 2.4.1) is importable; it needs nothing from this library. A throw-away venv
is enough: ``pip install torch==2.13.0 safetensors && pip install --no-deps bigvgan==2.4.1 &&
pip install librosa scipy matplotlib huggingface_hub`` (``import bigvgan`` pulls those in), then

    python bench/make_bigvgan_fixture.py [--out tests/fixtures/bigvgan]

For each tiny configuration it builds ``bigvgan.BigVGAN`` (torch anti-aliased activation, old-style weight
norm, so the state dict holds ``weight_g``/``weight_v`` as the released checkpoints do), replaces every
parameter by seeded random values of a realistic spread (the package initialises α, β to a constant and the
weights to N(0, 0.01), which would make a weak test), runs it on a seeded random log-mel and writes:

* ``PREFIX.json``: the package's config (as in a release's config.json), the reference name and ``io_keys``;
* ``PREFIX.safetensors``: the package's state dict, keys and weight-norm split unchanged;
* ``PREFIX.io.safetensors``: ``mel`` (B, num_mels, F) and the package's ``waveform`` (B, F·hop).

The weights are scaled so that the output stays inside (-1, 1): a saturated output (clamped or tanh'd to ±1)
would let a wrong model pass.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIGS = {
    # The 44 kHz v2 layout (AMPBlock1, snakebeta with log-scale α/β, clamp instead of tanh, no final bias), tiny.
    "bigvgan_v2_tiny": dict(
        num_mels=16, upsample_rates=[4, 2, 2], upsample_kernel_sizes=[8, 4, 4], upsample_initial_channel=32,
        resblock="1", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 3]],
        activation="snakebeta", snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False,
        sampling_rate=44100, n_fft=64, hop_size=16, win_size=64, fmin=0, fmax=None),
    # The other code paths: AMPBlock2, plain snake with linear α, and the v1 defaults (tanh, final bias) by
    # omission of the two use_*_at_final keys, as in v1 config files.
    "bigvgan_v1_tiny": dict(
        num_mels=12, upsample_rates=[2, 2, 2], upsample_kernel_sizes=[4, 4, 4], upsample_initial_channel=24,
        resblock="2", resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 3], [1, 3], [2, 4]],
        activation="snake", snake_logscale=False, sampling_rate=16000, n_fft=32, hop_size=8, win_size=32,
        fmin=0, fmax=8000),
}
FRAMES = 24
BATCH = 2


def randomise(model: torch.nn.Module, gen: torch.Generator, scale: float, logscale: bool) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight_v":
                p.copy_(torch.randn(p.shape, generator=gen))
            elif leaf == "weight_g":
                p.copy_(scale * (0.5 + torch.rand(p.shape, generator=gen)))
            elif leaf in ("alpha", "beta"):
                if logscale:
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif leaf == "bias":
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            else:
                raise RuntimeError(f"unexpected parameter {name}")


def make(name: str, cfg: dict, out_dir: Path, seed: int) -> None:
    import bigvgan
    from bigvgan.env import AttrDict

    gen = torch.Generator().manual_seed(seed)
    hop = math.prod(cfg["upsample_rates"])
    mel = -4.0 + 1.5 * torch.randn(BATCH, cfg["num_mels"], FRAMES, generator=gen)  # log-mel-like values
    scale = 1.0
    for _ in range(20):  # shrink the weights until no output sample touches the ±1 bound
        model = bigvgan.BigVGAN(AttrDict(dict(cfg)), use_cuda_kernel=False).eval()
        randomise(model, torch.Generator().manual_seed(seed + 1), scale, cfg["snake_logscale"])
        with torch.no_grad():
            wav = model(mel).squeeze(1)  # (B, T)
        if wav.abs().max() < 0.95 and wav.std() > 0.02:
            break
        scale *= 0.8
    else:
        raise RuntimeError(f"{name}: could not find a weight scale with an unsaturated, non-silent output")
    assert wav.shape == (BATCH, FRAMES * hop), wav.shape
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    assert any(k.endswith("weight_g") for k in sd), "expected old-style weight norm keys"
    spec = {
        "reference": f"NVIDIA bigvgan {getattr(bigvgan, '__version__', '2.4.1')} bigvgan.BigVGAN "
                     f"(torch anti-aliased activation, use_cuda_kernel=False)",
        "config": cfg,
        "weight_scale": scale,
        "seed": seed,
        "note": "state dict as saved by the package (weight_g/weight_v, sinc filter buffers); "
                "waveform = BigVGAN(mel).squeeze(1), fp32 CPU",
        "io_keys": {"mel": list(mel.shape), "waveform": list(wav.shape)},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(spec, indent=1) + "\n")
    save_file(sd, str(out_dir / f"{name}.safetensors"))
    save_file({"mel": mel.contiguous(), "waveform": wav.contiguous()}, str(out_dir / f"{name}.io.safetensors"))
    print(f"{name}: {sum(v.numel() for v in sd.values())} values, weight scale {scale:.3f}, "
          f"waveform max |x| {wav.abs().max():.3f} std {wav.std():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bigvgan"))
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        make(name, cfg, Path(args.out), args.seed + 10 * i)


if __name__ == "__main__":
    main()
