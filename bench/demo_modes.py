"""Known-audio modes on the demo clip, as spectrograms: Foley extension's seam and an edit's window.

    python bench/demo_modes.py OUT.png [--weights DIR] [--seed 0] [--steps 25]

Renders the clip ``kling-foley demo --seed SEED`` uses (the first held-out SynthHits clip with hits) and draws,
on one time axis: its true soundtrack; Foley extension given the first 40 % of it (the seam marked); and an edit
that regenerates a 2-s window with the text of another sound class (the window marked). Ticks under the panels are
the true hit times.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from demo_spectrogram import HEIGHT, RANGE_DB, SR, panel, spectrogram_db


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args(argv)
    import torch
    from PIL import Image, ImageDraw

    from kling_foley_core.data.recordings import load_bank, resample
    from kling_foley_core.data.synthhits import generate_clip
    from kling_foley_core.default_model import default_pipeline

    bank = load_bank()
    clip = next(c for c in (generate_clip(bank, seed=args.seed, index=i, split="heldout") for i in range(100))
                if c.has_hits)
    pipe = default_pipeline("cpu", directory=args.weights)
    pipe.set_progress_bar_config(disable=True)
    frames = torch.from_numpy(clip.frames).float() / 255.0
    audio = torch.from_numpy(clip.audio).float()
    given = 0.4 * clip.duration
    fe = pipe(frames=frames, fps=clip.fps, audio=audio[:, : int(given * clip.sample_rate)],
              audio_sample_rate=clip.sample_rate, audio_mode="continue", num_inference_steps=args.steps,
              seed=args.seed)
    t0 = round(min(max(0.3 * clip.duration, 0.5), clip.duration - 2.5), 2)
    heard = {e.sound_class for e in clip.events}
    other = next(c for c in ("bell", "clap", "snare", "kick", "footstep") if c not in heard)
    edit = pipe(frames=frames, fps=clip.fps, audio=audio, audio_sample_rate=clip.sample_rate, audio_mode="edit",
                edit_start=t0, edit_end=t0 + 2.0, prompt=f"a {other}", guidance="text",
                num_inference_steps=args.steps, seed=args.seed)
    mono = lambda w, sr: resample(np.asarray(w).mean(0), sr, SR)  # noqa: E731
    rows = [("true soundtrack", mono(clip.audio, clip.sample_rate), []),
            (f"Foley extension: first {given:.2f} s given, the rest generated", mono(fe.waveform[0], fe.sample_rate),
             [given]),
            (f"edit: {t0:g}-{t0 + 2:g} s regenerated with 'a {other}'", mono(edit.waveform[0], edit.sample_rate),
             [t0, t0 + 2.0])]
    n = min(len(r[1]) for r in rows)
    width = 900
    top = max(float(spectrogram_db(r[1][:n]).max()) for r in rows)
    sheet = Image.new("RGB", (width, (HEIGHT + 4) * len(rows) + 18), (255, 255, 255))
    for i, (label, wave, marks) in enumerate(rows):
        p = panel(wave[:n], width, top, f"{label}  (0-{SR // 2000} kHz, {RANGE_DB:.0f} dB)")
        d = ImageDraw.Draw(p)
        for t in marks:
            x = int(t / clip.duration * (width - 1))
            d.line([(x, 16), (x, HEIGHT)], fill=(80, 220, 255), width=2)
        sheet.paste(p, (0, i * (HEIGHT + 4)))
    d = ImageDraw.Draw(sheet)
    y = (HEIGHT + 4) * len(rows) + 2
    for t in range(int(clip.duration) + 1):
        x = int(t / clip.duration * (width - 1))
        d.line([(x, y - 4), (x, y)], fill=(0, 0, 0))
        d.text((min(x + 2, width - 30), y), f"{t} s", fill=(0, 0, 0))
    for e in clip.events:
        x = int(e.time / clip.duration * (width - 1))
        d.line([(x, y - 10), (x, y - 5)], fill=(200, 0, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {clip.clip_id}, {clip.duration:.2f} s; extension seam at {given:.2f} s; edit window "
          f"{t0:g}-{t0 + 2:g} s with 'a {other}' ({edit.waveform.shape[-1] / edit.sample_rate:.2f} s out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
