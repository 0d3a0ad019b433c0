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


def _write_wav(path, seconds=3.0, sr=22050):
    import wave

    import numpy as np

    t = np.arange(int(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * 330 * t) * np.exp(-6 * (t % 0.5))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


def test_generate_modes_run_their_workflows(tmp_path, capsys):
    clip = write_clip(tmp_path / "hit.mp4", n=75, rate=25, size=(48, 48))
    wav = _write_wav(tmp_path / "known.wav")
    out = tmp_path / "out"
    common = ["--steps", "2", "--output-dir", str(out)]
    assert main(["generate", "--mode", "tta", "--prompt", "two kicks on the left", "--duration", "2",
                 "--output", str(tmp_path / "tta.wav")] + common) == EXIT_OK
    with av.open(str(tmp_path / "tta.wav")) as c:
        assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 2.0) < 0.05
    assert main(["generate", str(clip), "--mode", "edit", "--audio", str(wav), "--edit-start", "1",
                 "--edit-end", "2", "--guidance", "all", "--output", str(tmp_path / "edit.mp4")] + common) == EXIT_OK
    assert main(["generate", str(clip), "--mode", "fe", "--audio", str(wav), "--context-seconds", "1.5",
                 "--output", str(tmp_path / "fe.mp4")] + common) == EXIT_OK
    assert "workflow foley_extension_default" in capsys.readouterr().out
    for name in ("edit.mp4", "fe.mp4"):
        with av.open(str(tmp_path / name)) as c:
            assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 3.0) < 0.1


def test_generate_mode_arguments_are_checked_first(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.mp4", n=30, rate=25, size=(32, 32))
    cases = [(["generate", str(clip), "--mode", "ac-vta"], "needs --audio FILE"),
             (["generate", "--mode", "tta", "--duration", "2"], "needs --prompt"),
             (["generate", str(clip), "--mode", "tta", "--prompt", "x", "--duration", "2"], "takes no video"),
             (["generate", str(clip), "--mode", "edit", "--audio", str(clip), "--edit-start", "2",
               "--edit-end", "1"], "0 <= start < end"),
             (["generate", str(clip), "--mode", "fe", "--audio", str(tmp_path / "no.wav")], "--audio"),
             (["generate", str(clip), "--mode", "fe", "--audio", str(clip), "--workflow", "video_to_audio_tiny"],
              "drop --workflow"),
             (["generate", str(clip), "--mode", "tc-vta", "--guidance", "video"], "--guidance"),
             (["generate", str(clip), "--guidance-rescale", "2"], "guidance_rescale"),
             (["generate"], "needs a video")]
    for argv, message in cases:
        assert main(argv) == EXIT_USAGE, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
