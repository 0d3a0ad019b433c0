"""Parity handler for the HunyuanVideo-Foley fixtures (see ``kling_foley_core.compat.parity``).

* ``hifi_foley.HunyuanVideoFoley`` (hvf_tiny): loads the reference-key weights through :mod:`.loading`,
  recomputes the native velocity for (x, t) with the given features and with the learned empty features, and
  the full CFG sampling run. Sampling goes through the library's sampler registry (``sample("euler", …)`` on
  ``make_schedule("uniform", steps)``) with :class:`CFGDenoiser` and the model's ``predict_flow`` time mapping;
  it must land on the reference FlowMatchDiscreteScheduler(reverse=True) result.
* ``models/dac_vae`` (dac_vae_tiny): folds the weight norm, recomputes the posterior and the decoding of z.
"""
from __future__ import annotations

import torch

from ..sampling import CFGDenoiser, make_schedule, sample
from .dit import HunyuanFoleyDiT
from .loading import load_dac_vae, load_hunyuan_dit


def _run_dit(fixture) -> dict[str, torch.Tensor]:
    spec, io = fixture.spec, fixture.io
    config = HunyuanFoleyDiT.config_from_reference(spec["config"])
    model = load_hunyuan_dit(fixture.weights, precision="fp32", config=config)
    x, t = io["x"], io["t"]
    clip_feat, sync_feat, text, uncond_text = io["clip_feat"], io["sync_feat"], io["cond"], io["uncond"]
    b, _, n = x.shape
    out = {}
    with torch.inference_mode():
        cond = model.prepare_conditions(clip_feat, sync_feat, text, n)
        uncond = model.get_empty_conditions(uncond_text, batch_size=b, clip_len=clip_feat.shape[1],
                                            sync_len=sync_feat.shape[1], latent_len=n)
        out["velocity"] = model.forward_native(x, t, cond)
        out["velocity_uncond"] = model.forward_native(x, t, uncond)

        steps = int(spec["steps"])
        timesteps = make_schedule("uniform", steps)
        # the library grid, mapped to native time, is the reference scheduler's grid
        expected = torch.tensor(spec["timesteps"], dtype=torch.float32)
        native = HunyuanFoleyDiT.to_native_time(timesteps[:-1])
        if not torch.allclose(native, expected, rtol=0, atol=1e-3):
            raise AssertionError(f"time mapping gives {native.tolist()}, reference used {expected.tolist()}")
        denoiser = CFGDenoiser(model, cond, uncond, cfg_strength=float(spec["guidance_scale"]))
        out["sample"] = sample("euler", denoiser, io["noise"].clone(), timesteps)
    return out


def _run_dac(fixture) -> dict[str, torch.Tensor]:
    model = load_dac_vae(fixture.weights, dtype="fp32", sample_rate=int(fixture.spec["config"]["sample_rate"]))
    io = fixture.io
    with torch.inference_mode():
        posterior = model.encode(io["audio"])
        decoded = model.decode(io["z"])
    return {"posterior_mean": posterior.mean, "posterior_std": posterior.std, "decoded": decoded}


def run(fixture) -> dict[str, torch.Tensor]:
    reference = fixture.spec.get("reference", "")
    if "hifi_foley.HunyuanVideoFoley" in reference:
        return _run_dit(fixture)
    if "models/dac_vae" in reference:
        return _run_dac(fixture)
    raise ValueError(f"hunyuan parity: no handler for reference '{reference}'")
