"""Semantic visual encoders: native CLIP towers (open_clip key layout), SigLIP(2), presets, preprocessing."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from kling_foley_core.compat.checkpoints import init_empty
from kling_foley_core.encoders import EncoderError, VISUAL_ENCODERS, get_visual_encoder
from kling_foley_core.encoders.base import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, random_init_
from kling_foley_core.encoders.clip_vit import CLIP_PRESETS, ClipVisionTower
from kling_foley_core.encoders.visual import ClipVisualEncoder, SiglipVisualEncoder

G = lambda s: torch.Generator().manual_seed(s)  # noqa: E731


def tiny_hf_clip():
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=56, patch_size=14, hidden_act="quick_gelu"),
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu"),
        projection_dim=32)
    torch.manual_seed(0)  # transformers' own init; the comparison does not depend on the values
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # make LayerNorm affine parameters non-trivial so a mis-mapped norm is caught
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=G(len(name))))
    return model


def test_native_tower_matches_transformers_clip_checkpoint(tmp_path):
    """An HF CLIPModel folder loads (keys converted to open_clip's) and gives the same image embeddings."""
    hf = tiny_hf_clip()
    hf.save_pretrained(tmp_path)
    enc = get_visual_encoder("tiny-clip", path=tmp_path)
    assert isinstance(enc, ClipVisualEncoder) and enc.dim == 32
    pixels = torch.randn(3, 3, 56, 56, generator=G(1))
    with torch.inference_mode():
        ref = F.normalize(hf.visual_projection(hf.vision_model(pixel_values=pixels).pooler_output), dim=-1)
        ours = enc.encode(pixels, preprocessed=True)[0]
    assert (ours - ref).abs().max() < 1e-5


def test_open_clip_folder_round_trip(tmp_path):
    """``local-dir:`` folder with open_clip_config.json + open_clip_model.safetensors (``visual.*`` keys)."""
    cfg = CLIP_PRESETS["tiny-clip"].vision
    src = random_init_(init_empty(ClipVisionTower, **cfg).to_empty(device="cpu"), G(2)).eval()
    sd = {f"visual.{k}": v for k, v in src.state_dict().items()}
    sd["logit_scale"] = torch.tensor(4.6)
    sd["token_embedding.weight"] = torch.zeros(10, 4)  # text half: ignored by the vision loader
    save_file(sd, str(tmp_path / "open_clip_model.safetensors"))
    model_cfg = {"embed_dim": 32, "quick_gelu": True,
                 "vision_cfg": {"image_size": 56, "layers": 2, "width": 64, "head_width": 16, "mlp_ratio": 4.0,
                                "patch_size": 14}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    enc = get_visual_encoder("tiny-clip", path=f"local-dir:{tmp_path}")
    assert enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.25, 0.25, 0.25)
    pixels = torch.randn(2, 3, 56, 56, generator=G(3))
    with torch.inference_mode():
        assert torch.allclose(enc.tower(pixels), src(pixels), atol=1e-6)
    # a single file with bare (un-prefixed) keys loads too
    save_file(src.state_dict(), str(tmp_path / "bare.safetensors"))
    enc2 = get_visual_encoder("tiny-clip", path=tmp_path / "bare.safetensors")
    with torch.inference_mode():
        assert torch.allclose(enc2.tower(pixels), src(pixels), atol=1e-6)


def test_state_dict_keys_follow_open_clip():
    tower = init_empty(ClipVisionTower, **CLIP_PRESETS["tiny-clip"].vision)
    keys = set(tower.state_dict())
    for k in ("class_embedding", "positional_embedding", "proj", "conv1.weight", "ln_pre.weight", "ln_post.bias",
              "transformer.resblocks.1.ln_1.weight", "transformer.resblocks.1.attn.in_proj_weight",
              "transformer.resblocks.1.attn.in_proj_bias", "transformer.resblocks.1.attn.out_proj.weight",
              "transformer.resblocks.1.ln_2.bias", "transformer.resblocks.1.mlp.c_fc.weight",
              "transformer.resblocks.1.mlp.c_proj.bias"):
        assert k in keys, k
    assert "conv1.bias" not in keys


def test_presets_have_the_published_sizes():
    big = init_empty(ClipVisionTower, **CLIP_PRESETS["metaclip-vit-bigg-14-quickgelu"].vision)
    n = sum(p.numel() for p in big.parameters())
    assert 1.83e9 < n < 1.85e9  # open_clip ViT-bigG-14 vision tower: 1.84 B
    assert big.positional_embedding.shape == (257, 1664) and big.proj.shape == (1664, 1280)
    assert big.transformer.resblocks[0].mlp.c_fc.weight.shape == (8192, 1664)
    assert big.transformer.resblocks[0].attn.heads == 16 and big.config.quick_gelu
    h = init_empty(ClipVisionTower, **CLIP_PRESETS["dfn5b-clip-vit-h-14-384"].vision)
    assert h.positional_embedding.shape == (730, 1280) and h.proj.shape == (1280, 1024)  # 27x27 grid + cls
    assert CLIP_PRESETS["dfn5b-clip-vit-h-14-384"].input_size == 384  # MMAudio's frame size; conv floors to 27


def test_grid_mismatch_is_a_clear_error():
    enc = get_visual_encoder("tiny-clip", generator=G(0))
    with pytest.raises(EncoderError, match="patch grid"):
        enc.tower(torch.zeros(1, 3, 70, 70))
    # 56..69 px give the same 4x4 grid (the stride-14 conv floors), as DFN5B's 384 px -> 27x27
    assert enc.tower(torch.zeros(1, 3, 69, 69)).shape == (1, 32)


def test_preprocessing_constants_pinned():
    meta = CLIP_PRESETS["metaclip-vit-bigg-14-quickgelu"]
    assert meta.mean == OPENAI_CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert meta.std == OPENAI_CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    assert (meta.input_size, meta.resize_mode) == (224, "shortest")
    dfn = CLIP_PRESETS["dfn5b-clip-vit-h-14-384"]
    assert (dfn.input_size, dfn.resize_mode, dfn.mean, dfn.std) == (384, "squash", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert (SiglipVisualEncoder.mean, SiglipVisualEncoder.std, SiglipVisualEncoder.resize_mode) == \
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash")

    enc = get_visual_encoder("tiny-clip", generator=G(0))
    assert enc.fps == 8.0
    frames = torch.full((4, 3, 90, 160), 200, dtype=torch.uint8)
    px = enc.preprocess(frames)
    assert px.shape == (4, 3, 56, 56)
    want = (200 / 255 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert torch.allclose(px[0, :, 10, 10], want, atol=1e-4)
    # shortest-side resize + centre crop keeps the middle: a bright centre column band survives, the edges do not
    img = torch.zeros(1, 3, 100, 300)
    img[..., 100:200] = 1.0
    out = enc.preprocess(img)
    assert out[0, 0].min() > 1.5  # the whole crop lies inside the bright band
    assert torch.allclose(enc.preprocess(img / 1.0), enc.preprocess((img * 255).to(torch.uint8)), atol=1e-5)


def test_encode_shapes_batching_and_normalisation():
    enc = get_visual_encoder("tiny-clip", generator=G(0))
    frames = torch.randint(0, 256, (2, 5, 3, 64, 80), dtype=torch.uint8, generator=G(4))
    a = enc.encode(frames, batch_size=3)
    b = enc.encode(frames, batch_size=10)
    assert a.shape == (2, 5, 32) and torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    assert enc.encode(frames[0]).shape == (1, 5, 32)
    with pytest.raises(EncoderError, match="0 frames"):
        enc.encode(frames[0, :0])
    with pytest.raises(EncoderError, match="batch_size"):
        enc.encode(frames, batch_size=0)


def test_siglip_from_full_siglip_folder_matches_transformers(tmp_path):
    from transformers import SiglipConfig, SiglipModel

    cfg = SiglipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=16),
        text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=16))
    torch.manual_seed(0)
    full = SiglipModel(cfg).eval()
    full.save_pretrained(tmp_path)
    enc = get_visual_encoder("siglip2", path=tmp_path)
    assert isinstance(enc, SiglipVisualEncoder) and (enc.dim, enc.image_size, enc.fps) == (32, 32, 8.0)
    frames = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8, generator=G(5))
    px = enc.preprocess(frames)
    with torch.inference_mode():
        ref = full.vision_model(pixel_values=px).pooler_output
        assert torch.allclose(enc.encode(frames)[0], ref, atol=1e-5)


def test_siglip2_naflex_patchify_matches_the_image_processor():
    import numpy as np
    from PIL import Image
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    model = Siglip2VisionModel(Siglip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=4, num_patches=4, patch_size=16)).eval()
    enc = SiglipVisualEncoder(model)
    assert enc.image_size == 32
    img = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=G(6))
    ref_in = Siglip2ImageProcessor(max_num_patches=4, patch_size=16)(
        images=[Image.fromarray(img.numpy().astype(np.uint8))], return_tensors="pt")
    with torch.inference_mode():
        ref = model(**ref_in).pooler_output
        ours = enc.encode(img.permute(2, 0, 1)[None])[0]
    assert torch.allclose(ours, ref, atol=1e-5)


def test_registry_errors_name_the_choices(tmp_path):
    with pytest.raises(EncoderError) as exc:
        get_visual_encoder("resnet50")
    for name in VISUAL_ENCODERS:
        assert name in str(exc.value)
    with pytest.raises(EncoderError, match="does not exist"):
        get_visual_encoder("metaclip", path=tmp_path / "missing.safetensors")
    with pytest.raises(EncoderError, match="does not exist"):
        get_visual_encoder("siglip2", path=tmp_path / "missing")
    try:
        import open_clip  # noqa: F401
    except Exception:
        with pytest.raises(EncoderError, match="path="):
            get_visual_encoder("metaclip-vit-bigg-14-quickgelu")
        with pytest.raises(EncoderError, match="open_clip"):
            get_visual_encoder("dfn5b", path="hf-hub:apple/DFN5B-CLIP-ViT-H-14-384")


def test_cross_check_against_open_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    (tmp_path / "Tiny-ViT-quickgelu.json").write_text(json.dumps({
        "embed_dim": 32, "quick_gelu": True,
        "vision_cfg": {"image_size": 56, "layers": 2, "width": 64, "head_width": 16, "mlp_ratio": 4.0, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}))
    open_clip.add_model_config(str(tmp_path / "Tiny-ViT-quickgelu.json"))
    ref = open_clip.create_model("Tiny-ViT-quickgelu", pretrained=None).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "tiny.safetensors"))
    enc = get_visual_encoder("tiny-clip", path=tmp_path / "tiny.safetensors")
    pixels = torch.randn(2, 3, 56, 56, generator=G(7))
    with torch.inference_mode():
        assert torch.allclose(enc.encode(pixels, preprocessed=True)[0], ref.encode_image(pixels, normalize=True),
                              atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip"])
@pytest.mark.parametrize("hw", ["native", (40, 90)])
def test_uint8_and_float_frames_give_the_same_features(name, hw):
    """The loader's uint8 frames (fused normalisation) and ComfyUI-style float 0..1 frames of the same pixels
    give the same features; at the encoder's own size (the loader's case) and when a resize is needed."""
    enc = get_visual_encoder(name, generator=G(1))
    h, w = (enc.image_size, enc.image_size) if hw == "native" else hw
    u8 = torch.randint(0, 256, (2, 5, 3, h, w), dtype=torch.uint8, generator=G(2))
    f = u8.float() / 255.0
    keep = f.clone()
    a, b = enc.encode(u8, batch_size=3), enc.encode(f, batch_size=4)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert torch.equal(f, keep)  # the caller's float frames are never modified in place
    assert torch.allclose(enc.preprocess(u8), enc.preprocess(f), atol=1e-5, rtol=0)


def test_fused_uint8_normalisation_matches_the_formula():
    from kling_foley_core.encoders.base import normalize_frames, preprocess_frames

    u8 = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    want = (u8.double() / 255.0 - mean.double()) / std.double()
    got = normalize_frames(u8, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert got.dtype == torch.float32 and float((got.double() - want).abs().max()) < 1e-6
    # a float input takes the unchanged float path
    assert torch.allclose(normalize_frames(u8.float() / 255.0, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), got, atol=1e-6)
    # grey uint8 frames become three differently normalised channels; a wider frame is centre-cropped as a view
    grey = torch.full((2, 1, 16, 20), 77, dtype=torch.uint8)
    px = preprocess_frames(grey, size=16, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    assert px.shape == (2, 3, 16, 16)
    assert torch.allclose(px[0, :, 0, 0], ((77 / 255.0 - mean) / std).view(3), atol=1e-6)
    wide = torch.randint(0, 256, (1, 3, 16, 20), dtype=torch.uint8, generator=G(3))
    assert torch.allclose(preprocess_frames(wide, size=16, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD),
                          preprocess_frames(wide.float() / 255, size=16, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD),
                          atol=1e-6)
    with pytest.raises(EncoderError, match="int64"):
        preprocess_frames(wide.long(), size=16, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
