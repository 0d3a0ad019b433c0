"""Offload on the CPU: .to(), model offload and sequential offload give the plain run's audio, and each model's
weights come to the execution device only while it is used. (Peak VRAM needs a GPU: bench/, not here.)"""
import pytest
import torch

from kling_foley_core.default_model import is_available
from kling_foley_core.pipeline import KlingFoleyPipeline
from kling_foley_core.presets import tiny_pipeline

FRAMES = torch.rand(30, 48, 64, 3, generator=torch.Generator().manual_seed(0))
CALL = dict(frames=FRAMES, fps=25, prompt="a knock", num_inference_steps=2, seed=2)


def _default():
    return KlingFoleyPipeline.from_pretrained("foley-tiny")


# the MMAudio-family tiny stack (MMAudio MM-DiT, MMAudio Mel-VAE, T5) and the shipped Kling-Foley default
FAMILIES = [pytest.param(tiny_pipeline, id="mmaudio-tiny"),
            pytest.param(_default, id="foley-tiny",
                         marks=pytest.mark.skipif(not is_available(), reason="foley-tiny weights not shipped"))]


def _fresh(make):
    pipe = make()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("make", FAMILIES)
def test_to_moves_every_component(make):
    pipe = _fresh(make)
    assert pipe.to("cpu") is pipe  # was AttributeError: 'SynchformerEncoder' object has no attribute 'dtype'
    assert pipe.device.type == "cpu" and pipe.dtype == torch.float32
    pipe.to(torch.float64)
    assert all(p.dtype == torch.float64 for m in pipe.components.values() for p in m.parameters())


def _record_onloads(pipe) -> list[str]:
    """Names of the components whose offload hook moves them to the device, in order."""
    order = []
    for name, module in pipe.components.items():
        hook = getattr(module, "_hf_hook", None)
        if hook is not None:
            def pre_forward(mod, *args, _name=name, _orig=hook.pre_forward, **kwargs):
                if not order or order[-1] != _name:
                    order.append(_name)
                return _orig(mod, *args, **kwargs)
            hook.pre_forward = pre_forward
    return order


@pytest.mark.parametrize("make", FAMILIES)
def test_model_cpu_offload_gives_the_same_audio_and_moves_each_model_when_used(make):
    plain = _fresh(make)
    ref = plain(**CALL).waveform
    pipe = _fresh(make)
    pipe.mono2stereo.load_state_dict(plain.mono2stereo.state_dict())  # the tiny stack's Mono2Stereo is unseeded
    pipe.enable_model_cpu_offload(device="cpu")
    weightless = not any(True for _ in pipe.vocoder.parameters())
    assert ("vocoder" in pipe.model_cpu_offload_seq) != weightless  # Griffin-Lim is placed, not hooked
    order = _record_onloads(pipe)
    out = pipe(**CALL).waveform
    assert torch.equal(out, ref)
    # encoders are used through encode(), the VAE through decode(): their hooks fire all the same, in use order
    assert order == ["visual_encoder", "sync_encoder", "text_encoder", "transformer", "vae", "mono2stereo",
                     *([] if weightless else ["vocoder"])]


@pytest.mark.parametrize("make", FAMILIES)
def test_sequential_cpu_offload_streams_weights_and_gives_the_same_audio(make):
    plain = _fresh(make)
    ref = plain(**CALL).waveform
    pipe = _fresh(make)
    pipe.mono2stereo.load_state_dict(plain.mono2stereo.state_dict())
    pipe.enable_sequential_cpu_offload(device="cpu")
    weights = [p for name in pipe._offload_order if name not in pipe._exclude_from_cpu_offload
               for p in pipe.components[name].parameters()]
    assert {p.device.type for p in weights} == {"meta"}  # nothing resident before the call
    seen = []
    layer = next(m for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear))
    inner = layer._old_forward  # what accelerate's hook calls once it has loaded the weights

    def spy(*args, **kwargs):
        seen.append(layer.weight.device.type)
        return inner(*args, **kwargs)
    layer._old_forward = spy
    out = pipe(**CALL).waveform
    assert torch.equal(out, ref)
    assert seen and set(seen) == {"cpu"}  # materialised on the execution device while it ran
    assert {p.device.type for p in weights} == {"meta"}  # and released after


def test_sequential_offload_without_an_accelerator_says_so():
    pipe = _fresh(tiny_pipeline)
    if torch.cuda.is_available():
        pytest.skip("an accelerator is present")
    with pytest.raises(RuntimeError, match="needs an accelerator"):
        pipe.enable_sequential_cpu_offload()


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_hunyuan_dit_and_dac_vae_under_accelerate_offload_give_the_same_audio(mode):
    """HunyuanVideo-Foley runs through generate_latents and the DAC-VAE's decode (no pipeline class): the same
    hooks that enable_*_cpu_offload attach, on a CPU execution device."""
    from accelerate import cpu_offload, cpu_offload_with_hook

    from kling_foley_core.generation import FoleyConditions, SamplerSettings, generate_latents
    from kling_foley_core.hunyuan.dac_vae import DacVae
    from kling_foley_core.hunyuan.dit import HunyuanFoleyDiT
    from kling_foley_nodes.hunyuan import tiny_dac_config

    def build():
        torch.manual_seed(0)
        dit = HunyuanFoleyDiT.from_preset("tiny", clip_dim=32, sync_feat_dim=32, condition_dim=32).eval()
        with torch.no_grad():  # the released init zeroes adaLN/final layers; randomise so every path matters
            for p in dit.parameters():
                p.normal_(0, 0.2)
        return dit.requires_grad_(False), DacVae(**tiny_dac_config()).eval().requires_grad_(False)

    g = torch.Generator().manual_seed(1)
    cond = FoleyConditions(duration=1.0, clip_f=torch.randn(1, 8, 32, generator=g),
                           sync_f=torch.randn(1, 24, 32, generator=g), text_f=torch.randn(1, 5, 32, generator=g),
                           empty_text_f=torch.randn(1, 5, 32, generator=g))
    settings = SamplerSettings(steps=2, cfg=4.5)

    def run(dit, vae):
        return vae.decode(generate_latents(dit, cond, settings, seed=3))

    ref = run(*build())
    dit, vae = build()
    if mode == "model":
        _, first = cpu_offload_with_hook(dit, "cpu")
        cpu_offload_with_hook(vae, "cpu", prev_module_hook=first)
    else:
        for m in (dit, vae):
            cpu_offload(m, torch.device("cpu"), offload_buffers=len(m._parameters) > 0)
        assert {p.device.type for p in dit.parameters()} == {"meta"}
    assert torch.equal(run(dit, vae), ref)
