"""HunyuanVideo-Foley loading: family sniffing, clear errors, fp8 weight-only storage and block swap."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kling_foley_core.compat.checkpoints import CheckpointError
from kling_foley_core.hunyuan import (HunyuanFoleyDiT, WrongFamilyError, enable_block_swap, load_dac_vae,
                                      load_hunyuan_dit, quantize_fp8, sniff_checkpoint)
from kling_foley_core.hunyuan import quant
from kling_foley_core.hunyuan.offload import BlockSwap
from kling_foley_core.hunyuan.quant import Fp8Conv1d, Fp8Linear, dequantize_fp8

FIX = Path(__file__).parent / "fixtures"
HVF = FIX / "hunyuan" / "hvf_tiny.safetensors"
DAC = FIX / "hunyuan" / "dac_vae_tiny.safetensors"
needs_fp8 = pytest.mark.skipif(quant.FP8_DTYPE is None, reason="torch without float8")


def _inputs(b=2, n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 16, n, generator=g), torch.randn(b, 8, 40, generator=g), torch.randn(b, 24, 24, generator=g),
            torch.randn(b, 7, 32, generator=g))


def _velocity(model, b=2, n=50):
    x, clip, sync, text = _inputs(b, n)
    with torch.no_grad():
        cond = model.prepare_conditions(clip, sync, text, n)
        return model.predict_flow(x, torch.full((b,), 0.4), cond)


# ------------------------------------------------------------------------------------------------ sniffing
def test_sniff_each_family():
    assert sniff_checkpoint(load_file(str(HVF))) == "hunyuan-dit"
    assert sniff_checkpoint(load_file(str(DAC))) == "hunyuan-dac-vae"
    assert sniff_checkpoint(load_file(str(FIX / "mmaudio" / "mmdit_tiny_v1_16k.safetensors"))) == "mmaudio-mmdit"
    assert sniff_checkpoint(load_file(str(FIX / "mmaudio" / "mel_vae_tiny_16k.safetensors"))) == "mmaudio-vae"
    sync_keys = json.loads((FIX / "mmaudio" / "synchformer_rule.json").read_text())["keys"]
    assert sniff_checkpoint({k: torch.zeros(1) for k in sync_keys}) == "synchformer"
    assert sniff_checkpoint({"module." + k: v for k, v in load_file(str(HVF)).items()}) == "hunyuan-dit"
    assert sniff_checkpoint({"foo.weight": torch.zeros(2)}) == "unknown"


def test_wrong_family_names_what_it_is_and_the_loader(tmp_path):
    mmdit = FIX / "mmaudio" / "mmdit_tiny_v1_16k.safetensors"
    with pytest.raises(WrongFamilyError, match=r"mmdit_tiny_v1_16k.*MM-DiT.*loader"):
        load_hunyuan_dit(mmdit)
    with pytest.raises(WrongFamilyError, match=r"DAC-VAE.*load_dac_vae"):
        load_hunyuan_dit(DAC)
    with pytest.raises(WrongFamilyError, match=r"diffusion transformer.*load_hunyuan_dit"):
        load_dac_vae(HVF)


def test_truncated_checkpoint_lists_missing_keys(tmp_path):
    sd = load_file(str(HVF))
    del sd["triple_blocks.1.audio_mlp.fc2.weight"], sd["final_layer.linear.bias"]
    path = tmp_path / "cut.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*missing keys:.*audio_mlp\.fc2\.weight"):
        load_hunyuan_dit(path)
    raw = HVF.read_bytes()
    broken = tmp_path / "half.safetensors"
    broken.write_bytes(raw[: len(raw) // 2])  # a download cut in half
    with pytest.raises(CheckpointError, match="half.safetensors"):
        load_hunyuan_dit(broken)
    dac = load_file(str(DAC))
    del dac["decoder.model.5.weight_v"]
    with pytest.raises(CheckpointError, match="decoder.model.5"):
        load_dac_vae(dac)


def test_pickled_checkpoint_is_read_safely(tmp_path):
    sd = load_file(str(HVF))
    path = tmp_path / "hunyuanvideo_foley.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in sd.items()}, path)  # released files are bf16 pickles
    model = load_hunyuan_dit(path, precision="fp32")
    ref = load_hunyuan_dit(sd, precision="fp32")
    v, v_ref = _velocity(model), _velocity(ref)
    assert float((v - v_ref).abs().max() / v_ref.abs().max()) < 0.05  # bf16-rounded weights


# ------------------------------------------------------------------------------------------------------ fp8
@needs_fp8
@pytest.mark.parametrize("per", ["row", "tensor"])
def test_fp8_round_trip_error_is_bounded(per):
    w = torch.randn(64, 48) * torch.logspace(-2, 1, 64)[:, None]  # rows of very different scale
    q, scale = quantize_fp8(w, per)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64,)
    back = dequantize_fp8(q, scale, torch.float32)
    # e4m3 keeps 3 mantissa bits: ≤ 2^-4 relative rounding for normal values, plus the subnormal step 2^-9·scale
    bound = 2 ** -4 * w.abs() + 2 ** -9 * scale[:, None] + 1e-12
    assert bool(((back - w).abs() <= bound).all())
    if per == "row":  # per-row scales keep small rows accurate
        rel = (back - w).norm() / w.norm()
        assert rel < 0.04


@needs_fp8
def test_fp8_model_loads_close_to_fp32_and_saves(tmp_path):
    fp32 = load_hunyuan_dit(HVF, precision="fp32")
    fp8 = load_hunyuan_dit(HVF, precision="fp8")
    blk = fp8.single_blocks[0]
    assert isinstance(blk.linear_qkv, Fp8Linear) and isinstance(blk.linear1, Fp8Conv1d) and blk.linear1.channel_last
    assert blk.linear_qkv.weight.dtype == torch.float8_e4m3fn
    assert fp8.audio_embedder.proj.weight.dtype == torch.bfloat16  # embedders stay bf16
    v32, v8 = _velocity(fp32), _velocity(fp8)
    err = float((v8 - v32).abs().max() / v32.abs().max())
    # e4m3 keeps 3 mantissa bits (≈2-3 % per weight); through 4 random-weight blocks plus bf16 activations the
    # output moves by ~10 % of its peak (bf16 alone: ~3 %); per-layer bounds are checked in the round-trip test
    assert 0 < err < 0.2, err
    block_bytes = sum(t.numel() * t.element_size() for t in fp8.triple_blocks.state_dict().values())
    block_bytes32 = sum(t.numel() * t.element_size() for t in fp32.triple_blocks.state_dict().values())
    assert block_bytes < 0.3 * block_bytes32
    # an fp8 safetensors file (our layout) reloads to the same model
    path = tmp_path / "hvf_fp8.safetensors"
    save_file({k: v.contiguous() for k, v in fp8.state_dict().items()}, str(path))
    again = load_hunyuan_dit(path, precision="fp8")
    torch.testing.assert_close(_velocity(again), v8, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="precision='fp8'"):
        load_hunyuan_dit(path, precision="bf16")


@needs_fp8
def test_bare_fp8_community_file_loads_with_unit_scale(tmp_path):
    sd = load_file(str(HVF))
    bare = {k: (v.to(torch.float8_e4m3fn) if k.startswith("single_blocks.") and v.ndim >= 2 else v)
            for k, v in sd.items()}
    path = tmp_path / "bare_fp8.safetensors"
    save_file(bare, str(path))
    model = load_hunyuan_dit(path, precision="fp8")
    lin = model.single_blocks[0].linear_qkv
    assert torch.equal(lin.weight_scale, torch.ones_like(lin.weight_scale))
    torch.testing.assert_close(lin.weight.float(), bare["single_blocks.0.linear_qkv.weight"].float())


def test_fp8_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(quant, "FP8_DTYPE", None)
    with pytest.raises(quant.Fp8UnavailableError, match=r"float8_e4m3fn.*precision='bf16'"):
        load_hunyuan_dit(HVF, precision="fp8")


# ------------------------------------------------------------------------------------------------ block swap
def test_block_swap_cpu_to_cpu_same_output_one_block_at_a_time():
    model = load_hunyuan_dit(HVF, precision="fp32")
    ref = _velocity(model)
    swap = enable_block_swap(model, 3, execution_device="cpu", storage_device="cpu")
    assert len(swap.blocks) == 3 and swap.blocks[-1] is model.single_blocks[-1]
    out = _velocity(model)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert swap.loads == swap.releases == 3 and swap.max_resident == 1 and not swap.resident
    _velocity(model)
    assert swap.loads == 6
    swap.remove()
    _velocity(model)
    assert swap.loads == 6  # hooks gone
    with pytest.raises(ValueError, match="blocks_to_swap=9"):
        enable_block_swap(model, 9, execution_device="cpu")


def test_swapped_block_stays_on_storage_until_used():
    """CPU storage → 'meta' execution: the block is on the CPU before and after, and on meta only inside forward."""
    model = HunyuanFoleyDiT.from_preset("tiny").eval()
    block = model.single_blocks[0]
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    swap = BlockSwap([block], execution_device="meta", storage_device="cpu")
    seen = {}
    block.register_forward_pre_hook(lambda m, a: seen.update(inside={p.device.type for p in m.parameters()}))
    assert {p.device.type for p in block.parameters()} == {"cpu"}
    x = torch.empty(1, 10, 64, device="meta")
    cos = torch.empty(10, 32, device="meta")
    out = block(x, torch.empty(1, 10, 64, device="meta"), (cos, cos))
    assert out.device.type == "meta" and seen["inside"] == {"meta"}
    assert {p.device.type for p in block.parameters()} == {"cpu"}
    for n, p in block.named_parameters():
        assert torch.equal(p, before[n])
    assert swap.loads == 1 and swap.releases == 1
