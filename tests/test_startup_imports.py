"""Start-up stays light: the CLI, validation and argument errors never import diffusers or transformers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from video_clips import write_clip

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("diffusers", "transformers")

_CHILD = r"""
import json, sys
import kling_foley_core.cli as cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _run_cli(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", "import sys, kling_foley_core.cli; "
                           f"print([m for m in {HEAVY!r} if m in sys.modules])"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# The MMAudio workflow names model files this checkout does not hold: a validation error, exit code 2.
@pytest.mark.parametrize("workflow, code", [("video_to_audio_default.json", 0), ("video_to_audio_hunyuan_tiny.json", 0),
                                            ("video_to_audio_mmaudio.json", 2)])
def test_validation_imports_no_heavy_library(workflow, code, tmp_path):
    clip = write_clip(tmp_path / "in.mp4", n=25, rate=25, size=(32, 32))  # 1 s: at least one sync window
    out = _run_cli("run", str(ROOT / "workflows" / workflow), "--validate-only",
                   "--set", f"Load Video.video_path={json.dumps(str(clip))}")
    assert out == {"code": code, "heavy": []}


def test_missing_video_is_reported_before_heavy_imports(tmp_path):
    out = _run_cli("generate", str(tmp_path / "missing.mp4"))
    assert out == {"code": 2, "heavy": []}
