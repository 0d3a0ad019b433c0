"""The demo clip's spectrogram: the true soundtrack above what the default model makes of the video.

    python bench/demo_spectrogram.py OUT.png [--weights DIR LABEL ...] [--seed 0] [--steps 25]

Renders the clip ``kling-foley demo --seed SEED`` uses (the first held-out SynthHits clip with hits), generates its
soundtrack with each weights folder (default: the shipped one), and draws the log-power spectrograms of the mono
mixes (0-11 kHz, 80 dB range, same time axis) one above the other with Pillow.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SR = 22050
N_FFT, HOP = 1024, 128
HEIGHT, RANGE_DB = 170, 80.0


def spectrogram_db(mono: np.ndarray) -> np.ndarray:
    x = np.pad(mono, (N_FFT // 2, N_FFT // 2))
    n = 1 + (len(x) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    p = np.abs(np.fft.rfft(x[idx] * np.hanning(N_FFT), axis=1)) ** 2
    return 10 * np.log10(p + 1e-12).T  # (bins, frames)


def colour(v: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB: black, purple, orange, pale yellow (a magma-like ramp)."""
    stops = np.array([[0, 0, 4], [80, 18, 123], [183, 55, 121], [252, 137, 97], [252, 253, 191]], np.float64)
    pos = np.clip(v, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def panel(mono: np.ndarray, width: int, top_db: float, label: str):
    from PIL import Image, ImageDraw

    s = spectrogram_db(mono)
    img = colour((s - (top_db - RANGE_DB)) / RANGE_DB)[::-1]  # low frequencies at the bottom
    im = Image.fromarray(img).resize((width, HEIGHT), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    d.text((6, 4), label, fill=(255, 255, 255))
    return im


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--weights", nargs=2, action="append", metavar=("DIR", "LABEL"), default=[])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args(argv)
    import torch
    from PIL import Image, ImageDraw

    from kling_foley_core.data.recordings import load_bank, resample
    from kling_foley_core.data.synthhits import generate_clip
    from kling_foley_core.default_model import default_pipeline

    bank = load_bank()
    for index in range(100):
        clip = generate_clip(bank, seed=args.seed, index=index, split="heldout")
        if clip.has_hits:
            break
    rows = [("true soundtrack (the recordings)", resample(clip.audio.mean(0), clip.sample_rate, SR))]
    frames = torch.from_numpy(clip.frames).float() / 255.0
    for folder, label in args.weights or [(None, "foley-tiny")]:
        pipe = default_pipeline("cpu", directory=folder)
        res = pipe(frames=frames, fps=clip.fps, num_inference_steps=args.steps, guidance_scale=4.5, seed=args.seed)
        rows.append((label, resample(res.waveform[0].mean(0).numpy(), res.sample_rate, SR)))
    n = min(len(r[1]) for r in rows)
    width = 900
    top = max(float(spectrogram_db(r[1][:n]).max()) for r in rows)
    panels = [panel(r[1][:n], width, top, f"{r[0]}  (0-{SR // 2000} kHz, {RANGE_DB:.0f} dB)") for r in rows]
    sheet = Image.new("RGB", (width, (HEIGHT + 4) * len(panels) + 18), (255, 255, 255))
    for i, p in enumerate(panels):
        sheet.paste(p, (0, i * (HEIGHT + 4)))
    d = ImageDraw.Draw(sheet)
    y = (HEIGHT + 4) * len(panels) + 2
    for t in range(int(clip.duration) + 1):
        x = int(t / clip.duration * (width - 1))
        d.line([(x, y - 4), (x, y)], fill=(0, 0, 0))
        d.text((min(x + 2, width - 30), y), f"{t} s", fill=(0, 0, 0))
    for e in clip.events:  # the true hit times, as ticks under the panels
        x = int(e.time / clip.duration * (width - 1))
        d.line([(x, y - 10), (x, y - 5)], fill=(200, 0, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {clip.clip_id}, {clip.duration:.2f} s, {len(clip.events)} hits; rows: "
          + ", ".join(r[0] for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
