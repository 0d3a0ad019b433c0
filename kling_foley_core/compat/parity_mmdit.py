"""Parity handler for MMAudio MM-DiT fixtures (``networks.MMAudio``).

The reference weights go through the library's converter (:func:`load_mmaudio_mmdit`, which also detects the
variant from the shapes), the detected architecture is checked against the fixture's constructor config, and
every output is recomputed with the library's classes and its sampler registry:

* ``flow``        — ``model(latent, t, clip_f, sync_f, text_f)`` (prepare + predict in one call);
* ``flow_uncond`` — the velocity with the learned empty conditions;
* ``flow_cfg``    — the CFG velocity ``cfg·v(cond) + (1 − cfg)·v(uncond)`` at ``t = cfg_time_for_flow_cfg``;
* ``sample_normalized`` — Euler with CFG from ``x0`` over ``euler_steps`` uniform steps;
* ``sample_unnormalized`` — the same mapped back to VAE latent space.
"""
from __future__ import annotations

import torch

from ..sampling import CFGDenoiser, make_schedule, sample
from .convert_mmaudio import detect_mmaudio_variant, load_mmaudio_mmdit
from .parity import Fixture, ParityError

# MMAudio constructor argument → library config field (only the architecture-defining ones)
_SPEC_TO_CONFIG = {"latent_dim": "latent_dim", "clip_dim": "clip_dim", "sync_dim": "sync_dim", "text_dim": "text_dim",
                   "hidden_dim": "hidden_dim", "depth": "depth", "fused_depth": "fused_depth",
                   "num_heads": "num_heads", "text_seq_len": "text_seq_len"}


def _check_variant(fixture: Fixture) -> None:
    spec = fixture.spec["config"]
    variant = detect_mmaudio_variant(fixture.weights, source=fixture.name)
    wrong = {k: (spec[k], variant.config[f]) for k, f in _SPEC_TO_CONFIG.items()
             if k in spec and spec[k] != variant.config[f]}
    if bool(spec.get("v2", False)) != (variant.config["proj_style"] == "v2"):
        wrong["v2"] = (spec.get("v2"), variant.config["proj_style"])
    if wrong:
        raise ParityError(f"parity: {fixture.name}: converter detected a different architecture: "
                          + ", ".join(f"{k} spec={a} detected={b}" for k, (a, b) in wrong.items()))


@torch.no_grad()
def run(fixture: Fixture) -> dict[str, torch.Tensor]:
    if fixture.weights is None:
        raise ParityError(f"parity: {fixture.name}: MM-DiT fixtures need their weights file")
    _check_variant(fixture)
    model = load_mmaudio_mmdit(dict(fixture.weights), dtype=torch.float32)
    io, spec = fixture.io, fixture.spec
    latent, t = io["latent"], io["t"]
    batch, n_latent = latent.shape[:2]

    cond = model.prepare_conditions(io["clip_f"], io["sync_f"], io["text_f"], latent_seq_len=n_latent)
    uncond = model.get_empty_conditions(batch, like=cond)
    cfg = float(spec["cfg_strength"])
    guided = CFGDenoiser(model, cond, uncond, cfg, batched=True)

    out = {
        "flow": model(latent, t, io["clip_f"], io["sync_f"], io["text_f"]),
        "flow_uncond": model.predict_flow(latent, t, uncond),
        "flow_cfg": guided(latent, torch.tensor(float(spec["cfg_time_for_flow_cfg"]))),
    }
    timesteps = make_schedule("uniform", int(spec["euler_steps"]))
    x1 = sample("euler", guided, io["x0"], timesteps)
    out["sample_normalized"] = x1
    out["sample_unnormalized"] = model.unnormalize(x1)
    return out
