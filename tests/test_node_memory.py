"""The loaders' memory input: headless through accelerate hooks, inside ComfyUI through its model management."""
import sys
import types

import pytest
import torch

from kling_foley_core.default_model import is_available
from kling_foley_core.offload import KEEP, OFFLOAD, _ON_DEVICE, execution_device, keep_between_uses

shipped = pytest.mark.skipif(not is_available(), reason="foley-tiny weights not shipped")


def _run_default_graph(memory: str):
    from kling_foley_core.generation import FoleyConditions
    from kling_foley_nodes.default_model import KlingFoleyDefaultModelLoader
    from kling_foley_nodes.encode import KlingFoleyTextEncode
    from kling_foley_nodes.sampling import KlingFoleySampler

    model, vae, vocoder, m2s, visual, sync, text = KlingFoleyDefaultModelLoader().load("foley-tiny", memory=memory)
    prompt = KlingFoleyTextEncode().encode(text, "a knock")[0]["prompt"]
    used_first = _ON_DEVICE[0]
    cond = FoleyConditions(duration=1.0, text_f=prompt.hidden, text_mask=prompt.mask)
    latent = KlingFoleySampler().sample(model, cond, seed=1, cfg=1.0,
                                        schedule={"steps": 2, "schedule": "uniform", "shift": 1.0})[0]
    return (model, text), used_first, latent["latents"]


@shipped
def test_offload_after_use_moves_one_model_at_a_time_and_changes_no_output():
    (model, text), first, latents = _run_default_graph(OFFLOAD)
    assert all(hasattr(m, "_hf_hook") for m in (model, text))
    assert first is text and _ON_DEVICE[0] is model  # the sampler's model replaced the text encoder
    (model_k, text_k), _, latents_k = _run_default_graph(KEEP)
    assert not hasattr(model_k, "_hf_hook")
    assert torch.equal(latents, latents_k)


def test_switching_modes_and_a_bad_mode():
    m = torch.nn.Linear(2, 2)
    keep_between_uses(m, OFFLOAD, "cpu")
    assert execution_device(m).type == "cpu" and hasattr(m, "_hf_hook")
    m(torch.zeros(1, 2))
    assert _ON_DEVICE[0] is m
    keep_between_uses(m, KEEP, "cpu")
    assert not hasattr(m, "_hf_hook") and _ON_DEVICE[0] is None
    with pytest.raises(ValueError, match="not a mode"):
        keep_between_uses(m, "sometimes", "cpu")


@pytest.fixture
def fake_comfy(monkeypatch):
    """Stand-ins for the two ComfyUI modules the adapter calls (their real counterparts: comfy.model_patcher,
    comfy.model_management of ComfyUI 0.3.x)."""
    calls = []

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    class LoadedModel:
        def __init__(self, patcher):
            self.model = patcher

        def model_unload(self):
            calls.append(("unload", self.model))
            self.model.model.to(self.model.offload_device)
            return True

    mm = types.ModuleType("comfy.model_management")
    mm.current_loaded_models = []
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda: calls.append(("empty",))

    def load_models_gpu(models, force_full_load=False):
        calls.append(("load", models[0], force_full_load))
        if not any(lm.model is models[0] for lm in mm.current_loaded_models):
            mm.current_loaded_models.insert(0, LoadedModel(models[0]))
    mm.load_models_gpu = load_models_gpu
    mp = types.ModuleType("comfy.model_patcher")
    mp.ModelPatcher = ModelPatcher
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", mp)
    return mm, calls


def test_inside_comfyui_models_load_through_its_model_management(fake_comfy):
    from kling_foley_nodes.memory import place

    mm, calls = fake_comfy
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    place(a, OFFLOAD, "cpu")
    place(b, OFFLOAD, "cpu")
    a(torch.zeros(1, 2))
    assert calls[-1] == ("load", a.comfy_patcher, True) and a.comfy_patcher.model.inner is a
    b(torch.zeros(1, 2))
    assert ("unload", a.comfy_patcher) in calls  # offload after use: a leaves when b loads
    assert [lm.model for lm in mm.current_loaded_models] == [b.comfy_patcher]
    c = torch.nn.Linear(2, 2)
    place(c, KEEP, "cpu")
    c(torch.zeros(1, 2))
    assert [lm.model for lm in mm.current_loaded_models] == [c.comfy_patcher, b.comfy_patcher]  # ComfyUI decides


def test_hunyuan_loader_takes_the_memory_input():
    from kling_foley_nodes.hunyuan import KlingFoleyHunyuanLoader

    assert "memory" in KlingFoleyHunyuanLoader.INPUT_TYPES()["optional"]
    model, codec = KlingFoleyHunyuanLoader().load("tiny (random weights, for testing)",
                                                  "tiny (random weights, for testing)", precision="fp32",
                                                  memory=OFFLOAD)
    assert hasattr(model, "_hf_hook") and hasattr(codec, "_hf_hook")
    model_k, codec_k = KlingFoleyHunyuanLoader().load("tiny (random weights, for testing)",
                                                      "tiny (random weights, for testing)", precision="fp32")
    assert not hasattr(model_k, "_hf_hook")
