"""SynthHits: recordings bank, splits, the clip generator and its writers (no network: synthetic recordings)."""
from __future__ import annotations

import json
import os

from dataclasses import replace

import numpy as np
import pytest

from kling_foley_core.data.recordings import (
    RecordingBank,
    RecordingsError,
    RecordingsUnavailableError,
    classify_name,
    default_cache_dir,
    licence_for,
    measure_onset,
    parse_copyright,
    prepare_recording,
    resample,
    split_of,
)
from kling_foley_core.data.synthetic import synthetic_bank
from kling_foley_core.data.synthhits import (
    HitEvent,
    SynthHitsConfig,
    SynthHitsError,
    _caption,
    generate_clip,
    load_clips,
    pan_gains,
    read_mp4,
    read_shard,
    write_dataset,
    write_mp4,
    write_shard,
)
from kling_foley_core.evaluation.onsets import detect_onsets, estimate_pan, match_onsets

SR = 44100
CFG = SynthHitsConfig(size=48, min_duration=2.0, max_duration=3.5)


@pytest.fixture(scope="module")
def bank() -> RecordingBank:
    return synthetic_bank(per_class=4)


# -- names, splits, recordings ----------------------------------------------------------------------------
def test_classify_name_follows_documented_mapping():
    cases = {
        "Woodblock Hi WoodBlock-Hard": "wood_knock",
        "Clave Clave-Med": "wood_knock",
        "Crash Jazz crash_03": "cymbal",
        "Closed HH hhclosed_01": "cymbal",
        "drum_cymbal_closed": "cymbal",
        "Kick Lite 1 EE_Kick_Lite_1": "kick",
        "bd_808": "kick",
        "Snare Jazz jsnare_02": "snare",
        "sn_dolf": "snare",
        "Tom Low ft_01": "drum",
        "Djembe1 Slap": "drum",
        "tabla_na": "drum",
        "Cowbell Cowbell-Hard": "bell",
        "WaterglassHi WaterglassHi-Soft": "bell",
        "Hand Clap HandClap-Med": "clap_snap",
        "perc_snap2": "clap_snap",
        "perc_door": "door_impact",
        "doors/door2-close": "door_impact",
        "footsteps/gravel3": "footstep",
    }
    for text, want in cases.items():
        assert classify_name(text) == want, text
    for text in ["Snare Roll sd_roll", "Ride Bell RideBell-1", "Sabian Hat Choke", "Tambourine-Hard",
                 "doors/door1-open", "footsteps/water_in", "emptySample", "loop_amen"]:
        assert classify_name(text) is None, text


def test_split_is_deterministic_and_near_fraction():
    keys = [f"kit/instrument {i}" for i in range(2000)]
    first = [split_of(k, 0.25) for k in keys]
    assert first == [split_of(k, 0.25) for k in keys]
    frac = first.count("heldout") / len(keys)
    assert 0.2 < frac < 0.3
    with pytest.raises(RecordingsError, match="heldout_fraction"):
        split_of("x", 1.5)


def test_train_and_heldout_recordings_are_disjoint(bank):
    train, held = bank.select("train"), bank.select("heldout")
    assert train and held
    assert not {r.name for r in train} & {r.name for r in held}
    assert not {r.group for r in train} & {r.group for r in held}
    for cls in bank.classes():  # every class has both sides (the bank fixes one-sided classes)
        assert bank.select("train", cls) and bank.select("heldout", cls), cls


def test_velocity_layers_share_a_split():
    x = np.r_[np.zeros(10), np.hanning(200)]
    recs = [prepare_recording(f"kit/{v}", x, SR, sound_class="snare", group="kit/snare") for v in
            ("Snare-Hard", "Snare-Soft", "Snare-Med")]
    recs += [prepare_recording(f"kit/Kick-{v}", x, SR, sound_class="kick", group=f"kit/kick {v}")
             for v in range(6)]
    b = RecordingBank.from_recordings(recs, heldout_fraction=0.25)
    assert len({r.split for r in b.select(sound_class="snare")}) == 1
    kicks = b.select(sound_class="kick")
    assert {r.split for r in kicks} == {"train", "heldout"}  # six groups: both sides present


def test_prepare_recording_trims_to_onset_and_resamples():
    sr_in = 48000
    lead = 4800  # 100 ms of silence
    t = np.arange(int(0.3 * sr_in)) / sr_in
    burst = np.sin(2 * np.pi * 1000 * t) * np.exp(-t / 0.05)
    stereo = np.stack([np.r_[np.zeros(lead), burst], np.r_[np.zeros(lead), 0.5 * burst]], axis=1)  # (N, 2)
    rec = prepare_recording("x.wav", stereo, sr_in, sound_class="bell", target_rate=SR)
    assert rec.sample_rate == SR and rec.original_channels == 2
    assert rec.onset_s == pytest.approx(lead / sr_in, abs=1e-4)
    assert np.abs(rec.audio).max() == pytest.approx(1.0, abs=1e-6)
    assert measure_onset(rec.audio) <= 2  # the onset is at the start now
    spec = np.abs(np.fft.rfft(rec.audio, n=SR))
    assert abs(int(np.argmax(spec)) - 1000) <= 2  # 1 kHz stays 1 kHz through 48k -> 44.1k
    with pytest.raises(RecordingsError, match="silent"):
        prepare_recording("silent.wav", np.zeros(1000), SR, sound_class="kick")


def test_resampler_keeps_impulse_time_and_dc_gain():
    x = np.zeros(48000)
    x[4800] = 1.0
    y = resample(x, 48000, 44100)
    assert len(y) == 44100
    assert abs(int(np.argmax(y)) - 4410) <= 1
    assert resample(np.ones(4800), 48000, 44100)[1000:3000] == pytest.approx(1.0, abs=1e-3)
    z = resample(np.ones(2205), 22050, 44100)
    assert len(z) == 4410 and z[500:3500] == pytest.approx(1.0, abs=1e-3)


def test_copyright_parsing_last_match_wins():
    text = """Format: x

Files: *
Copyright: 2016 Someone
License: MIT

Files: etc/samples/bd_808.flac
Copyright: 2013 Other
License: CC0

Files: drumkits/Gimme?A?Hand?1.0.h2drumkit
Copyright: Glen
License: GPL-2
"""
    entries = parse_copyright(text)
    assert licence_for("samples/bd_808.flac", entries) == ("CC0", "2013 Other")
    assert licence_for("samples/bd_boom.flac", entries)[0] == "MIT"
    assert licence_for("drumkits/Gimme A Hand 1.0/Clave-Hard.wav", entries)[0] == "GPL-2"


def test_bank_save_load_roundtrip(bank, tmp_path):
    bank.save(tmp_path / "b")
    again = RecordingBank.load(tmp_path / "b")
    assert [r.name for r in again.recordings] == [r.name for r in bank.recordings]
    assert all(np.array_equal(a.audio, b.audio) and a.split == b.split
               for a, b in zip(again.recordings, bank.recordings))
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert all(m["licence"] == "CC0" for m in man["recordings"])


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("KLING_FOLEY_DATA", str(tmp_path))
    assert default_cache_dir() == tmp_path


# -- the generator ----------------------------------------------------------------------------------------
def test_generation_is_deterministic_from_seed(bank):
    a = generate_clip(bank, seed=7, index=3, split="train", config=CFG)
    b = generate_clip(bank, seed=7, index=3, split="train", config=CFG)
    c = generate_clip(bank, seed=8, index=3, split="train", config=CFG)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert a.events == b.events and a.caption == b.caption
    assert not (a.frames.shape == c.frames.shape and np.array_equal(a.frames, c.frames))
    assert a.frames.dtype == np.uint8 and a.frames.shape[1:] == (48, 48, 3)
    assert a.frames.shape[0] == round(a.duration * 25) and a.audio.shape == (2, round(a.duration * SR))
    assert 2.0 <= a.duration <= 3.5


def _hit_clips(bank, n, split="train", seed=0):
    return [generate_clip(bank, seed=seed, index=i, split=split, config=CFG, with_hits=True) for i in range(n)]


def test_event_times_match_audio_onsets_within_10ms(bank):
    n_events = 0
    for clip in _hit_clips(bank, 6):
        ref = np.array([e.time for e in clip.events])
        est = detect_onsets(clip.audio, SR)
        pairs = match_onsets(ref, est, tolerance=0.010)
        assert len(pairs) == len(ref), (clip.clip_id, ref, est)
        assert len(est) == len(ref), (clip.clip_id, ref, est)  # no extra onsets in clean ground truth
        n_events += len(ref)
    assert n_events >= 10


def test_event_fields_and_pan_sign_match_x_position(bank):
    checked = 0
    for clip in _hit_clips(bank, 8, seed=1):
        times = np.array([e.time for e in clip.events])
        for e in clip.events:
            assert 0.2 <= e.time <= clip.duration - 0.2
            assert -1 <= e.pan <= 1 and e.gain > 0 and e.sound_class in bank.classes()
            obj = clip.objects[e.object_id]
            x = obj["x_start"] + (obj["x_end"] - obj["x_start"]) * e.time / clip.duration
            assert e.pan == pytest.approx(np.clip(x * 48 / 47 * 2 - 1, -1, 1), abs=2e-3)
            isolated = not np.any((times < e.time) & (times > e.time - 0.8))  # no other sound's tail under it
            if abs(e.pan) > 0.3 and isolated:
                p = estimate_pan(clip.audio, SR, e.time, window=0.01)
                assert np.sign(p) == np.sign(e.pan), (clip.clip_id, e)
                checked += 1
    assert checked >= 3
    for p in (-1.0, -0.3, 0.0, 0.6, 1.0):
        gl, gr = pan_gains(p)
        assert gl**2 + gr**2 == pytest.approx(1.0)


def test_louder_hits_come_from_faster_objects(bank):
    ev = [e for c in _hit_clips(bank, 8, seed=2) for e in c.events]
    speeds, gains = np.array([e.speed for e in ev]), np.array([e.gain for e in ev])
    assert np.corrcoef(speeds, gains)[0, 1] > 0.9


def test_hit_free_clips_are_silent_but_moving(bank):
    clip = generate_clip(bank, seed=0, index=5, split="heldout", config=CFG, with_hits=False)
    assert clip.events == [] and not np.any(clip.audio)
    assert clip.caption.startswith("Silence")
    assert np.abs(clip.frames[0].astype(int) - clip.frames[len(clip.frames) // 2]).max() > 20  # objects move
    assert detect_onsets(clip.audio, SR).size == 0


def test_hover_range_sets_how_close_hit_free_objects_come_to_the_floor(bank):
    low = SynthHitsConfig(size=48, min_duration=2.0, max_duration=3.5, hover=(0.05, 0.1))
    default, near = (generate_clip(bank, seed=1, index=i, config=c, with_hits=False) for i, c in ((2, CFG), (2, low)))
    assert all(0.12 <= o["hover"] <= 0.4 for o in default.objects)
    assert all(0.05 <= o["hover"] <= 0.1 for o in near.objects)
    assert not near.audio.any() and np.abs(near.frames.astype(int) - default.frames).max() > 20
    with pytest.raises(SynthHitsError, match=r"hover=0.3 0.1: need 0.05 <= low <= high <= 0.5"):
        generate_clip(bank, seed=0, index=0, config=SynthHitsConfig(hover=(0.3, 0.1)))


def test_object_range_sets_how_many_objects_a_clip_has(bank):
    crowd = SynthHitsConfig(size=48, min_duration=2.0, max_duration=3.5, min_objects=3, max_objects=3)
    counts = {len(generate_clip(bank, seed=4, index=i, config=crowd, with_hits=w).objects)
              for i in range(6) for w in (False, True)}
    assert counts == {3}
    default = {len(generate_clip(bank, seed=4, index=i, config=CFG, with_hits=False).objects) for i in range(12)}
    assert default == {1, 2, 3}
    with pytest.raises(SynthHitsError, match=r"objects=3 2: need 1 <= min <= max <= 6"):
        generate_clip(bank, seed=0, index=0, config=SynthHitsConfig(min_objects=3, max_objects=2))


def test_hovering_objects_stay_silent_beside_striking_ones(bank):
    mixed = SynthHitsConfig(size=48, min_duration=2.0, max_duration=3.5, min_objects=3, max_objects=3,
                            p_hovering=0.5)
    clips = [generate_clip(bank, seed=6, index=i, config=mixed, with_hits=True) for i in range(12)]
    hovering = 0
    for clip in clips:
        struck = {e.object_id for e in clip.events}
        assert struck  # one object always strikes
        for k, obj in enumerate(clip.objects):
            assert ("hover" in obj) == (k not in struck)  # a hovering object makes no event
            hovering += k not in struck
    assert 0 < hovering < 2 * len(clips)
    with pytest.raises(SynthHitsError, match=r"p_hovering=1.0 must be a probability in \[0, 1\)"):
        generate_clip(bank, seed=0, index=0, config=SynthHitsConfig(p_hovering=1.0))


def test_heldout_clips_use_only_heldout_recordings(bank):
    held = {r.name for r in bank.select("heldout")}
    for clip in _hit_clips(bank, 5, split="heldout"):
        assert {e.recording for e in clip.events} <= held


def test_look_identifies_class(bank):
    # Same class -> same shape; the class look table covers every class the bank has.
    clips = _hit_clips(bank, 10, seed=3)
    shape_of = {}
    for c in clips:
        for o in c.objects:
            assert shape_of.setdefault(o["sound_class"], o["shape"]) == o["shape"]
    assert len(set(shape_of.values())) == len(shape_of)


def test_caption_from_events():
    objs = []
    ev = [HitEvent(1.0, "wood_knock", -0.8, 0.3, 0), HitEvent(1.5, "wood_knock", -0.7, 0.3, 0),
          HitEvent(2.0, "cymbal", 0.9, 0.3, 1)]
    assert _caption(ev, objs) == "Two wooden knocks on the left, then a cymbal crash on the right."


def test_bad_arguments_are_clear(bank):
    with pytest.raises(SynthHitsError, match="split"):
        generate_clip(bank, seed=0, index=0, split="test")
    with pytest.raises(SynthHitsError, match="size"):
        generate_clip(bank, seed=0, index=0, config=SynthHitsConfig(size=33))


# -- writers ----------------------------------------------------------------------------------------------
def test_mp4_and_shard_roundtrip(bank, tmp_path):
    clip = generate_clip(bank, seed=0, index=1, split="train", config=CFG, with_hits=True)
    path = write_mp4(clip, tmp_path / "c.mp4")
    frames, audio, sr = read_mp4(path, num_samples=clip.audio.shape[1])
    assert sr == SR and frames.shape == clip.frames.shape
    assert np.abs(frames.astype(float) - clip.frames).mean() < 6  # H.264 crf 18 + yuv420p
    assert audio.shape == clip.audio.shape
    assert np.corrcoef(audio.ravel(), clip.audio.ravel())[0, 1] > 0.9  # AAC, aligned (no priming offset)
    shard = write_shard([clip], tmp_path / "s.npz")
    (back,) = read_shard(shard)
    assert np.array_equal(back.frames, clip.frames) and back.events == clip.events
    assert np.abs(back.audio - clip.audio).max() <= 1.0 / 32767 + 1e-7


def test_write_dataset_and_refuse_overwrite(bank, tmp_path):
    out = tmp_path / "ds"
    idx = write_dataset(bank, out, 3, seed=0, split="heldout", config=CFG, shard_size=2)
    assert len(idx["clips"]) == 3 and idx["shards"] == ["shard-00000.npz", "shard-00001.npz"]
    assert len(list(out.glob("*.mp4"))) == 3
    clips = load_clips(out)
    assert [c.clip_id for c in clips] == [c["clip_id"] for c in idx["clips"]]
    with pytest.raises(SynthHitsError, match="overwrite"):
        write_dataset(bank, out, 1, seed=0, split="heldout", config=CFG)
    os.remove(out / "shard-00000.npz")
    os.remove(out / "shard-00001.npz")
    assert len(load_clips(out)) == 3  # falls back to mp4 + json sidecars


def test_cli_writes_only_hit_free_clips_when_asked(bank, tmp_path, capsys):
    from kling_foley_core.data.recordings import bank_dir
    from kling_foley_core.data.synthhits import main

    bank.save(bank_dir(tmp_path / "rec", bank.sample_rate))
    args = ["--out", str(tmp_path / "ds"), "--n", "4", "--seed", "3", "--format", "npz", "--size", "48",
            "--recordings", str(tmp_path / "rec")]
    assert main(args + ["--p-no-hits", "1"]) == 0
    clips = load_clips(tmp_path / "ds")
    assert len(clips) == 4 and all(not c.events and not c.audio.any() for c in clips)
    capsys.readouterr()
    assert main(args[:1] + [str(tmp_path / "ds2")] + args[2:] + ["--p-no-hits", "1.5"]) == 2
    assert "p_no_hits=1.5 must be a probability" in capsys.readouterr().out
    assert not (tmp_path / "ds2").exists()
    assert main(args[:1] + [str(tmp_path / "ds3")] + args[2:] + ["--hover", "0.2", "0.9"]) == 2
    assert "hover=0.2 0.9: need" in capsys.readouterr().out
    assert not (tmp_path / "ds3").exists()
    assert main(args[:1] + [str(tmp_path / "ds4")] + args[2:] + ["--objects", "0", "2"]) == 2
    assert "objects=0 2: need 1 <= min <= max <= 6" in capsys.readouterr().out
    assert not (tmp_path / "ds4").exists()
    assert main(args[:1] + [str(tmp_path / "ds5")] + args[2:] + ["--p-hovering", "-0.1"]) == 2
    assert "p_hovering=-0.1 must be a probability" in capsys.readouterr().out
    assert not (tmp_path / "ds5").exists()


# -- the real Debian recordings (opt-in: slow, needs the package mirror) -------------------------------------
@pytest.mark.slow
def test_real_recordings_bank():
    from kling_foley_core.data.recordings import bank_dir, load_bank

    if not (bank_dir(default_cache_dir(), SR) / "manifest.json").is_file() and \
            os.environ.get("KLING_FOLEY_REAL_DATA") != "1":
        pytest.skip("real recordings not built; run `python -m kling_foley_core.data.recordings` or set "
                    "KLING_FOLEY_REAL_DATA=1 to fetch them here")
    try:
        real = load_bank()
    except RecordingsUnavailableError as e:
        pytest.skip(f"Debian packages cannot be fetched: {e}")
    assert 6 <= len(real.classes()) <= 10
    for cls in real.classes():
        assert len(real.select("train", cls)) >= 3 and real.select("heldout", cls), cls
    assert all(r.licence and r.licence != "unknown" for r in real.recordings)
    clip = generate_clip(real, seed=0, index=0, split="heldout", with_hits=True)
    ref = np.array([e.time for e in clip.events])
    pairs = match_onsets(ref, detect_onsets(clip.audio, SR), tolerance=0.010)
    assert len(pairs) >= 0.8 * len(ref)


def test_swapped_sounds_keep_the_motion_and_name_the_sound():
    from kling_foley_core.data.synthhits import SynthHitsConfig

    bank = synthetic_bank()
    for i in range(4):
        a = generate_clip(bank, seed=7, index=i, with_hits=True)
        b = generate_clip(bank, seed=7, index=i, with_hits=True, config=SynthHitsConfig(p_swap_sound=1.0))
        assert [e.time for e in a.events] == [e.time for e in b.events]
        assert all(ea.sound_class != eb.sound_class for ea, eb in zip(a.events, b.events))
        assert b.caption != a.caption
    with pytest.raises(SynthHitsError, match="p_swap_sound"):
        SynthHitsConfig(p_swap_sound=1.5).check()


def test_look_of_sound_renders_the_swapped_clips_twin():
    """--look-of-sound: the same sound, events and motion as the swapped clip, drawn with the look of the class it
    sounds like (what the reference teacher reads)."""
    from kling_foley_core.data.synthhits import LOOKS, SynthHitsConfig

    bank = synthetic_bank()
    swap = SynthHitsConfig(p_swap_sound=1.0, min_objects=1, max_objects=2)
    for i in range(3):
        a = generate_clip(bank, seed=7, index=i, with_hits=True, config=swap)
        b = generate_clip(bank, seed=7, index=i, with_hits=True, config=replace(swap, look_of_sound=True))
        assert np.array_equal(a.audio, b.audio) and a.events == b.events and a.caption == b.caption
        assert not np.array_equal(a.frames, b.frames)
        assert all(o["shape"] == LOOKS[o["sound_class"]].shape for o in b.objects)
        assert any(o["shape"] != LOOKS[o["sound_class"]].shape for o in a.objects)
    with pytest.raises(SynthHitsError, match="look_of_sound"):
        SynthHitsConfig(look_of_sound=True).check()


def test_sound_of_look_renders_the_swapped_clips_frames_with_their_looks_sound():
    """--sound-of-look: the swapped clip's frames, events and motion, each object sounding like the class it looks
    like (what a contrast example learns)."""
    from kling_foley_core.data.synthhits import LOOKS, SynthHitsConfig

    bank = synthetic_bank()
    swap = SynthHitsConfig(p_swap_sound=1.0, min_objects=1, max_objects=2)
    for i in range(3):
        a = generate_clip(bank, seed=7, index=i, with_hits=True, config=swap)
        b = generate_clip(bank, seed=7, index=i, with_hits=True, config=replace(swap, sound_of_look=True))
        assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.audio, b.audio)
        assert [(e.time, e.pan, e.gain) for e in a.events] == [(e.time, e.pan, e.gain) for e in b.events]
        assert all(o["shape"] == LOOKS[o["sound_class"]].shape for o in b.objects)
        assert b.caption != a.caption
    for bad in (SynthHitsConfig(sound_of_look=True), replace(swap, sound_of_look=True, look_of_sound=True)):
        with pytest.raises(SynthHitsError, match="sound_of_look"):
            bad.check()
