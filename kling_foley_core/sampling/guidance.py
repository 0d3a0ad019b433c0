"""Classifier-free guidance as a velocity function: the denoiser owns guidance, samplers never do."""
from __future__ import annotations

from typing import Any, Protocol

import torch

from .flow_matching import data_estimate


class FlowModel(Protocol):
    def predict_flow(self, x: torch.Tensor, t: torch.Tensor, conditions: Any) -> torch.Tensor: ...


class CFGDenoiser:
    """``v = cfg·v(cond) + (1 − cfg)·v(uncond)``; plain ``v(cond)`` when ``cfg < 1`` or there is no uncond.

    ``cond``/``uncond`` are the model's prepared-conditions objects (computed once, reused every step).
    With ``batched=True`` cond and uncond run in one forward of batch 2B (``cond.batch_cat(uncond)`` is built
    once); with ``batched=False`` they run as two calls (lower peak memory).

    ``rescale`` φ (diffusers' ``guidance_rescale``; Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
    Steps are Flawed", §3.4) pulls the guided velocity's spread back towards the conditional one's, per sample:
    ``v = φ·v_cfg·std(v_cond)/std(v_cfg) + (1 − φ)·v_cfg``. Strong guidance over-saturates (for audio: hits louder
    with longer tails than the recordings); 0 (default) is plain CFG.

    ``apg_eta`` η (adaptive projected guidance; Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High
    Guidance Scales in Diffusion Models"; ComfyUI's *APG* node and diffusers' ``AdaptiveProjectedGuidance`` call it
    ``eta``) splits the guidance direction ``v(cond) − v(uncond)`` into its part parallel to the conditional data
    estimate ``x̂₁ = x + (1 − t)·v(cond)`` (per sample) and the rest, and keeps η of the parallel part:
    ``v = v(cond) + (cfg − 1)·(Δ⊥ + η·Δ∥)``. The parallel part scales what is already there: for audio, the level
    of every sound, so guidance at 4.5 makes hits louder and longer than the recordings; η < 1 keeps guidance's
    effect on *what* and *when* and little of the level. 1 (default) is plain CFG.
    """

    def __init__(self, model: FlowModel, cond: Any, uncond: Any = None, cfg_strength: float = 4.5,
                 batched: bool = True, rescale: float = 0.0, apg_eta: float = 1.0):
        if cfg_strength < 0:
            raise ValueError(f"cfg={cfg_strength!r} must be ≥ 0 (1 = no guidance, the papers use 4.5)")
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance_rescale={rescale!r} must be in [0, 1] (0 = plain CFG, 0.7 = Lin et al.)")
        if not 0.0 <= apg_eta <= 1.0:
            raise ValueError(f"apg_eta={apg_eta!r} must be in [0, 1] (1 = plain CFG, 0 = no level change from "
                             f"guidance)")
        self.rescale, self.apg_eta = float(rescale), float(apg_eta)
        self.model, self.cond, self.uncond = model, cond, uncond
        self.cfg = float(cfg_strength)
        self.batched = batched
        self.guided = uncond is not None and self.cfg > 1.0  # cfg ≤ 1: guidance skipped (cfg = 1 is v(cond))
        self._joint = cond.batch_cat(uncond) if self.guided and batched else None

    def _t(self, t: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=like.device, dtype=like.dtype)
        return t.reshape(-1).expand(batch) if t.numel() == 1 else t

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not self.guided:
            return self.model.predict_flow(x, self._t(t, b, x), self.cond)
        if self.batched:
            v = self.model.predict_flow(torch.cat([x, x], 0), self._t(t, 2 * b, x), self._joint)
            v_cond, v_uncond = v[:b], v[b:]
        else:
            v_cond = self.model.predict_flow(x, self._t(t, b, x), self.cond)
            v_uncond = self.model.predict_flow(x, self._t(t, b, x), self.uncond)
        if self.apg_eta < 1.0:
            v = v_cond + (self.cfg - 1.0) * self._projected(x, t, v_cond, v_cond - v_uncond)
        else:
            v = self.cfg * v_cond + (1.0 - self.cfg) * v_uncond
        if self.rescale > 0:
            dims = tuple(range(1, v.ndim))
            ratio = v_cond.std(dim=dims, keepdim=True) / v.std(dim=dims, keepdim=True).clamp_min(1e-8)
            v = self.rescale * (v * ratio) + (1.0 - self.rescale) * v
        return v

    def _projected(self, x: torch.Tensor, t: torch.Tensor, v_cond: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``Δ⊥ + η·Δ∥``: the guidance direction with η of its part along the conditional data estimate."""
        dims = tuple(range(1, x.ndim))
        x1 = data_estimate(x, t, v_cond).double()  # x̂₁ of rectified flow (x_t = t·x1 + (1−t)·x0)
        d = delta.double()
        along = (d * x1).sum(dims, keepdim=True) / (x1 * x1).sum(dims, keepdim=True).clamp_min(1e-12)
        parallel = along * x1
        return (d - (1.0 - self.apg_eta) * parallel).to(delta.dtype)
