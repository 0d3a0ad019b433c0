"""`kling-foley eval synthhits` end to end on the tiny model and a synthetic recording bank (no network)."""
import kling_foley_core.data.recordings as recordings
from kling_foley_core.cli import EXIT_OK, EXIT_USAGE, main
from kling_foley_core.data.synthetic import synthetic_bank


def test_eval_prints_the_model_row_beside_both_reference_rows(tmp_path, monkeypatch, capsys):
    bank = synthetic_bank(per_class=4)
    monkeypatch.setattr(recordings, "load_bank", lambda *a, **k: bank)
    monkeypatch.setenv("KLING_FOLEY_DATA", str(tmp_path))  # the timbre classifier is cached here
    rc = main(["eval", "synthhits", "--model", "tiny", "--n", "2", "--steps", "1", "--seed", "3",
               "--json", str(tmp_path / "r.json")])
    assert rc == EXIT_OK
    out = capsys.readouterr().out
    rows = [ln.split()[0] for ln in out.splitlines() if ln.startswith(("ground", "model:"))]
    assert rows == ["ground", "ground", "model:tiny"]
    assert (tmp_path / "r.json").is_file()


def test_eval_refuses_unknown_model(capsys):
    assert main(["eval", "synthhits", "--model", "nope", "--n", "1"]) == EXIT_USAGE
    assert "--model 'nope'" in capsys.readouterr().err


def test_eval_names_an_incomplete_weights_folder(tmp_path, capsys):
    (tmp_path / "transformer").mkdir()
    assert main(["eval", "synthhits", "--model", str(tmp_path), "--n", "1"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--model {tmp_path}" in err and "lacks" in err
