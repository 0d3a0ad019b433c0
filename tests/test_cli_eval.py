"""`kling-foley eval synthhits` end to end on the tiny model and a synthetic recording bank (no network)."""
import json
import math

import pytest

import kling_foley_core.data.recordings as recordings
from kling_foley_core.cli import EXIT_OK, EXIT_USAGE, main
from kling_foley_core.data.synthetic import synthetic_bank


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # the timbre classifier is trained once and cached here


def test_eval_prints_the_model_row_beside_both_reference_rows(tmp_path, monkeypatch, capsys, classifier_cache):
    bank = synthetic_bank(per_class=4)
    monkeypatch.setattr(recordings, "load_bank", lambda *a, **k: bank)
    monkeypatch.setenv("KLING_FOLEY_DATA", str(classifier_cache))
    rc = main(["eval", "synthhits", "--model", "tiny", "--n", "2", "--steps", "1", "--seed", "3",
               "--hit-free-clips", "3", "--json", str(tmp_path / "r.json")])
    assert rc == EXIT_OK
    out = capsys.readouterr().out
    main_table, fidelity = out.split("fidelity to the true audio")
    for table in (main_table, fidelity):
        rows = [ln[:30].strip() for ln in table.splitlines() if ln.startswith(("ground", "same events", "model:"))]
        assert rows == ["ground truth", "ground truth, shuffled", "same events, other recordings", "model:tiny"]
    model = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())}["model:tiny"]
    ids = [r["clip_id"] for r in model["per_clip"]]
    own = 2 + 3 - len(ids)  # hit-free clips among the two test clips; extra ones top the count up to three
    assert ids[:2] == ["heldout-3-000000", "heldout-3-000001"]
    assert ids[2:] == [f"heldout-3-{i:06d}" for i in range(2, 5 - own)]
    assert model["n_hitfree_clips"] == max(3, own) and model["n_hit_clips"] == 2 - own
    assert all(r["n_ref"] == 0 for r in model["per_clip"][2:])  # the extra clips are hit-free
    k = sum(r.get("false_sound", False) for r in model["per_clip"])
    assert f"false sounds: {k} of {model['n_hitfree_clips']} hit-free clips" in out
    assert (f"+ {3 - own} hit-free to reach 3" in out) == (own < 3)


def test_eval_refuses_a_negative_hit_free_count(capsys):
    assert main(["eval", "synthhits", "--model", "tiny", "--n", "2", "--hit-free-clips", "-1"]) == EXIT_USAGE
    assert "--hit-free-clips -1" in capsys.readouterr().err


def test_eval_refuses_unknown_model(capsys):
    assert main(["eval", "synthhits", "--model", "nope", "--n", "2"]) == EXIT_USAGE
    assert "--model 'nope'" in capsys.readouterr().err


def test_eval_names_an_incomplete_weights_folder(tmp_path, capsys):
    (tmp_path / "transformer").mkdir()
    assert main(["eval", "synthhits", "--model", str(tmp_path), "--n", "2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--model {tmp_path}" in err and "lacks" in err


def test_eval_validation_sets_score_false_sounds_on_hit_free_train_clips(tmp_path, monkeypatch, capsys,
                                                                         classifier_cache):
    bank = synthetic_bank(per_class=4)
    monkeypatch.setattr(recordings, "load_bank", lambda *a, **k: bank)
    monkeypatch.setenv("KLING_FOLEY_DATA", str(classifier_cache))
    rc = main(["eval", "synthhits", "--model", "tiny", "--n", "2", "--steps", "1", "--seed", "300", "--split",
               "train", "--hit-free", "--objects", "3", "3", "--json", str(tmp_path / "r.json")])
    assert rc == EXIT_OK
    out = capsys.readouterr().out
    assert "(2 train-split hit-free clips, seed 300" in out
    reports = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    rows = reports["model:tiny"]["per_clip"]  # the JSON names each clip, its onsets and its peak level
    assert [r["clip_id"] for r in rows] == ["train-300-000000", "train-300-000001"]
    assert all(r["false_sound"] == bool(r["onsets"]) and isinstance(r["peak_db"], float) for r in rows)
    false = [r["clip_id"] for r in rows if r["false_sound"]]
    assert ("hit-free clips with sound: " in out) == bool(false) and all(c in out for c in false)
    assert reports["model:tiny"]["n_hitfree_clips"] == 2 and reports["ground truth"]["false_sound_rate"] == 0.0
    assert 0.0 <= reports["model:tiny"]["false_sound_rate"] <= 1.0
    assert math.isnan(reports["model:tiny"]["onset_f1"])  # no hits to find: not a vacuous 1.0


def test_eval_refuses_a_bad_object_range(capsys):
    assert main(["eval", "synthhits", "--objects", "4", "2", "--n", "2"]) == EXIT_USAGE
    assert "--objects 4 2: objects=4 2: need 1 <= min <= max <= 6" in capsys.readouterr().err


def test_eval_of_one_clip_is_a_one_line_error(capsys):
    assert main(["eval", "synthhits", "--model", "tiny", "--n", "1", "--duration", "300"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()  # was: a traceback from the shuffled reference row
    assert "--n 1" in err and "at least 2" in err and "\n" not in err


def test_reference_guidance_without_a_context_summary_is_a_one_line_error(capsys):
    # the tiny model has no context summary: refused before any clip is drawn or sampled (was: a traceback)
    assert main(["eval", "synthhits", "--model", "tiny", "--task", "ac-vta", "--n", "2", "--steps", "1",
                 "--reference-guidance", "reference"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "--reference-guidance reference" in err and "context_global" in err and "\n" not in err


@pytest.mark.parametrize("task,key", [("tta", "timbre_to_caption"), ("tc-vta", "timbre_to_text"),
                                      ("ac-vta", "timbre_to_reference"), ("fe", "seam_level_step_db"),
                                      ("edit", "outside_max_abs_diff")])
def test_each_control_task_prints_the_model_beside_its_reference_rows(task, key, tmp_path, monkeypatch, capsys,
                                                                      classifier_cache):
    bank = synthetic_bank(per_class=4)
    monkeypatch.setattr(recordings, "load_bank", lambda *a, **k: bank)
    monkeypatch.setenv("KLING_FOLEY_DATA", str(classifier_cache))
    rc = main(["eval", "synthhits", "--model", "tiny", "--task", task, "--n", "1", "--steps", "1", "--seed", "4",
               "--json", str(tmp_path / "r.json")])
    assert rc == EXIT_OK
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["name"].startswith("model: ") and rows[-1]["name"] == "true audio"
    assert all(key in r for r in rows) and f"task {task}" in capsys.readouterr().out
    if task == "fe":  # the given 40 % is the pipeline's own samples, so only the continuation can step at the seam
        truth = rows[-1]
        assert truth["seam_false_onsets"] == 0.0 and truth["sounding_seams"] in (0, 1)
        step = truth["seam_level_step_db"]
        assert step == 0.0 if truth["sounding_seams"] else math.isnan(step)
        assert truth["join_seams"] <= truth["sounding_seams"]
        join = truth["seam_join_step_db"]
        assert join == 0.0 if truth["join_seams"] else math.isnan(join)
    if task == "edit":  # the edit is spliced back: beyond the margins nothing moved
        assert rows[0]["outside_max_abs_diff"] <= 1e-3 and rows[0]["margin_ms"] == 50.0


def test_a_new_hit_after_the_seam_counts_in_the_seam_step_but_not_in_the_join():
    import numpy as np

    from kling_foley_core.data.synthhits import HitEvent, SynthHitsClip
    from kling_foley_core.evaluation.tasks import _hit_after, _seam_scores

    sr, seam = 16000, 1.0
    rng = np.random.default_rng(0)

    def render(hits):  # (time, amplitude): noise bursts decaying over 60 ms
        x = np.zeros(2 * sr)
        for t, a in hits:
            s = int(t * sr)
            x[s:] += a * rng.uniform(-1, 1, len(x) - s) * np.exp(-np.arange(len(x) - s) / (0.06 * sr))
        return np.stack([x, x]).astype(np.float32)

    def clip(times):
        events = [HitEvent(time=t, sound_class="wood", pan=0.0, gain=0.3, object_id=0) for t in times]
        return SynthHitsClip(clip_id="c", frames=np.zeros((1, 8, 8, 3), np.uint8), sample_rate=sr, fps=25,
                             audio=render([(t, 0.3) for t in times]), duration=2.0, caption="", events=events)

    new_hit = clip([0.4, 0.9, 1.1])  # a hit 100 ms after the seam
    louder = render([(0.4, 0.3), (0.9, 0.3), (1.1, 0.6)])  # the model renders that hit 6 dB louder
    _, step = _seam_scores(louder, new_hit, seam)
    assert _hit_after(new_hit, seam) and step > 2.0
    tail = clip([0.4, 0.9])  # only the tail of a hit before the seam runs across it
    assert not _hit_after(tail, seam)
    _, step = _seam_scores(tail.audio, tail, seam)
    assert step == pytest.approx(0.0, abs=1e-9)
