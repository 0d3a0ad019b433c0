"""The embedded foley-tiny model: its parts load from the shipped folder and run through the standard pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kling_foley_core.default_model import (FOLEY_TINY, DefaultModelError, is_available, load_default_model,
                                            weights_dir)
from kling_foley_core.default_model.text_encoder import WordTextEncoder, build_vocabulary, split_words

shipped = pytest.mark.skipif(not is_available(), reason="foley-tiny weights not assembled in this checkout")


# -- text encoder (no weights needed) ------------------------------------------------------------------------
def test_vocabulary_and_tokens():
    vocab = build_vocabulary(["Two wooden knocks on the left.", "A cymbal crash on the right."])
    assert vocab[:2] == ["on", "the"]  # most frequent first
    enc = WordTextEncoder(vocabulary=vocab, dim=16, num_heads=2, num_layers=1, max_length=6)
    ids, mask = enc.tokenize(["", "two knocks", "a zebra knocks loudly twice on"])
    assert ids[0].tolist() == [1, 0, 0, 0, 0, 0] and mask[0].sum() == 1  # "" is <s> alone
    assert ids[1, 1] == 2 + vocab.index("two") and ids[1, 2] == 2 + vocab.index("knocks")
    assert mask[2].all()  # truncated to max_length
    unk = enc.token_id("zebra")
    assert unk >= 2 + len(vocab) and unk == enc.token_id("zebra")  # hashed bucket, stable
    assert split_words("A door-bang, THEN two!") == ["a", "door", "bang", "then", "two"]


def test_text_encoder_features_and_roundtrip(tmp_path):
    enc = WordTextEncoder(vocabulary=["knock", "bell"], dim=16, num_heads=2, num_layers=1, max_length=8).eval()
    f = enc.encode(["knock", "bell bell"])
    assert f.hidden.shape == (2, 8, 16) and f.mask.sum(1).tolist() == [2, 3]
    assert torch.all(f.hidden[~f.mask] == 0)  # padding carries nothing
    assert not torch.allclose(f.hidden[0, 1], f.hidden[1, 1])
    enc.save_pretrained(tmp_path / "t")
    again = WordTextEncoder.from_pretrained(str(tmp_path / "t")).eval()
    assert list(again.config.vocabulary) == ["knock", "bell"]
    assert torch.equal(again.encode(["knock", "bell bell"]).hidden, f.hidden)


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(DefaultModelError, match="lacks transformer"):
        load_default_model(directory=tmp_path)


# -- the shipped weights -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def components():
    return load_default_model("cpu", vocoder_iters=4)


@shipped
def test_shipped_parts_match_the_foley_tiny_design(components):
    tr = components["transformer"]
    for k in ("hidden_dim", "depth", "fused_depth", "latent_dim", "max_duration", "sync_layout"):
        assert tr.config[k] == FOLEY_TINY["transformer"][k]
    assert tr.config.use_duration and tr.config.learned_empty_text and tr.config.sample_rate == 16000
    assert components["vae"].latent_channels == 20 and components["vae"].mel_mode == "16k"
    for k in ("hidden_dim", "num_blocks", "decoder_hidden_dim"):  # the refitted decoder is what ships
        assert components["vae"].config[k] == FOLEY_TINY["vae"][k]
    assert components["visual_encoder"].dim == tr.config.clip_dim
    m2s = components["mono2stereo"].config
    assert m2s.video_features == FOLEY_TINY["mono2stereo"]["video_features"] == "sync"  # stereo from the sync tokens
    assert components["sync_encoder"].dim == tr.config.sync_dim == m2s.video_dim
    assert components["sync_encoder"].tokens_per_window == 8  # the MM-DiT's sync contract
    assert components["text_encoder"].max_length == tr.config.text_seq_len
    assert len(components["text_encoder"].config.vocabulary) > 10
    assert float(tr.latent_std.min()) > 0 and not torch.all(tr.latent_std == 1)  # trained statistics
    from kling_foley_core.models.vocoder_vocos import VocosVocoder, check_vocoder_fits

    assert isinstance(components["vocoder"], VocosVocoder)  # the trained vocoder ships, Griffin-Lim is the fallback
    check_vocoder_fits(components["vocoder"], components["vae"].mel_mode)
    manifest = json.loads((weights_dir() / "foley_tiny.json").read_text())
    assert manifest["total_mb"] < 60


@shipped
def test_shipped_model_generates_stereo_audio_from_frames(components):
    from kling_foley_core.pipeline import KlingFoleyPipeline

    pipe = KlingFoleyPipeline(**components)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.uniform(0, 1, (60, 64, 80, 3)).astype(np.float32))  # 2.4 s of noise at 25 fps
    out = pipe(frames=frames, fps=25, num_inference_steps=3, guidance_scale=4.5, seed=1)
    assert out.sample_rate == 16000
    assert out.waveform.shape == (1, 2, int(2.4 * 16000))
    assert torch.isfinite(out.waveform).all() and out.waveform.abs().max() <= 1.0
    again = pipe(frames=frames, fps=25, num_inference_steps=3, guidance_scale=4.5, seed=1)
    assert torch.equal(out.waveform, again.waveform)  # seeded


@shipped
def test_durations_beyond_training_are_generated_in_windows(components):
    from kling_foley_core.generation import GenerationError
    from kling_foley_core.pipeline import KlingFoleyPipeline

    pipe = KlingFoleyPipeline(**{k: v for k, v in components.items()
                                 if k not in ("visual_encoder", "sync_encoder")})
    pipe.set_progress_bar_config(disable=True)
    out = pipe(duration=12.0, prompt="a knock", num_inference_steps=1, seed=0)  # was refused: 10 s limit
    assert out.waveform.shape[-1] == 12 * out.sample_rate
    assert torch.isfinite(out.waveform).all() and out.waveform[..., -out.sample_rate:].abs().max() > 0
    with pytest.raises(GenerationError, match="duration=nan"):
        pipe(duration=float("nan"), num_inference_steps=1)


@shipped
def test_the_shipped_folder_is_a_pipeline_that_from_pretrained_opens_by_name(components):
    from kling_foley_core.pipeline import KlingFoleyPipeline

    assert (weights_dir() / "model_index.json").is_file()  # was: from_pretrained failed without it
    pipe = KlingFoleyPipeline.from_pretrained("foley-tiny")
    assert all(pipe.components[k] is not None for k in components)  # encoders included
    assert pipe.config.apg_eta == 0.0  # the guidance foley-tiny is tuned for travels with the folder
    same = KlingFoleyPipeline(**{**components, "vocoder": pipe.vocoder}, apg_eta=0.0)
    frames = torch.rand(30, 48, 64, 3, generator=torch.Generator().manual_seed(3))
    for p in (pipe, same):
        p.set_progress_bar_config(disable=True)
    a = pipe(frames=frames, fps=25, prompt="a knock", num_inference_steps=2, seed=1)
    b = same(frames=frames, fps=25, prompt="a knock", num_inference_steps=2, seed=1)
    assert torch.equal(a.waveform, b.waveform)  # both readers of the folder give the same model
