"""``kling-foley detect FILE``: is the provenance watermark in this audio or video file, and what do its tags say?

Exit codes: 0 the mark is found, 3 it is not, 2 bad input (missing file, a folder, not media, no soundtrack).
Import-light: PyAV, numpy and torch only (no diffusers, no transformers, no model).
"""
from __future__ import annotations

import argparse
import json

from .cli import EXIT_OK, SystemExitError, register_command

EXIT_NOT_FOUND = 3


def _detect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="an audio file (wav, flac, mp3, m4a, ogg...) or a video with a soundtrack")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def cmd_detect(args: argparse.Namespace, node_classes=None) -> int:
    from .audio.encode import AudioInputError
    from .audio.io import read_audio
    from .audio.watermark import WatermarkError, detect_watermark
    from .mux import MuxError, read_provenance

    try:
        wave, sr = read_audio(args.file, what="detect: file")
        found = detect_watermark(wave, sr)
        tags = read_provenance(args.file)
    except (AudioInputError, WatermarkError, MuxError) as e:
        raise SystemExitError(str(e).replace("\n", " ")) from None
    if args.json:
        print(json.dumps({"file": args.file, "watermark": found.present, "score": round(found.score, 3),
                          "threshold": found.threshold, "seconds": round(found.seconds, 3),
                          "provenance": tags}, sort_keys=True))
    else:
        if found.present:
            print(f"watermark: found (score {found.score:.2f} >= threshold {found.threshold:g}; unmarked audio "
                  f"scores this high with probability < {max(found.false_positive_bound, 1e-9):.0e})")
        else:
            why = "" if found.active_tiles else "; the file holds no sound loud enough to carry it"
            print(f"watermark: not found (score {found.score:.2f} < threshold {found.threshold:g}{why})")
        print("provenance tag: " + (", ".join(f"{k}={v}" for k, v in sorted(tags.items())) if tags else "none"))
    return EXIT_OK if found.present else EXIT_NOT_FOUND


register_command("detect", "find the provenance watermark in an audio or video file (exit 0 found, 3 not found)",
                 _detect_arguments, cmd_detect)
