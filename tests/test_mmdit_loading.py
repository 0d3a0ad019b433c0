"""MM-DiT loading: save/load round trip, dtype at load, MMAudio conversion, variant detection, clear errors."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kling_foley_core.compat.checkpoints import CheckpointError
from kling_foley_core.compat.convert_mmaudio import (convert_checkpoint, detect_mmaudio_variant, load_mmaudio_mmdit,
                                                     load_mmdit, main)
from kling_foley_core.models.mmdit import KlingFoleyMMDiT
from kling_foley_core.models.mmdit_presets import MMDIT_PRESETS, build_mmdit

FIX = Path(__file__).parent / "fixtures"
V1 = FIX / "mmaudio" / "mmdit_tiny_v1_16k"
V2 = FIX / "mmaudio" / "mmdit_tiny_v2_44k"


def weights(prefix: Path) -> dict[str, torch.Tensor]:
    return load_file(str(prefix) + ".safetensors")


def io(prefix: Path) -> dict[str, torch.Tensor]:
    return load_file(str(prefix) + ".io.safetensors")


def flow(model: KlingFoleyMMDiT, prefix: Path) -> torch.Tensor:
    d = io(prefix)
    with torch.no_grad():
        return model(d["latent"].to(model.dtype), d["t"], d["clip_f"], d["sync_f"], d["text_f"]).float()


# ---------------------------------------------------------------------------------------------------------------
def test_detects_v1_and_v2_from_shapes():
    v1 = detect_mmaudio_variant(weights(V1))
    assert v1.config["proj_style"] == "v1" and v1.config["t_frequency_dim"] == 256
    assert v1.config["t_max_period"] == 10000.0 and v1.config["sample_rate"] == 16000
    assert (v1.config["hidden_dim"], v1.config["num_heads"], v1.config["depth"], v1.config["fused_depth"]) == (64, 2, 4, 2)
    v2 = detect_mmaudio_variant(weights(V2))
    assert v2.config["proj_style"] == "v2" and v2.config["t_frequency_dim"] is None
    assert v2.config["t_max_period"] == 1.0 and v2.config["sample_rate"] == 44100
    assert (v2.config["hidden_dim"], v2.config["num_heads"], v2.config["depth"], v2.config["fused_depth"]) == (96, 3, 3, 1)
    assert v1.name == v2.name == "custom"


@pytest.mark.parametrize("preset", [p for p in MMDIT_PRESETS if p.startswith("mmaudio_")])
def test_released_variants_are_named(preset):
    # shapes only: a meta-device state dict of the released size is enough to detect it
    sd = build_mmdit(preset, device="meta").state_dict()
    assert detect_mmaudio_variant(sd).name == preset[len("mmaudio_"):]


def test_converted_checkpoint_matches_reference_flow():
    model = load_mmaudio_mmdit(weights(V1))
    ref = io(V1)["flow"]
    assert (flow(model, V1) - ref).abs().max() / ref.abs().max() < 1e-4


def test_prefixed_and_derived_keys_and_pth_load(tmp_path):
    sd = weights(V2)
    prefixed = {f"model.{k}": v for k, v in sd.items()}
    prefixed["model.t_embed.freqs"] = torch.zeros(48)  # derived tensors some exports include
    prefixed["model.latent_rot"] = torch.zeros(1, 87, 16, 2, 2)
    save_file(prefixed, str(tmp_path / "export_fp16.safetensors"))
    torch.save({"weights": sd}, tmp_path / "mmaudio_tiny.pth")
    ref = io(V2)["flow"]
    for path in (tmp_path / "export_fp16.safetensors", tmp_path / "mmaudio_tiny.pth"):
        model = load_mmdit(path)
        assert (flow(model, V2) - ref).abs().max() / ref.abs().max() < 1e-4, path.name


def test_partial_checkpoint_names_missing_keys_and_variant():
    sd = weights(V1)
    del sd["fused_blocks.1.ffn.w2.weight"]
    with pytest.raises(CheckpointError, match=r"detected MMAudio custom \(v1.*missing keys: fused_blocks\.1\.ffn\.w2\.weight"):
        load_mmaudio_mmdit(sd)


def test_extra_and_misshaped_keys_are_named():
    sd = weights(V1)
    sd["joint_blocks.0.bogus.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected keys: joint_blocks\.0\.bogus\.weight"):
        load_mmaudio_mmdit(sd)
    sd = weights(V1)
    sd["sync_input_proj.2.w1.weight"] = torch.zeros(128, 64, 3)
    with pytest.raises(CheckpointError, match=r"shape mismatches: sync_input_proj\.2\.w1\.weight"):
        load_mmaudio_mmdit(sd)


@pytest.mark.parametrize("fixture,what", [("mmaudio/mel_vae_tiny_16k", "mel VAE"),
                                          ("hunyuan/hvf_tiny", "HunyuanVideo-Foley"),
                                          ("hunyuan/dac_vae_tiny", "DAC")])
def test_foreign_checkpoints_say_what_they_look_like(fixture, what):
    with pytest.raises(CheckpointError, match=f"not an MMAudio MM-DiT.*looks like.*{what}"):
        load_mmaudio_mmdit(load_file(str(FIX / fixture) + ".safetensors"))


def test_library_checkpoint_given_to_mmaudio_converter_is_recognised():
    sd = build_mmdit("tiny").state_dict()
    with pytest.raises(CheckpointError, match="Kling-Foley library MM-DiT"):
        load_mmaudio_mmdit(sd)


# ---------------------------------------------------------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path):
    model = build_mmdit("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.1)
    model.save_pretrained(tmp_path / "m")
    cond_kw = dict(duration=1.0, batch_size=1)
    x = torch.randn(1, model.sequence_lengths(1.0).latent, model.config.latent_dim)
    with torch.no_grad():
        ref = model.eval().predict_flow(x, 0.3, model.prepare_conditions(**cond_kw))
        for loaded in (KlingFoleyMMDiT.from_pretrained(tmp_path / "m"), load_mmdit(tmp_path / "m")):
            public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
            assert public(loaded.config) == public(model.config)
            out = loaded.predict_flow(x, 0.3, loaded.prepare_conditions(**cond_kw))
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("name,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_dtype_is_chosen_at_load(tmp_path, name, dtype):
    model = load_mmaudio_mmdit(weights(V2), dtype=name)
    assert {p.dtype for p in model.parameters()} == {dtype}
    if dtype != torch.float16:  # the fixture's random weights reach 3e6 inside the blocks: beyond fp16's range
        ref = io(V2)["flow"]
        tol = {torch.float32: 1e-4, torch.bfloat16: 6e-2}[dtype]
        assert (flow(model, V2) - ref).abs().max() / ref.abs().max() < tol
    # a library folder: well-scaled weights, so every dtype must track fp32
    base = build_mmdit("tiny")
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(std=0.05)
    base.save_pretrained(tmp_path / "m")
    x = torch.randn(1, base.sequence_lengths(1.0).latent, base.config.latent_dim)
    with torch.no_grad():
        ref = base.eval().predict_flow(x, 0.3, base.prepare_conditions(duration=1.0, batch_size=1))
        for loaded in (load_mmdit(tmp_path / "m", dtype=name),
                       KlingFoleyMMDiT.from_pretrained(tmp_path / "m", torch_dtype=dtype)):
            assert loaded.dtype == dtype
            out = loaded.predict_flow(x, 0.3, loaded.prepare_conditions(duration=1.0, batch_size=1))
            assert out.dtype == torch.float32
            assert (out - ref).abs().max() / ref.abs().max() < {torch.float32: 1e-6, torch.float16: 1e-2,
                                                                  torch.bfloat16: 5e-2}[dtype]


def test_loaded_model_has_no_meta_tensors_and_runs_on_default_dtype_inputs():
    model = load_mmaudio_mmdit(weights(V1), dtype="fp16")
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    d = io(V1)
    with torch.no_grad():  # float32 latents in, float32 velocity out, fp16 weights inside
        v = model(d["latent"], d["t"], d["clip_f"], d["sync_f"], d["text_f"])
    assert v.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
def test_converter_cli_writes_a_loadable_folder_and_never_overwrites(tmp_path, capsys):
    src = tmp_path / "mmaudio_tiny.safetensors"
    save_file(weights(V1), str(src))
    out = tmp_path / "converted"
    assert main([str(src), str(out), "--dtype", "fp16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    stored = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    assert load_mmdit(out).dtype == torch.float16  # None = as stored (diffusers' from_pretrained upcasts)
    assert KlingFoleyMMDiT.from_pretrained(out, torch_dtype=torch.float16).config.proj_style == "v1"
    stamp = (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert main([str(src), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert main([str(tmp_path / "nope.pth"), str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    convert_checkpoint(src, out, dtype="fp32", overwrite=True)
    assert KlingFoleyMMDiT.from_pretrained(out).dtype == torch.float32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".converted")]  # no temp folder left
