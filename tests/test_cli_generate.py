"""`kling-foley generate`: the README's main job on the tiny stack, end to end through the CLI."""
from pathlib import Path

import av

from kling_foley_core.cli import EXIT_OK, EXIT_USAGE, main
from video_clips import write_clip


def test_generate_writes_a_video_with_stereo_audio_of_its_length(tmp_path, capsys):
    clip = write_clip(tmp_path / "walk.mp4", n=40, rate=25, size=(48, 32))
    rc = main(["generate", str(clip), "--workflow", "video_to_audio_tiny", "--steps", "2", "--seed", "7",
               "--prompt", "footsteps", "--output-dir", str(tmp_path / "out")])
    assert rc == EXIT_OK
    out = tmp_path / "out" / "kling_foley" / "walk_00001.mp4"
    assert f"saved {out}" in capsys.readouterr().out
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        assert audio.codec_context.channels == 2
        assert abs(float(audio.duration * audio.time_base) - 1.6) < 0.05


def test_generate_bad_input_is_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "none.mp4"), "--output-dir", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: video") and "none.mp4" in err and "\n" not in err
    assert main(["generate", str(Path(__file__)), "--workflow", "nope"]) == EXIT_USAGE
    assert "is not a shipped workflow" in capsys.readouterr().err
