"""Text encoders: T5 (Kling-Foley), CLIP text (MMAudio), CLAP (HunyuanVideo-Foley) behind one interface."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from kling_foley_core.encoders import TEXT_ENCODERS, EncoderError, TextFeatures, get_text_encoder
from kling_foley_core.encoders.text import byte_level_clip_tokenizer, load_t5

G = lambda s: torch.Generator().manual_seed(s)  # noqa: E731


def test_tiny_t5_shapes_mask_empty_prompt_and_batch_invariance():
    enc = get_text_encoder("tiny-t5", generator=G(0))
    assert (enc.dim, enc.max_length) == (32, 77)
    feats = enc.encode(["a dog barks", ""])
    assert isinstance(feats, TextFeatures)
    assert feats.hidden.shape == (2, 77, 32) and feats.mask.shape == (2, 77) and feats.mask.dtype == torch.bool
    assert feats.mask[0].sum() == len("a dog barks") + 1  # bytes + </s>
    assert feats.mask[1].sum() == 1  # the empty string is just </s>: its features, not zeros
    assert feats.hidden[1, 0].abs().sum() > 0
    alone = enc.encode([""])
    assert torch.allclose(alone.hidden[0, :1], feats.hidden[1, :1], atol=1e-5)
    assert enc.encode("a dog barks").hidden.shape == (1, 77, 32)


def test_long_prompt_truncated_with_warning(caplog):
    enc = get_text_encoder("tiny-t5", generator=G(0), max_length=16)
    with caplog.at_level(logging.WARNING):
        feats = enc.encode(["x" * 40, "short"])
    assert "truncated" in caplog.text and "16" in caplog.text
    assert feats.hidden.shape == (2, 16, 32) and bool(feats.mask[0].all())


def test_padding_longest_and_batch_cat():
    enc = get_text_encoder("tiny-t5", generator=G(0), padding="longest")
    feats = enc.encode(["abc", "abcdef"])
    assert feats.hidden.shape == (2, 7, 32)
    fixed = get_text_encoder("tiny-t5", generator=G(0))
    a, b = fixed.encode(["abc"]), fixed.encode([""])
    both = a.batch_cat(b)
    assert both.hidden.shape == (2, 77, 32) and torch.equal(both.hidden[1], b.hidden[0])
    with pytest.raises(EncoderError, match="batch_cat"):
        feats.batch_cat(a)
    with pytest.raises(EncoderError, match="padding"):
        get_text_encoder("tiny-t5", padding="do_not_pad")


def test_prompt_validation():
    enc = get_text_encoder("tiny-t5", generator=G(0))
    with pytest.raises(EncoderError, match="at least one"):
        enc.encode([])
    with pytest.raises(EncoderError, match="list of str"):
        enc.encode([1, 2])


def _tiny_t5_model():
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=32040, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)).eval()


def test_t5_refuses_a_tokenizer_without_vocabulary(tmp_path):
    """transformers 5 returns a 104-entry T5 tokenizer when the vocabulary file is missing; refuse it."""
    from transformers import ByT5Tokenizer

    ByT5Tokenizer().save_pretrained(tmp_path)
    _tiny_t5_model().save_pretrained(tmp_path)
    with pytest.raises(EncoderError, match="entries"):
        load_t5(tmp_path)
    with pytest.raises(EncoderError, match="does not exist"):
        load_t5(tmp_path / "missing" / "t5")


def test_t5_from_local_folder_matches_direct_model(tmp_path):
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -40.0)]
    vocab += [(f"\u2581w{i}", -i / 1000) for i in range(32000)] + [(c, -50.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    tok.save_pretrained(tmp_path)
    model = _tiny_t5_model()
    model.save_pretrained(tmp_path)
    enc = get_text_encoder("t5-base", path=tmp_path, max_length=8)
    feats = enc.encode(["w5 w17 dog", ""])
    ids = tok(["w5 w17 dog"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        ref = model(input_ids=ids).last_hidden_state[0]
    n = ids.shape[1]
    assert bool(feats.mask[0, :n].all()) and not bool(feats.mask[0, n:].any())
    assert torch.allclose(feats.hidden[0, :n], ref, atol=1e-5)


def _tiny_hf_clip_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=77,
                                         hidden_act="quick_gelu")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=G(len(name))))
    return model


def test_clip_text_matches_transformers_and_mmaudio_layout(tmp_path, caplog):
    hf = _tiny_hf_clip_text()
    hf.save_pretrained(tmp_path)
    tok = byte_level_clip_tokenizer()
    enc = get_text_encoder("tiny-clip", path=tmp_path, tokenizer=tok)
    assert (enc.dim, enc.max_length) == (32, 77)
    feats = enc.encode(["Footsteps on gravel", ""])
    ids, lengths = tok(["Footsteps on gravel", ""])
    assert ids[1, :3].tolist() == [512, 513, 0] and lengths[1] == 2  # sot, eot, then pad id 0 (open_clip)
    assert bool((ids[0, lengths[0]:] == 0).all())
    with torch.inference_mode():
        ref = F.normalize(hf(input_ids=ids).last_hidden_state, dim=-1)  # (B, 77, 32), after final LayerNorm
    assert (feats.hidden - ref).abs().max() < 1e-5
    assert torch.allclose(feats.hidden.norm(dim=-1), torch.ones(2, 77), atol=1e-5)  # per-token normalised
    assert feats.mask[1].sum() == 2 and feats.mask[0].sum() == lengths[0]
    with caplog.at_level(logging.WARNING):
        long = enc.encode(["a" * 200])
    assert "truncated" in caplog.text and long.hidden.shape == (1, 77, 32) and bool(long.mask.all())
    long_ids, _ = tok(["a" * 200])
    assert long_ids[0, -1].item() == 513  # truncated sequences still end with eot, as open_clip's tokenizer


def test_clip_text_without_tokenizer_is_a_clear_error(tmp_path):
    hf = _tiny_hf_clip_text()
    hf.save_pretrained(tmp_path)
    try:
        import open_clip  # noqa: F401
    except Exception:
        with pytest.raises(EncoderError, match="vocab.json"):
            get_text_encoder("clip-vit-h-14", path=tmp_path)


def test_clap_from_local_folder(tmp_path):
    from transformers import ByT5Tokenizer, ClapTextConfig, ClapTextModelWithProjection

    cfg = ClapTextConfig(vocab_size=384, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, projection_dim=16, max_position_embeddings=100, pad_token_id=0)
    torch.manual_seed(0)
    model = ClapTextModelWithProjection(cfg).eval()
    model.save_pretrained(tmp_path)
    ByT5Tokenizer().save_pretrained(tmp_path)
    enc = get_text_encoder("clap", path=tmp_path, max_length=20)
    assert enc.dim == 32
    feats = enc.encode(["rain on a tin roof", ""])
    assert feats.hidden.shape == (2, 20, 32) and feats.mask[1].sum() == 1
    tok = ByT5Tokenizer()
    batch = tok(["rain on a tin roof", ""], padding="max_length", max_length=20, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        ref = model(**batch).last_hidden_state
    assert torch.allclose(feats.hidden, ref, atol=1e-5)
    with pytest.raises(EncoderError, match="not CLAP"):
        _tiny_t5_model().save_pretrained(tmp_path / "t5")
        ByT5Tokenizer().save_pretrained(tmp_path / "t5")
        get_text_encoder("clap", path=tmp_path / "t5")


def test_registry_errors_name_the_choices():
    with pytest.raises(EncoderError) as exc:
        get_text_encoder("bert")
    for name in TEXT_ENCODERS:
        assert name in str(exc.value)
