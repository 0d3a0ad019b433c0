"""The trainers on a tiny generated SynthHits set (synthetic recordings, no network): losses fall, resume is exact."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kling_foley_core.data.synthetic import synthetic_bank
from kling_foley_core.data.synthhits import SynthHitsConfig, generate_clip, write_shard
from kling_foley_core.training import train_foley, train_mel_vae, train_mono2stereo
from kling_foley_core.training.common import (EMA, TrainingError, plot_curves, step_generator)
from kling_foley_core.training.dataset import (FeatureCache, batch_for_step, build_cache, encode_latents,
                                               fft_resample, merge_caches)

N_CLIPS = 8
VAE_ARGS = ["--hidden-dim", "16", "--num-blocks", "2", "--norm-groups", "4", "--crop-frames", "64",
            "--batch-size", "4", "--lr", "3e-3", "--stages", "0.25", "0.5", "0.75", "--log-every", "1", "--warmup", "2",
            "--no-progress", "--threads", "1"]
FOLEY_OVERRIDES = ["transformer.hidden_dim=32", "transformer.num_heads=2", "transformer.depth=2",
                   "transformer.fused_depth=1", "visual_encoder.width=32", "visual_encoder.layers=1",
                   "visual_encoder.mlp_width=64", "visual_encoder.output_dim=64", "sync_encoder.embed_dim=32",
                   "sync_encoder.depth=1", "sync_encoder.num_heads=2", "text_encoder.num_layers=1",
                   "transformer.sync_dim=32"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("synthhits")
    bank = synthetic_bank(per_class=2)
    cfg = SynthHitsConfig(size=48, min_duration=2.0, max_duration=2.6, p_no_hits=0.0)
    clips = [generate_clip(bank, seed=0, index=i, split="train", config=cfg) for i in range(N_CLIPS)]
    write_shard(clips, root / "shard-00000.npz")
    cache = build_cache(root, root.parent / "cache", image_size=48)
    return {"data": root, "cache": cache, "tmp": root.parent}


def _common(data, out, steps, *extra):
    return ["--data", str(data["data"]), "--cache", str(data["cache"]), "--out", str(out), "--steps", str(steps),
            "--seed", "0", *extra]


def _metric(out: Path, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if key in r]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def vae_run(data) -> Path:
    out = data["tmp"] / "vae"
    assert train_mel_vae.main(_common(data, out, 24, "--save-every", "12", *VAE_ARGS)) == 0
    return out


@pytest.fixture(scope="module")
def foley_run(data, vae_run) -> Path:
    out = data["tmp"] / "foley"
    args = _common(data, out, 16, "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "2e-3",
                   "--warmup", "2", "--save-every", "8", "--log-every", "1", "--no-progress", "--threads", "1",
                   "--max-duration", "2.6", "--p-drop-video", "0.2")
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    return out


# -- dataset ---------------------------------------------------------------------------------------------------
def test_cache_holds_pipeline_sized_features(data):
    c = FeatureCache(data["cache"])
    assert len(c) == N_CLIPS
    for i in range(N_CLIPS):
        d = c.clips[i]["duration"]
        assert c.mel(i).shape == (80, c.clips[i]["num_samples"] // 256)
        assert c.sem_frames(i).shape == (int(d * 8), 48, 48, 3)  # 8 fps by timestamp
        assert c.sync_frames(i).shape == (int(round(d * 25)), 48, 48, 3)
        assert c.sem_frames(i).dtype == np.uint8
    assert c.mel(0).min() >= -5.0 - 1e-3  # log10 floor of the 16 kHz front-end


def test_fft_resample_matches_a_band_limited_tone():
    sr_in, sr_out = 44100, 16000
    t = np.arange(sr_in) / sr_in
    x = torch.from_numpy(np.sin(2 * np.pi * 440 * t)[None].astype(np.float32))
    y = fft_resample(x, sr_in, sr_out)
    ref = np.sin(2 * np.pi * 440 * np.arange(sr_out) / sr_out)
    assert y.shape == (1, sr_out)
    assert np.abs(y[0, 200:-200].numpy() - ref[200:-200]).max() < 1e-3


def test_length_buckets_are_a_pure_function_of_step():
    d = np.array([2.0, 9.0, 2.1, 8.8, 5.0, 5.1, 3.3, 7.7])
    a = [batch_for_step(d, 2, 0, s).tolist() for s in range(8)]
    b = [batch_for_step(d, 2, 0, s).tolist() for s in range(8)]
    assert a == b
    assert sorted(i for bt in a[:4] for i in bt) == list(range(8))  # one epoch covers every clip once
    order = np.argsort(d)  # each bucket pairs neighbours in duration
    assert sorted(sorted(bt) for bt in a[:4]) == sorted(sorted(order[i: i + 2].tolist()) for i in range(0, 8, 2))


def test_repeats_oversample_clips_without_changing_the_default():
    d = np.array([2.0, 9.0, 2.1, 8.8, 5.0, 5.1, 3.3, 7.7])
    ones = np.ones(8, dtype=int)
    for s in range(8):
        assert batch_for_step(d, 2, 0, s).tolist() == batch_for_step(d, 2, 0, s, repeats=ones).tolist()
    rep = np.array([3, 1, 1, 1, 1, 1, 1, 3])  # clips 0 and 7 three times per epoch
    epoch = [i for s in range(6) for i in batch_for_step(d, 2, 0, s, repeats=rep).tolist()]  # 12 entries = 1 epoch
    assert sorted(epoch) == sorted([0, 0, 0, 7, 7, 7] + list(range(1, 7)))


def test_step_generator_is_deterministic_and_distinct():
    x = torch.randn(4, generator=step_generator(0, 5))
    assert torch.equal(x, torch.randn(4, generator=step_generator(0, 5)))
    assert not torch.equal(x, torch.randn(4, generator=step_generator(0, 6)))


def test_ema_tracks_weights():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, 0.5)
    with torch.no_grad():
        m.weight.add_(1.0)
    for _ in range(50):
        ema.update(m)
    assert torch.allclose(ema.averaged(m).weight, m.weight, atol=1e-4)


def test_loss_curve_png(tmp_path):
    p = plot_curves({"loss": [(0, 2.0), (1, 1.0), (2, 0.5)], "other": [(0, 1.0), (2, 1.5)]}, tmp_path / "l.png")
    from PIL import Image

    with Image.open(p) as im:
        assert im.size == (900, 520)
        assert len(set(map(tuple, np.asarray(im).reshape(-1, 3).tolist()))) > 3  # lines of several colours on white


# -- Mel-VAE -----------------------------------------------------------------------------------------------------
def test_mel_vae_loss_falls_and_stages_advance(vae_run):
    mse = _metric(vae_run, "g_mse")
    assert np.mean(mse[-4:]) < 0.7 * np.mean(mse[:4])
    assert sorted(set(_metric(vae_run, "stage"))) == [1, 2, 3, 4]
    assert _metric(vae_run, "d_hinge")  # the discriminator trained in stages 3-4
    assert (vae_run / "loss.png").is_file() and (vae_run / "final" / "vae" / "config.json").is_file()


def test_mel_vae_resume_continues_exactly(data, vae_run):
    out = data["tmp"] / "vae_resumed"
    assert train_mel_vae.main(_common(data, out, 24, "--save-every", "12", "--stop-at", "9", *VAE_ARGS)) == 0
    assert not (out / "final").exists() and (out / "checkpoints" / "step-0000009").is_dir()
    assert train_mel_vae.main(_common(data, out, 24, "--save-every", "12", "--resume", "latest", *VAE_ARGS)) == 0
    a, b = _weights(vae_run / "final" / "vae"), _weights(out / "final" / "vae")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == \
        [r["step"] for r in map(json.loads, (vae_run / "metrics.jsonl").read_text().splitlines())]


def test_mel_vae_refit_decoder_keeps_the_latent_space(data, vae_run, capsys):
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE

    out = data["tmp"] / "vae_refit"
    args = [a for a in VAE_ARGS if a != "--stages"]
    args = args[:args.index("0.25")] + args[args.index("0.75") + 1:]
    assert train_mel_vae.main(_common(data, out, 16, "--save-every", "16", "--refine-from",
                                      str(vae_run / "final" / "vae"), "--decoder-hidden-dim", "24", *args)) == 0
    assert set(_metric(out, "stage")) == {4}  # decoder refinement only
    mse = _metric(out, "g_mse")
    assert np.mean(mse[-4:]) < 0.7 * np.mean(mse[:3])  # a fresh decoder learns
    a, b = _weights(vae_run / "final" / "vae"), _weights(out / "final" / "vae")
    enc = [k for k in a if not k.startswith("decoder.")]
    assert "data_mean" in enc and "encoder.conv_in.weight" in enc
    for k in enc:
        assert torch.equal(a[k], b[k]), k  # same encoder and statistics: the same latents
    refit = KlingMelVAE.from_pretrained(str(out / "final" / "vae"))
    assert refit.config.decoder_hidden_dim == 24 and refit.decoder.conv_in.out_channels == 24
    mel = torch.randn(1, 80, 64)
    assert refit.decode(refit.encode(mel).mean).shape == (1, 80, 64)
    capsys.readouterr()
    assert train_mel_vae.main(_common(data, data["tmp"] / "bad", 4, "--refine-from", str(data["tmp"]))) == 2
    msg = capsys.readouterr().out
    assert "not a Mel-VAE folder" in msg and "fix the size options" not in msg  # the folder is at fault, not a size
    assert train_mel_vae.main(_common(data, data["tmp"] / "bad", 4, "--refine-from", str(vae_run / "final" / "vae"),
                                      "--decoder-hidden-dim", "0")) == 2
    assert not (data["tmp"] / "bad" / "final").exists()


# -- MM-DiT + encoders -------------------------------------------------------------------------------------------
def test_foley_loss_falls(foley_run):
    loss = _metric(foley_run, "loss")
    assert len(loss) == 16
    assert np.mean(loss[-5:]) < 0.92 * np.mean(loss[:3])
    for part in ("transformer", "visual_encoder", "sync_encoder", "text_encoder"):
        assert (foley_run / "final" / part / "diffusion_pytorch_model.safetensors").is_file()


def test_foley_latent_statistics_and_vocabulary(data, foley_run, vae_run):
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE
    from kling_foley_core.models.mmdit import KlingFoleyMMDiT

    cache = FeatureCache(data["cache"])
    tag = encode_latents(cache, KlingMelVAE.from_pretrained(str(vae_run / "final" / "vae")))
    stats = cache.latents(tag).stats
    tr = KlingFoleyMMDiT.from_pretrained(str(foley_run / "final" / "transformer"))
    assert torch.allclose(tr.latent_mean.flatten(), torch.tensor(stats["mean"], dtype=torch.float32), atol=1e-6)
    vocab = json.loads((foley_run / "config.json").read_text())["vocabulary"]
    assert "knock" in vocab or "knocks" in vocab or "hit" in vocab


def test_foley_resume_continues_exactly(data, vae_run, foley_run):
    out = data["tmp"] / "foley_resumed"
    base = _common(data, out, 16, "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "2e-3",
                   "--warmup", "2", "--save-every", "8", "--log-every", "1", "--no-progress", "--threads", "1",
                   "--max-duration", "2.6", "--p-drop-video", "0.2")
    for o in FOLEY_OVERRIDES:
        base += ["--override", o]
    assert train_foley.main(base + ["--stop-at", "5"]) == 0
    assert train_foley.main(base + ["--resume", "latest"]) == 0
    for part in ("transformer", "sync_encoder"):
        a, b = _weights(foley_run / "final" / part), _weights(out / "final" / part)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{part}.{k}"


def test_trained_parts_run_through_the_pipeline(data, vae_run, foley_run, tmp_path):
    from kling_foley_core.default_model.build import assemble, load_default_model
    from kling_foley_core.pipeline import KlingFoleyPipeline

    m2s = data["tmp"] / "m2s_pipe"
    assert train_mono2stereo.main(_common(data, m2s, 4, "--visual-encoder",
                                          str(foley_run / "final" / "visual_encoder"), "--batch-size", "2",
                                          "--no-progress", "--threads", "1")) == 0
    from kling_foley_core.models.vocoder_vocos import VocosVocoder

    torch.manual_seed(0)
    VocosVocoder("16k", dim=16, intermediate_dim=32, num_layers=1).save_pretrained(tmp_path / "vocoder")
    w = assemble(tmp_path / "weights", vae=vae_run / "final" / "vae", foley=foley_run / "final",
                 mono2stereo=m2s / "final" / "mono2stereo", vocoder=tmp_path / "vocoder")
    leaked = [str(p.relative_to(w)) for p in w.rglob("*.json") if str(tmp_path.parent) in p.read_text()]
    assert leaked == []  # no config names a folder of the machine that built it
    pipe = KlingFoleyPipeline(**load_default_model("cpu", directory=w, vocoder_iters=2))
    assert isinstance(pipe.vocoder, VocosVocoder)
    frames = torch.from_numpy(FeatureCache(data["cache"]).sync_frames(0)).float() / 255.0  # (T, 48, 48, 3)
    out = pipe(frames=frames, fps=25, prompt="a wooden knock", num_inference_steps=2, guidance_scale=2.0)
    assert out.waveform.shape == (1, 2, int(len(frames) / 25 * 16000))
    assert torch.isfinite(out.waveform).all()


# -- Mono2Stereo -------------------------------------------------------------------------------------------------
def test_mono2stereo_loss_falls_and_resumes(data, foley_run):
    vis = str(foley_run / "final" / "visual_encoder")
    args = ["--visual-encoder", vis, "--batch-size", "4", "--crop-frames", "96", "--lr", "3e-3", "--warmup", "2",
            "--save-every", "10", "--log-every", "1", "--no-progress", "--threads", "1"]
    out = data["tmp"] / "m2s"
    assert train_mono2stereo.main(_common(data, out, 20, *args)) == 0
    loss = _metric(out, "loss")
    assert np.mean(loss[-4:]) < 0.8 * np.mean(loss[:3])
    out2 = data["tmp"] / "m2s_resumed"
    assert train_mono2stereo.main(_common(data, out2, 20, "--stop-at", "7", *args)) == 0
    assert train_mono2stereo.main(_common(data, out2, 20, "--resume", "latest", *args)) == 0
    a, b = _weights(out / "final" / "mono2stereo"), _weights(out2 / "final" / "mono2stereo")
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_arguments_are_one_line_errors(data, tmp_path, capsys):
    assert train_foley.main(_common(data, tmp_path / "x", 4, "--vae", str(tmp_path / "nope"))) == 2
    assert "--vae" in capsys.readouterr().out
    assert train_foley.main(_common(data, tmp_path / "x", 4, "--vae", str(tmp_path), "--aux-pan-weight", "-1")) == 2
    assert "--aux-pan-weight=-1.0 must be >= 0" in capsys.readouterr().out
    assert train_foley.main(_common(data, tmp_path / "x", 4, "--vae", str(tmp_path), "--hitfree-repeat", "0")) == 2
    assert "--hitfree-repeat=0 must be >= 1" in capsys.readouterr().out
    assert train_foley.main(_common(data, tmp_path / "x", 4, "--vae", str(tmp_path), "--aux-sync-pos-weight", "0")) == 2
    assert "--aux-sync-pos-weight=0.0 must be > 0" in capsys.readouterr().out
    assert train_mel_vae.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "--data" in capsys.readouterr().out
    with pytest.raises(TrainingError, match="--override"):
        train_foley.parse_overrides(["nonsense"])
    with pytest.raises(TrainingError, match="batch-size"):
        batch_for_step(np.ones(3), 4, 0, 0)


def test_contact_targets_follow_the_token_spans():
    from kling_foley_core.training.train_foley import token_targets

    t = token_targets([{"time": 0.33}, {"time": 1.0}], 3)[0].view(3, 8)
    # 0.33 s is frame 8.25: token 4 of window 0 (frames 8-9) and token 0 of window 1 (which starts at frame 8)
    assert t[0].nonzero().flatten().tolist() == [4] and t[1].nonzero().flatten().tolist() == [0]
    assert t[2].nonzero().flatten().tolist() == [4]  # 1.0 s = frame 25: window 2 (frames 16-31), token 4
    assert t.sum() == 3


def test_pan_targets_sit_on_the_contact_tokens():
    from kling_foley_core.training.train_foley import token_targets

    hits, pans, _, louds = token_targets([{"time": 0.33, "pan": -0.5, "gain": 0.5}, {"time": 0.34, "pan": 0.7,
                                                                                   "gain": 0.3},
                                          {"time": 1.0, "pan": 0.25, "gain": 0.1}], 3)
    hits, pans = hits.view(3, 8), pans.view(3, 8)
    assert hits[0, 4] == 1 and hits[1, 0] == 1 and hits.max() == 1  # two hits in one span count once
    assert pans[0, 4] == pytest.approx(0.1) and pans[2, 4] == pytest.approx(0.25)
    assert pans[hits == 0].abs().max() == 0
    louds = louds.view(3, 8)  # 2·log10 of the span's mean gain: the hit's level in units of 10 dB
    assert louds[0, 4] == pytest.approx(2 * np.log10(0.4)) and louds[2, 4] == pytest.approx(-2.0)
    assert louds[hits == 0].abs().max() == 0
    from kling_foley_core.data.recordings import SOUND_CLASSES

    _, _, cls, _ = token_targets([{"time": 0.33, "sound_class": "bell"}, {"time": 0.34, "sound_class": "kick"},
                                  {"time": 1.0, "sound_class": "not-a-class"}], 3)
    cls = cls.view(3, 8)
    assert cls[0, 4] == list(SOUND_CLASSES).index("bell")  # the first hit of a span names its class
    assert cls[2, 4] == -100 and (cls >= 0).sum() == 2


def test_contact_loss_weighs_contacts_by_the_pos_weight():
    from types import SimpleNamespace

    from kling_foley_core.training.train_foley import FoleyObjective

    parts = SimpleNamespace(sync_encoder=SimpleNamespace(dim=2))
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # token 0 a contact, tokens 1-2 hovering
    hits = torch.tensor([[1.0, 0.0, 0.0]])
    losses = []
    for pos_weight in (4.0, 1.0):
        obj = FoleyObjective(parts, 0.1, 0.5, aux_sync_weight=0.5, aux_sync_pos_weight=pos_weight)
        with torch.no_grad():
            obj.sync_head.weight.copy_(torch.tensor([[0.5, 1.0]]))  # logits 0.5, 1.0, 1.0
            obj.sync_head.bias.zero_()
        logp = torch.nn.functional.logsigmoid
        want = (-pos_weight * logp(torch.tensor(0.5)) - 2 * logp(-torch.tensor(1.0))) / 3
        losses.append(float(obj.sync_aux_loss(feats, hits)))
        assert losses[-1] == pytest.approx(float(want), rel=1e-6)
    assert losses[0] > losses[1]  # the contact token (logit 0.5, a weak yes) costs more at pos weight 4


def test_foley_init_and_auxiliary_sync_loss(data, vae_run, foley_run):
    out = data["tmp"] / "foley_aux"
    args = _common(data, out, 4, "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "1e-3",
                   "--warmup", "1", "--log-every", "1", "--no-progress", "--threads", "1", "--max-duration", "2.6",
                   "--init", str(foley_run / "final"), "--aux-sync-weight", "0.5", "--mono2stereo-weight", "2",
                   "--aux-pan-weight", "1", "--aux-class-weight", "0.5", "--level-weight", "0.5",
                   "--aux-level-weight", "1")
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    assert all(v > 0 for v in _metric(out, "level"))  # the level loss runs through the frozen decoder
    aux = _metric(out, "aux_sync")
    assert len(aux) == 4 and all(a > 0 for a in aux)
    assert all(a > 0 for a in _metric(out, "aux_pan"))  # every clip has hits, so every batch has pan targets
    assert all(a > 0 for a in _metric(out, "aux_class"))
    assert all(a > 0 for a in _metric(out, "aux_level"))  # every hit's gain is a loudness target
    assert all(v > 0 for v in _metric(out, "mono2stereo"))  # Mono2Stereo trained jointly on the visual features
    from kling_foley_core.models.mono2stereo import Mono2Stereo

    m2s = Mono2Stereo.from_pretrained(str(out / "final" / "mono2stereo"))
    # foley-tiny's Mono2Stereo reads the Synchformer tokens (32-d in this test's small sync encoder)
    assert m2s.config.video_features == "sync" and m2s.config.video_dim == 32
    assert float(m2s.out_proj.weight.detach().abs().sum()) > 0
    # --init starts from the earlier run's weights, so the first loss is the trained one, not ~2 (random init)
    assert _metric(out, "loss")[0] < np.mean(_metric(foley_run, "loss")[:3])


def test_auxiliary_heads_are_kept_for_the_next_init(data, vae_run, foley_run, tmp_path):
    """The final folder keeps the training-only heads, so an --init run continues them instead of starting from
    random heads whose first large gradients would shake the pretrained sync encoder."""
    from safetensors.torch import load_file

    from kling_foley_core.training.train_foley import AUX_FILE, load_aux_heads, save_aux_heads

    run = data["tmp"] / "foley_aux"
    if not (run / "final").is_dir():
        test_foley_init_and_auxiliary_sync_loss(data, vae_run, foley_run)
    saved = load_file(str(run / "final" / AUX_FILE))
    assert {k.split(".")[0] for k in saved} == {"sync_head", "pan_head", "class_head", "loud_head"}
    assert not (foley_run / "final" / AUX_FILE).exists()  # that run trained no heads

    def heads(classes: int) -> torch.nn.Module:
        m = torch.nn.Module()
        m.sync_head, m.pan_head, m.class_head = torch.nn.Linear(32, 1), None, torch.nn.Linear(32, classes)
        return m

    src, dst = heads(5), heads(5)
    save_aux_heads(src, tmp_path)
    assert load_aux_heads(dst, tmp_path) == ["sync_head", "class_head"]
    assert torch.equal(dst.sync_head.weight, src.sync_head.weight)
    assert torch.equal(dst.class_head.bias, src.class_head.bias)
    assert load_aux_heads(heads(5), tmp_path / "none") == []  # an older folder: heads start from random
    with pytest.raises(ValueError, match="class_head"):
        load_aux_heads(heads(6), tmp_path)


@pytest.fixture(scope="module")
def merged_cache(data) -> Path:
    """The test set's cache joined with a second cache of hit-free clips (another seed)."""
    root = data["tmp"] / "hitfree"
    root.mkdir()
    cfg = SynthHitsConfig(size=48, min_duration=2.0, max_duration=2.6, p_no_hits=1.0)
    write_shard([generate_clip(synthetic_bank(per_class=2), seed=1, index=i, split="train", config=cfg)
                 for i in range(4)], root / "shard-00000.npz")
    return merge_caches([data["cache"], build_cache(root, data["tmp"] / "hitfree_cache", image_size=48)],
                        data["tmp"] / "merged_cache")


def test_a_cache_is_built_once_when_processes_ask_together(data, tmp_path, monkeypatch):
    """Another process building the same cache (e.g. a second rank) holds its lock: this build waits, then reads
    the cache the other one published, instead of mixing the parts of two builds."""
    import fcntl
    import threading

    from kling_foley_core.training import dataset

    cache, lock = tmp_path / "c", tmp_path / "c.lock"
    real_build, builds, done = dataset._build, [], []
    monkeypatch.setattr(dataset, "_build", lambda *a: builds.append(a) or real_build(*a))
    waiter = threading.Thread(target=lambda: done.append(build_cache(data["data"], cache, image_size=48)))
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # "the other process" is building
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and not (tmp_path / "c.parts").exists()  # waiting, nothing written
        real_build(data["data"], cache, 48, None, 1, False)
        fcntl.flock(held, fcntl.LOCK_UN)
    waiter.join(60)
    assert done == [cache] and builds == []  # the waiter read the published cache and did not build again
    assert len(FeatureCache(cache)) == N_CLIPS and not lock.exists()
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache folder under a file: nothing can be written there
    with pytest.raises(TrainingError, match=r"cannot write beside it .*; pass a --cache folder on a writable disk"):
        build_cache(data["data"], blocked / "c", image_size=48)


def test_an_interrupted_builds_parts_are_reused_only_when_whole(data, tmp_path):
    from kling_foley_core.training.dataset import _build_part

    src = next(data["data"].glob("shard-*.npz"))
    part = _build_part(src, tmp_path / "part-00000", 48, None)
    sync, sem = (part / "sync.bin").read_bytes(), (part / "sem.bin").read_bytes()
    stamp = (part / "part.json").stat().st_mtime_ns
    assert _build_part(src, part, 48, None) == part and (part / "part.json").stat().st_mtime_ns == stamp  # reused
    (part / "sync.bin").unlink()  # e.g. another process removed it while this build was stopped
    _build_part(src, part, 48, None)
    assert (part / "sync.bin").read_bytes() == sync
    (part / "sem.bin").write_bytes((part / "sem.bin").read_bytes()[:-10])  # cut short
    _build_part(src, part, 48, None)
    assert (part / "sem.bin").read_bytes() == sem and (part / "part.json").stat().st_mtime_ns != stamp


def test_merged_cache_holds_every_clip_of_its_sources(data, merged_cache):
    a, b, m = FeatureCache(data["cache"]), FeatureCache(data["tmp"] / "hitfree_cache"), FeatureCache(merged_cache)
    assert len(m) == len(a) + len(b) == N_CLIPS + 4
    for j, (src, i) in enumerate([(a, i) for i in range(len(a))] + [(b, i) for i in range(len(b))]):
        assert m.clips[j]["clip_id"] == src.clips[i]["clip_id"]
        assert np.array_equal(m.mel(j, "left"), src.mel(i, "left"))
        assert np.array_equal(m.sync_frames(j), src.sync_frames(i))
        assert np.array_equal(m.sem_frames(j), src.sem_frames(i))
    assert all(not c["events"] for c in m.clips[N_CLIPS:])
    with pytest.raises(TrainingError, match="already exists"):
        merge_caches([data["cache"], data["tmp"] / "hitfree_cache"], merged_cache)
    with pytest.raises(TrainingError, match="already in an earlier cache"):
        merge_caches([data["cache"], data["cache"]], data["tmp"] / "twice")
    assert not (data["tmp"] / "twice").exists()


def test_merge_command_errors_are_one_line(data, merged_cache, capsys):
    from kling_foley_core.training.dataset import main

    assert main(["--merge", str(data["cache"]), str(data["tmp"] / "hitfree_cache"), "--cache", str(merged_cache)]) == 2
    assert "already exists; merge into a new folder" in capsys.readouterr().out
    assert main(["--merge", str(data["cache"]), str(data["tmp"] / "nope"), "--cache", str(data["tmp"] / "m2")]) == 2
    assert "has no meta.json" in capsys.readouterr().out
    assert main(["--merge", str(data["cache"]), "--cache", str(data["tmp"] / "m2")]) == 2
    assert "at least two caches" in capsys.readouterr().out
    assert not (data["tmp"] / "m2").exists() and not (data["tmp"] / "m2.building").exists()


def test_merge_on_a_full_disk_is_a_one_line_error(data, merged_cache, monkeypatch, capsys):
    import collections
    import errno

    from kling_foley_core.training import dataset

    srcs = [str(data["cache"]), str(data["tmp"] / "hitfree_cache")]
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(dataset.shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    assert dataset.main(["--merge", *srcs, "--cache", str(data["tmp"] / "m3")]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error: --cache") and "GB but its disk has 0.0 GB free; free space" in out
    monkeypatch.undo()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset, "_concatenate", full)
    assert dataset.main(["--merge", *srcs, "--cache", str(data["tmp"] / "m3")]) == 2
    assert "writing the cache failed (No space left on device); nothing was written" in capsys.readouterr().out
    assert not (data["tmp"] / "m3").exists() and not (data["tmp"] / "m3.building").exists()
    assert dataset.main(["--data", str(data["data"]), "--cache", str(data["tmp"] / "b3")]) == 2  # the build's twin
    assert "writing the cache failed (No space left on device)" in capsys.readouterr().out
    assert not (data["tmp"] / "b3").exists() and not (data["tmp"] / "b3.building").exists()


def test_cache_set_reads_like_the_merged_cache(data, vae_run, merged_cache):
    """Several caches read in place (--data A B --cache CA CB) give the merged cache's clips, features, latents
    and latent statistics, without a copy."""
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE
    from kling_foley_core.training.cache_set import CacheSet, open_caches

    caches = [data["cache"], data["tmp"] / "hitfree_cache"]
    s = open_caches([data["data"], data["tmp"] / "hitfree"], caches, image_size=48)
    m = FeatureCache(merged_cache)
    assert isinstance(s, CacheSet) and len(s) == len(m) == N_CLIPS + 4
    assert s.sources == [str(c) for c in caches]
    assert np.array_equal(s.durations, m.durations)
    for i in range(len(m)):
        assert s.clips[i]["clip_id"] == m.clips[i]["clip_id"] and s.caption(i) == m.caption(i)
        assert np.array_equal(s.mel(i, "right"), m.mel(i, "right"))
        assert np.array_equal(s.sync_frames(i), m.sync_frames(i))
        assert np.array_equal(s.sem_frames(i), m.sem_frames(i))
    vae = KlingMelVAE.from_pretrained(str(vae_run / "final" / "vae"))
    tag = encode_latents(s, vae)
    assert all(FeatureCache(c).has_latents(tag) for c in caches)  # each member keeps its own latents
    assert encode_latents(m, vae) == tag
    ls, lm = s.latents(tag), m.latents(tag)
    for i in (0, N_CLIPS - 1, N_CLIPS, N_CLIPS + 3):
        for a, b in zip(ls.get(i), lm.get(i)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for k in ("mean", "std"):  # pooled from the members' statistics = computed over the merged frames
        np.testing.assert_allclose(ls.stats[k], lm.stats[k], rtol=1e-4, atol=1e-6)
    assert not np.allclose(FeatureCache(caches[0]).latents(tag).stats["std"], lm.stats["std"], rtol=1e-3)
    assert open_caches([data["data"]], [data["cache"]], image_size=48).sources == [str(data["cache"])]


def test_cache_set_errors_are_one_line(data, vae_run, merged_cache, capsys):
    args = ["--data", str(data["data"]), str(data["tmp"] / "hitfree"), "--out", str(data["tmp"] / "no_run"),
            "--vae", str(vae_run / "final" / "vae"), "--steps", "1", "--no-progress"]
    assert train_foley.main([*args, "--cache", str(data["cache"])]) == 2
    assert "error: --cache takes one folder per --data folder: got 1 caches for 2" in capsys.readouterr().out
    assert train_foley.main([*args, "--cache", str(data["cache"]), str(merged_cache)]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"error: --cache {merged_cache}: clip ") and "already in an earlier cache" in out
    assert not (data["tmp"] / "no_run").exists()


def test_foley_trains_on_several_caches(data, vae_run, merged_cache):
    from kling_foley_core.models.mel_vae_kling import KlingMelVAE

    out = data["tmp"] / "foley_set"
    args = ["--data", str(data["data"]), str(data["tmp"] / "hitfree"), "--cache", str(data["cache"]),
            str(data["tmp"] / "hitfree_cache"), "--out", str(out), "--steps", "3", "--seed", "0", "--vae",
            str(vae_run / "final" / "vae"), "--batch-size", "6", "--warmup", "1", "--no-progress", "--threads", "1",
            "--max-duration", "2.6", "--log-every", "1"]
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_clips"] == N_CLIPS + 4 and len(cfg["cache"]) == 2
    m = FeatureCache(merged_cache)  # a new model takes the whole set's latent statistics
    stats = m.latents(encode_latents(m, KlingMelVAE.from_pretrained(str(vae_run / "final" / "vae")))).stats
    got = _weights(out / "final" / "transformer")["latent_mean"].flatten()
    np.testing.assert_allclose(got.numpy(), stats["mean"], rtol=1e-4, atol=1e-5)
    assert len(_metric(out, "loss")) == 3


def test_init_keeps_its_latent_normalisation_on_new_data(data, vae_run, foley_run, merged_cache):
    """An --init run on a cache with other latent statistics (a third of it silence) must keep the normalisation
    its weights were trained with, or the continued model would see shifted latents."""
    out = data["tmp"] / "foley_merged"
    args = ["--data", str(data["data"]), "--cache", str(merged_cache), "--out", str(out), "--steps", "2",
            "--seed", "0", "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--warmup", "1",
            "--no-progress", "--threads", "1", "--max-duration", "2.6", "--init", str(foley_run / "final"),
            "--hitfree-repeat", "2"]
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    init, new = _weights(foley_run / "final" / "transformer"), _weights(out / "final" / "transformer")
    tag = json.loads((out / "config.json").read_text())["vae_tag"]
    merged_mean = torch.tensor(FeatureCache(merged_cache).latents(tag).stats["mean"])
    assert not torch.allclose(merged_mean, init["latent_mean"].flatten())  # the statistics do differ
    assert torch.equal(new["latent_mean"], init["latent_mean"])
    assert torch.equal(new["latent_std"], init["latent_std"])


def test_export_checkpoint_gives_the_final_ema_weights(data, vae_run, foley_run, tmp_path):
    from kling_foley_core.default_model.build import load_default_model
    from kling_foley_core.training.export import export_checkpoint, main as export_main

    run = data["tmp"] / "foley_aux"  # trained with Mono2Stereo; its last checkpoint is the step of final/
    if not (run / "final").is_dir():
        test_foley_init_and_auxiliary_sync_loss(data, vae_run, foley_run)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    w = export_checkpoint(ckpt, tmp_path / "weights", vae=vae_run / "final" / "vae")
    for part in ("transformer", "sync_encoder", "mono2stereo"):
        a, b = _weights(run / "final" / part), _weights(w / part)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{part}.{k}"
    comps = load_default_model("cpu", directory=w, vocoder_iters=2)
    assert comps["transformer"].config.sync_layout == "time"
    assert export_main([str(tmp_path / "not-a-checkpoint"), str(tmp_path / "w2")]) == 2


def test_export_mel_vae_checkpoint_gives_the_final_ema_weights(vae_run, tmp_path):
    from kling_foley_core.training.export import main as export_main

    ckpt = sorted((vae_run / "checkpoints").iterdir())[-1]  # the last step, which final/ was written at
    assert export_main([str(ckpt), str(tmp_path / "vae")]) == 0
    a, b = _weights(vae_run / "final" / "vae"), _weights(tmp_path / "vae")
    assert a.keys() == b.keys() and "data_mean" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a Mel-VAE run's checkpoint takes no --vae
    assert export_main([str(ckpt), str(tmp_path / "w"), "--vae", str(tmp_path / "vae")]) == 2
    assert not (tmp_path / "w").exists()
    # an existing export is never overwritten, and a refused or failed export leaves no partial folder
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "vae").iterdir()}
    assert export_main([str(ckpt), str(tmp_path / "vae")]) == 2
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "vae").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae"]


def test_context_masks_follow_the_span_share():
    from kling_foley_core.sampling.flow_matching import context_masks

    g = torch.Generator().manual_seed(0)
    known = context_masks(400, 50, prob=0.7, span=(0.7, 1.0), generator=g)
    with_ctx = known.any(1)
    assert 0.6 < float(with_ctx.float().mean()) < 0.8  # context zeroed with probability 0.3
    generated = (~known[with_ctx]).sum(1).float() / 50
    assert float(generated.min()) >= 0.68 and float(generated.max()) < 1.0
    for row in known[with_ctx]:  # one contiguous generated span
        gen_idx = (~row).nonzero().flatten()
        assert int(gen_idx[-1] - gen_idx[0]) + 1 == len(gen_idx)


def test_context_masks_can_know_only_a_prefix():
    from kling_foley_core.sampling.flow_matching import context_masks

    g = torch.Generator().manual_seed(0)
    known = context_masks(400, 50, prob=1.0, span=(0.5, 0.9), generator=g, prefix=0.5)
    to_end = ~known[:, -1]  # the generated span reaches the last frame: only a prefix is known
    assert 0.4 < float(to_end.float().mean()) < 0.6
    assert bool(known[to_end, 0].all())  # and that prefix is not empty (at most 90 % generated)
    every = context_masks(20, 50, prob=1.0, span=(0.5, 0.9), generator=g, prefix=1.0)
    assert not every[:, -1].any() and bool(every[:, 0].all())


def test_masked_loss_ignores_the_known_frames():
    from kling_foley_core.sampling.flow_matching import masked_flow_matching_loss

    x1 = torch.randn(2, 10, 3)
    known = torch.zeros(2, 10, dtype=torch.bool)
    known[:, :4] = True

    def predict(xt, t):  # exact on the generated frames, garbage on the known ones
        out = x1 - (xt - t[:, None, None] * x1) / (1 - t[:, None, None])
        return torch.where(known[..., None], torch.full_like(out, 1e3), out)

    assert float(masked_flow_matching_loss(predict, x1, known, generator=torch.Generator().manual_seed(1))) < 1e-6


def test_foley_context_training_from_a_plain_init(data, vae_run, foley_run):
    """--context-prob continues a model without the pathway (the branch starts at zero) and trains it."""
    out = data["tmp"] / "foley_ctx"
    args = _common(data, out, 3, "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "1e-3",
                   "--warmup", "1", "--log-every", "1", "--no-progress", "--threads", "1", "--max-duration", "2.6",
                   "--init", str(foley_run / "final"), "--context-prob", "0.7", "--p-drop-clip", "0.3",
                   "--override", "transformer.context_input=true")
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    w = _weights(out / "final" / "transformer")
    assert float(w["context_embed.out.weight"].abs().sum()) > 0  # the branch learned something
    # a pathway trained without the summary continues with it: the summary starts at zero and trains
    more = _common(data, data["tmp"] / "foley_ctx_global", 2, "--vae", str(vae_run / "final" / "vae"),
                   "--batch-size", "4", "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--no-progress",
                   "--threads", "1", "--max-duration", "2.6", "--init", str(out / "final"), "--context-prob", "0.9",
                   "--override", "transformer.context_input=true", "--override", "transformer.context_global=true")
    for o in FOLEY_OVERRIDES:
        more += ["--override", o]
    assert train_foley.main(more) == 0
    w2 = _weights(data["tmp"] / "foley_ctx_global" / "final" / "transformer")
    assert float(w2["context_embed.summary_out.weight"].abs().sum()) > 0
    bad = _common(data, data["tmp"] / "x", 2, "--vae", str(vae_run / "final" / "vae"), "--context-prob", "0.5")
    for o in FOLEY_OVERRIDES:
        bad += ["--override", o]
    assert train_foley.main(bad) == 2  # no pathway: a one-line error, not a traceback


def test_freeze_holds_the_video_encoders_at_their_init(data, vae_run, foley_run):
    """--freeze keeps the named encoders bit-identical to --init while the transformer trains; without --init it is
    a one-line error (a frozen random encoder would be useless)."""
    out = data["tmp"] / "foley_frozen"
    args = _common(data, out, 3, "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "1e-3",
                   "--warmup", "1", "--log-every", "1", "--no-progress", "--threads", "1", "--max-duration", "2.6",
                   "--init", str(foley_run / "final"), "--freeze", "visual_encoder", "sync_encoder")
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    for part in ("visual_encoder", "sync_encoder"):
        before, after = _weights(foley_run / "final" / part), _weights(out / "final" / part)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), part
    before, after = _weights(foley_run / "final" / "transformer"), _weights(out / "final" / "transformer")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the rest did train
    bad = _common(data, data["tmp"] / "x", 2, "--vae", str(vae_run / "final" / "vae"), "--freeze", "sync_encoder")
    assert train_foley.main(bad) == 2


def test_swapped_clips_are_marked_and_keep_their_caption(data, tmp_path):
    """Clips whose objects sound like another class than they look (--p-swap-sound) are marked in the cache, and
    the objective never drops their caption (it is the only cue to their sound)."""
    import json
    from types import SimpleNamespace

    from kling_foley_core.training.cache_set import mark_swapped
    from kling_foley_core.training.common import TrainingError
    from kling_foley_core.training.dataset import sound_swapped

    bank = synthetic_bank(per_class=2)
    swap = SynthHitsConfig(size=48, min_duration=2.0, max_duration=2.6, p_no_hits=0.0, p_swap_sound=1.0)
    assert all(sound_swapped(generate_clip(bank, seed=1, index=i, split="train", config=swap).objects)
               for i in range(3))
    assert not any(c["sound_swapped"] for c in FeatureCache(data["cache"]).clips)  # recorded when built
    assert all(o["look_class"] == o["sound_class"] for c in FeatureCache(data["cache"]).clips for o in c["objects"])
    old = SimpleNamespace(clips=[{"clip_id": "a"}], dir=tmp_path)  # a cache built before the field existed
    (tmp_path / "index.json").write_text(json.dumps({"config": {"p_swap_sound": 1.0}}))
    mark_swapped(old, tmp_path)
    assert old.clips[0]["sound_swapped"] is True
    (tmp_path / "index.json").write_text(json.dumps({"config": {"p_swap_sound": 0.5}}))
    with pytest.raises(TrainingError, match="rebuild the cache"):
        mark_swapped(SimpleNamespace(clips=[{"clip_id": "a"}], dir=tmp_path), tmp_path)


def test_swapped_clips_keep_their_caption_by_the_rule_asked_for():
    from kling_foley_core.training.train_foley import text_drops

    u = torch.tensor([0.1, 0.1, 0.1, 0.9])  # the first three drawn under p_drop 0.5, the last not
    swapped = torch.tensor([True, True, False, True])
    known = torch.zeros(4, 6, dtype=torch.bool)
    known[1, :2] = True  # clip 1 has known audio
    assert text_drops(u, 0.5, None, known).tolist() == [True, True, True, False]
    # default: a swapped clip keeps its caption unless it has known audio (then the context is its cue)
    assert text_drops(u, 0.5, swapped, known).tolist() == [False, True, True, False]
    assert text_drops(u, 0.5, swapped, None).tolist() == [False, False, True, False]
    # "always": no swapped clip loses its caption
    assert text_drops(u, 0.5, swapped, known, "always").tolist() == [False, False, True, False]


def test_swapped_roles_show_swapped_clips_only_as_control_examples():
    from kling_foley_core.training.train_foley import swapped_roles

    swapped = torch.tensor([True, True, True, False])
    u = torch.tensor([0.2, 0.2, 0.8, 0.2])  # clips 0 and 1: AC-VTA; clip 2: TC-VTA; clip 3 is not swapped
    known = torch.zeros(4, 6, dtype=torch.bool)
    known[1, 4:] = True  # clip 1 already has a context: it is kept
    known[2, :3] = True  # clip 2 (TC-VTA) loses its context
    known[3, :2] = True  # an unswapped clip keeps what it drew
    forced = torch.zeros(4, 6, dtype=torch.bool)
    forced[:, :3] = True
    drop_t = torch.tensor([False, False, True, True])
    k, t, c = swapped_roles(swapped, u, known, forced, drop_t, None)
    assert k[0].tolist() == forced[0].tolist() and k[1].tolist() == known[1].tolist()
    assert not k[2].any() and k[3].tolist() == known[3].tolist()
    assert t.tolist() == [True, True, False, True]  # AC-VTA: no caption; TC-VTA: its caption; others as drawn
    assert c.tolist() == [True, True, True, False]  # no swapped clip shows its (misleading) semantic features
    k, _, c = swapped_roles(swapped, u, None, forced, drop_t, torch.tensor([False, False, False, True]))
    assert k[0].tolist() == forced[0].tolist() and not k[2:].any() and c.tolist() == [True] * 4


def test_older_caches_take_hit_gains_from_their_dataset(data):
    import copy

    from kling_foley_core.training.cache_set import mark_gains
    from kling_foley_core.training.common import TrainingError
    from kling_foley_core.training.dataset import FeatureCache

    cache = FeatureCache(data["cache"])
    assert all("gain" in e for c in cache.clips for e in c["events"])  # recorded when built
    want = [[e["gain"] for e in c["events"]] for c in cache.clips]
    for c in cache.clips:  # as a cache built before events recorded their gain
        for e in c["events"]:
            del e["gain"]
    bad = copy.deepcopy(cache)
    mark_gains(cache, data["data"])
    assert [[e["gain"] for e in c["events"]] for c in cache.clips] == want
    bad.clips[0]["clip_id"] = "not-in-the-dataset"
    with pytest.raises(TrainingError, match="rebuild the cache"):
        mark_gains(bad, data["data"])


def test_foley_reference_examples_train_the_context_pathway(data, vae_run, foley_run, tmp_path, capsys):
    """--reference-prob makes batches of AC-VTA examples: swapped one-class clips with another recording of their
    sound in front (conditioned as the reference mode is; see test_reference_examples). Without such clips it is a
    one-line error."""
    bank = synthetic_bank(per_class=2)
    bank.save(tmp_path / "rec" / f"bank-{bank.sample_rate}")
    cfg = SynthHitsConfig(size=48, min_duration=2.0, max_duration=2.6, p_no_hits=0.0, p_swap_sound=1.0,
                          min_objects=1, max_objects=1)
    root = tmp_path / "swap"
    root.mkdir()
    write_shard([generate_clip(bank, seed=3, index=i, split="train", config=cfg) for i in range(6)],
                root / "shard-00000.npz")
    cache = build_cache(root, tmp_path / "swap-cache", image_size=48)
    out = tmp_path / "foley_ref"
    args = ["--data", str(root), "--cache", str(cache), "--out", str(out), "--steps", "3", "--seed", "0",
            "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "1e-3", "--warmup", "1",
            "--log-every", "1", "--no-progress", "--threads", "1", "--max-duration", "2.6",
            "--init", str(foley_run / "final"), "--reference-prob", "1", "--reference-per-class", "3",
            "--recordings", str(tmp_path / "rec"), "--override", "transformer.context_input=true"]
    for o in FOLEY_OVERRIDES:
        args += ["--override", o]
    assert train_foley.main(args) == 0
    assert _metric(out, "ac_vta") == [1, 1, 1]
    assert all(np.isfinite(_metric(out, "loss")))
    w = _weights(out / "final" / "transformer")
    assert float(w["context_embed.out.weight"].abs().sum()) > 0  # the pathway learned from the references
    bad = ["--data", str(data["data"]), "--cache", str(data["cache"]), *args[4:]]  # no swapped clip there
    assert train_foley.main(bad) == 2
    # --freeze transformer: the context pathway (here with its summary) trains alone, the rest stays the --init's
    adapter = tmp_path / "foley_adapter"
    a_args = [*args[:4], "--out", str(adapter), *args[6:], "--override", "transformer.context_global=true",
              "--freeze", "transformer"]
    assert train_foley.main(a_args) == 0
    before, after = _weights(foley_run / "final" / "transformer"), _weights(adapter / "final" / "transformer")
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("context_embed."))
    assert float(after["context_embed.summary_out.weight"].abs().sum()) > 0
    no_pathway = list(a_args)
    for o in ("transformer.context_input=true", "transformer.context_global=true"):
        i = no_pathway.index(o)
        del no_pathway[i - 1:i + 1]
    capsys.readouterr()
    assert train_foley.main(no_pathway) == 2  # nothing would train: a one-line error
    assert "--freeze transformer" in "".join(capsys.readouterr())
    # --reference-teacher: the examples learn the V2A velocity that a frozen copy of the --init model predicts for
    # each clip's twin (the same clip drawn with the look of its sound)
    twin = tmp_path / "twin"
    twin.mkdir()
    write_shard([generate_clip(bank, seed=3, index=i, split="train", config=replace(cfg, look_of_sound=True))
                 for i in range(6)], twin / "shard-00000.npz")
    twin_cache = build_cache(twin, tmp_path / "twin-cache", image_size=48)
    taught = tmp_path / "foley_taught"
    t_args = [*a_args[:4], "--out", str(taught), *a_args[6:], "--reference-teacher", str(twin_cache)]
    assert train_foley.main(t_args) == 0
    assert _metric(taught, "ac_vta") == [1, 1, 1] and all(np.isfinite(_metric(taught, "loss")))
    assert _metric(taught, "loss") != _metric(adapter, "loss")  # same draws, another target
    after = _weights(taught / "final" / "transformer")
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("context_embed."))
    assert float(after["context_embed.summary_out.weight"].abs().sum()) > 0
    capsys.readouterr()
    assert train_foley.main([*t_args[:-1], str(data["cache"])]) == 2  # not these clips' twins
    assert "has a twin" in "".join(capsys.readouterr())
    assert train_foley.main([*t_args, "--reference-weight", "0"]) == 2
    assert "--reference-weight=0.0 must be > 0" in "".join(capsys.readouterr())
    # --reference-contrast: some examples get a reference of the clip's look and learn the clip's own V2A
    assert all(o["look_class"] != o["sound_class"] for c in FeatureCache(cache).clips for o in c["objects"])
    contrast = tmp_path / "foley_contrast"
    c_args = [*t_args[:4], "--out", str(contrast), *t_args[6:], "--reference-contrast", "0.5"]
    assert train_foley.main(c_args) == 0
    assert all(np.isfinite(_metric(contrast, "loss"))) and _metric(contrast, "loss") != _metric(taught, "loss")
    after = _weights(contrast / "final" / "transformer")
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("context_embed."))
    assert train_foley.main([*a_args, "--reference-contrast", "0.5"]) == 2  # no teacher
    assert "--reference-contrast=0.5" in "".join(capsys.readouterr())
    old = tmp_path / "swap-cache-old"  # a cache built before objects recorded their look
    shutil.copytree(cache, old)
    meta = json.loads((old / "meta.json").read_text())
    for c in meta["clips"]:
        for o in c["objects"]:
            del o["look_class"]
    (old / "meta.json").write_text(json.dumps(meta))
    i = c_args.index("--cache")
    assert train_foley.main([*c_args[:i + 1], str(old), *c_args[i + 2:]]) == 2
    assert "rebuild its feature cache" in "".join(capsys.readouterr())
    # the teacher is the --init model's copy, also when a run whose transformer trains is resumed: the resumed
    # step's loss is the uninterrupted run's
    i = t_args.index("--freeze")
    whole = [*t_args[:i], *t_args[i + 2:]]
    o = whole.index("--out")
    straight, resumed = tmp_path / "taught_straight", tmp_path / "taught_resumed"
    assert train_foley.main([*whole[:o + 1], str(straight), *whole[o + 2:]]) == 0
    again = [*whole[:o + 1], str(resumed), *whole[o + 2:]]
    assert train_foley.main([*again, "--stop-at", "2"]) == 0
    assert train_foley.main([*again, "--resume", "latest"]) == 0
    assert _metric(resumed, "loss")[-1] == pytest.approx(_metric(straight, "loss")[-1], rel=1e-5)
    # --reference-text: those steps are TC-VTA examples (the caption, no known audio) learning the twin's V2A
    text = tmp_path / "taught_text"
    from_adapter = [*whole[:o + 1], str(text), *whole[o + 2:], "--reference-text", "1"]
    from_adapter[from_adapter.index("--init") + 1] = str(adapter / "final")  # a model with a trained pathway
    assert train_foley.main(from_adapter) == 0
    assert _metric(text, "tc_vta") == [1, 1, 1] and _metric(text, "ac_vta") == [0, 0, 0]
    assert all(np.isfinite(_metric(text, "loss")))
    start, after = _weights(adapter / "final" / "transformer"), _weights(text / "final" / "transformer")
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert any(k.startswith("context_embed.") for k in start)
    assert moved and not any(k.startswith("context_embed.") for k in moved)  # no known audio reached the model
    # with --reference-contrast some of them are the clip's own V2A (no caption, its semantic features, the
    # teacher on its own frames): the same draws, another loss
    text_c = tmp_path / "taught_text_contrast"
    o2 = from_adapter.index("--out")
    assert train_foley.main([*from_adapter[:o2 + 1], str(text_c), *from_adapter[o2 + 2:],
                             "--reference-contrast", "0.5"]) == 0
    assert all(np.isfinite(_metric(text_c, "loss"))) and _metric(text_c, "loss") != _metric(text, "loss")
    # --contrast-sound: a contrast example keeps its clip's frames and learns the sound of its look (the swapped
    # set rendered with --sound-of-look), on TC-VTA and on AC-VTA steps
    look = tmp_path / "look"
    look.mkdir()
    write_shard([generate_clip(bank, seed=3, index=i, split="train", config=replace(cfg, sound_of_look=True))
                 for i in range(6)], look / "shard-00000.npz")
    look_cache = build_cache(look, tmp_path / "look-cache", image_size=48)
    with_sound = [*from_adapter[:o2 + 1], str(tmp_path / "text_sound"), *from_adapter[o2 + 2:],
                  "--reference-contrast", "0.5", "--contrast-sound", str(look_cache)]
    assert train_foley.main(with_sound) == 0
    assert all(np.isfinite(_metric(tmp_path / "text_sound", "loss")))
    assert _metric(tmp_path / "text_sound", "loss") != _metric(text_c, "loss")
    i = with_sound.index("--reference-text")
    ac_vta = [*with_sound[:o2 + 1], str(tmp_path / "ac_sound"), *with_sound[o2 + 2:i], *with_sound[i + 2:]]
    assert train_foley.main(ac_vta) == 0 and _metric(tmp_path / "ac_sound", "ac_vta") == [1, 1, 1]
    capsys.readouterr()
    assert train_foley.main([*with_sound[:-1], str(twin_cache)]) == 2  # the twins sound as the clips do
    assert "--contrast-sound" in "".join(capsys.readouterr())
    assert train_foley.main([*from_adapter, "--contrast-sound", str(look_cache)]) == 2  # no --reference-contrast
    assert "--contrast-sound" in "".join(capsys.readouterr())
    # --reference-text-trains: the TC-VTA steps update only the named parameters
    only = tmp_path / "text_only"
    assert train_foley.main([*from_adapter[:o2 + 1], str(only), *from_adapter[o2 + 2:],
                             "--reference-text-trains", "text_input_proj", "joint_blocks.*.text_block"]) == 0
    after = _weights(only / "final" / "transformer")
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert any(k.startswith("text_input_proj.") for k in moved) and any(".text_block." in k for k in moved)
    assert all(k.startswith("text_input_proj.") or ".text_block." in k for k in moved), sorted(moved)
    assert train_foley.main([*from_adapter, "--reference-text-trains", "text_blocks"]) == 2
    assert "--reference-text-trains text_blocks" in "".join(capsys.readouterr())
    capsys.readouterr()
    assert train_foley.main([*a_args, "--reference-text", "0.5"]) == 2  # no teacher
    assert "--reference-text=0.5" in "".join(capsys.readouterr())


def test_reference_teacher_predicts_the_twins_v2a_as_inference_does(data, foley_run, tmp_path):
    """The teacher's velocity over an AC-VTA example: the pipeline's (unguided) V2A velocity of the twin on the
    clip's frames, whatever the reference frames hold; zero on those."""
    from kling_foley_core.generation import FoleyConditions, prepare_flow
    from kling_foley_core.training.reference_teacher import ReferenceTeacher

    cfg = json.loads((foley_run / "config.json").read_text())
    parts = train_foley.build_parts(cfg["vocabulary"], cfg["overrides"], 0, cfg["sizes"])
    train_foley.load_parts(parts, foley_run / "final")
    cache = FeatureCache(data["cache"])
    teacher = ReferenceTeacher(parts, cache, cache.clips[:2])
    objective = train_foley.FoleyObjective(parts, 0.0, 0.0)
    tr, d, n_ref = parts.transformer.eval(), 2.0, 5
    lens = tr.sequence_lengths(d)
    sem, sync = teacher.frames(cache.clips[:2], lens.clip, train_foley.sync_frame_count(lens))
    predict = teacher.flow(objective.encode_video, sem, sync, torch.tensor([False, True]), d, n_ref)
    g = torch.Generator().manual_seed(0)
    xt, t = torch.randn(2, n_ref + lens.latent, tr.config.latent_dim, generator=g), torch.tensor([0.3, 0.7])
    v = predict(xt, t)
    assert float(v[:, :n_ref].abs().max()) == 0.0
    other = xt.clone()
    other[:, :n_ref] = torch.randn(2, n_ref, tr.config.latent_dim, generator=g)
    assert torch.equal(predict(other, t), v)
    with torch.no_grad():
        clip_f, sync_f = objective.encode_video(sem, sync)
        sync_f[1] = tr.empty_sync_feat  # the second item's sync stream dropped, as the example's is
        flow = prepare_flow(tr, FoleyConditions(duration=d, clip_f=clip_f, sync_f=sync_f, text_f=None), d,
                            guided=False)
        want = tr.predict_flow(xt[:, n_ref:], t, flow.cond)
    assert torch.allclose(v[:, n_ref:], want, atol=1e-5), float((v[:, n_ref:] - want).abs().max())


def test_text_contrast_examples_without_semantics_differ_from_tc_vta_by_the_caption_alone(data, foley_run):
    """A TC-VTA contrast example keeps its semantic features unless ``semantics`` says no; then, like the TC-VTA
    example, it reads none (its loss does not change with them)."""
    from kling_foley_core.training.reference_teacher import ReferenceTeacher

    cfg = json.loads((foley_run / "config.json").read_text())
    parts = train_foley.build_parts(cfg["vocabulary"], cfg["overrides"], 0, cfg["sizes"])
    train_foley.load_parts(parts, foley_run / "final")
    cache = FeatureCache(data["cache"])
    objective = train_foley.FoleyObjective(parts, 0.0, 0.0)
    object.__setattr__(objective, "teacher", ReferenceTeacher(parts, cache, cache.clips[:2]))
    tr, d = parts.transformer.eval(), 2.0
    lens = tr.sequence_lengths(d)
    twins = objective.teacher.frames(cache.clips[:2], lens.clip, train_foley.sync_frame_count(lens))
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, lens.latent, tr.config.latent_dim, generator=g)
    sync_f = torch.randn(2, lens.sync, tr.config.sync_dim, generator=g)
    ids, mask = parts.text_encoder.tokenize(["a wooden knock", "a metal clang"])
    clip_a, clip_b = (torch.randn(2, lens.clip, tr.config.clip_dim, generator=g) for _ in range(2))
    every = torch.tensor([True, True])

    def loss(clip_f, semantics):
        with torch.no_grad():
            return float(objective.text_control_loss(x1, clip_f, sync_f, ids, mask, d,
                                                     torch.Generator().manual_seed(1), twins, every, semantics))
    assert loss(clip_a, ~every) == loss(clip_b, ~every)
    assert loss(clip_a, every) != loss(clip_b, every)
    assert loss(clip_a, None) == loss(clip_a, every)


def test_timing_sync_is_fitted_on_the_frozen_encoder_and_kept_by_the_next_init(data, vae_run, foley_run):
    """--override transformer.timing_sync=true fits the timing head before the first step and trains only its
    vectors with the MM-DiT (the head gets no flow gradient); a later --init keeps the fitted head. Without
    --freeze sync_encoder it is a one-line error."""
    def args(out, init, *extra):
        a = _common(data, out, 3, "--vae", str(vae_run / "final" / "vae"), "--batch-size", "4", "--lr", "1e-3",
                    "--warmup", "1", "--log-every", "1", "--no-progress", "--threads", "1", "--max-duration", "2.6",
                    "--init", str(init), "--p-drop-clip", "0.5", "--override", "transformer.timing_sync=true", *extra)
        for o in FOLEY_OVERRIDES:
            a += ["--override", o]
        return a
    out = data["tmp"] / "foley_timing"
    assert train_foley.main(args(out, foley_run / "final", "--freeze", "sync_encoder")) == 0
    w = _weights(out / "final" / "transformer")
    # fitted: the input statistics are the encoder's, not the initial 0 / 1
    assert float(w["sync_timing.feature_std"].sub(1).abs().max()) > 1e-3
    assert float(w["sync_timing.contact"].abs().sum()) > 0
    again = data["tmp"] / "foley_timing2"
    assert train_foley.main(args(again, out / "final", "--freeze", "sync_encoder")) == 0
    w2 = _weights(again / "final" / "transformer")
    heads = [k for k in w2 if k.startswith("sync_timing.head") or k.startswith("sync_timing.feature")]
    assert heads and all(torch.equal(w[k], w2[k]) for k in heads)  # kept, not refitted, and not trained
    assert any(not torch.equal(w[k], w2[k]) for k in ("sync_timing.rest", "sync_timing.contact"))
    assert train_foley.main(args(data["tmp"] / "x", foley_run / "final")) == 2  # encoder not frozen
