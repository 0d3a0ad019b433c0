"""`kling-foley generate --output PATH`: the container is checked against the video before any model runs, the
result lands at PATH (never over a file), and --length trims the picture as well as the sound."""
from __future__ import annotations

from fractions import Fraction

import av

from kling_foley_core.cli import EXIT_OK, EXIT_USAGE, main
from mux_clips import cfr_times, picture_span, write_input


def test_output_extension_is_checked_before_any_model_runs(tmp_path, capsys, monkeypatch):
    from kling_foley_core import cli_generate

    def no_run(*a, **k):
        raise AssertionError("a model ran")

    monkeypatch.setattr(cli_generate, "_make_runner", no_run)
    clip = write_input(tmp_path / "old.avi", times_ms=cfr_times(10), codec="cinepak", time_base=Fraction(1, 25))
    assert main(["generate", str(clip), "--output", str(tmp_path / "x.mp4")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'cinepak'" in err and f"use --output {tmp_path / 'x.mov'}" in err
    assert "reencode_picture=true" in err
    (tmp_path / "taken.mkv").write_bytes(b"precious")
    for bad, says in [("taken.mkv", "already exists"), ("x.avi", "name a .mp4, .mov, .mkv file"),
                      ("no/such/x.mkv", "does not exist")]:
        assert main(["generate", str(clip), "--output", str(tmp_path / bad)]) == EXIT_USAGE
        assert says in capsys.readouterr().err
    assert (tmp_path / "taken.mkv").read_bytes() == b"precious"


def test_generate_output_path_and_length_trim_the_picture(tmp_path, capsys):
    clip = write_input(tmp_path / "walk.mp4", times_ms=cfr_times(50), bframes=2)  # 2.0 s
    out = tmp_path / "result.mkv"
    rc = main(["generate", str(clip), "--workflow", "video_to_audio_tiny", "--steps", "2", "--start", "0.3",
               "--length", "1.1", "--output", str(out), "--output-dir", str(tmp_path / "work")])
    assert rc == EXIT_OK
    assert f"to {out}" in capsys.readouterr().out
    assert not list((tmp_path / "work").rglob("*.mkv"))  # moved, not copied
    a, b = picture_span(out)
    assert abs((b - a) - Fraction(11, 10)) <= Fraction(1, 25)  # the picture is the 1.1 s span, not the 2 s video
    with av.open(str(out)) as c:
        s = c.streams.audio[0]
        assert abs(sum(f.samples for f in c.decode(s)) / s.rate - 1.1) <= 0.04
