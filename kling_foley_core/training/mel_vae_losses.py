"""Kling-Foley Mel-VAE losses (paper §4.5.1, eqs. 2–7) as plain functions a trainer composes.

* KL of the posterior against N(0, I), in nats per latent frame (summed over the latent channels, averaged over
  batch and frames), and the **margin KL** ``max(0, KL − Δ)`` (eq. 2): below Δ nats the KL term stops pushing, so
  the posterior cannot collapse onto the prior (the "KL collapse" the paper cites).
* Reconstruction: MSE between decoded and input log-mel (eq. 3), plus an optional L1 term.
* Peak level (not in the paper): the distance between the decoded and input **frame levels** (log10 of each frame's
  mel magnitude norm) that forgives a shift of a frame, over the frames where either lies within 40 dB of the
  crop's loudest. A per-bin MSE in the log domain smears a strike's onset over the frames of one latent and so
  lowers its peak (the shipped decoder lost 3.6 dB at hits); this term asks for the peak's level where the strike
  is, not its exact frame.
* Adversarial, on a discriminator's patch logits (one map per scale, averaged over scales):
  generator ``L_g = −E[D(Â)]`` (eq. 4); discriminator hinge ``L_adv = E[max(0, 1 − D(A))] + E[max(0, 1 + D(Â))]``
  (eq. 6); and the R1 gradient penalty on real inputs ``R1 = E_x ||∇_x Σ D(x)||²`` (eq. 7 as printed names the
  decoder's gradient; the standard R1 of Mescheder et al. 2018, used here, penalises the discriminator's gradient
  at real data, which is what stabilises hinge training).
* ``L_d = γ_step·L_adv + λ_R1·R1`` (eq. 5) and the generator total ``L_mse + γ·L_kl + λ·L_g`` with the weights
  of :mod:`kling_foley_core.training.mel_vae_schedule`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kling_foley_core.training.mel_vae_schedule import StageWeights

__all__ = ["kl_divergence", "margin_kl", "reconstruction_losses", "hinge_discriminator_loss",
           "generator_adversarial_loss", "r1_penalty", "generator_loss", "discriminator_loss",
           "frame_level_loss", "GeneratorLosses", "DiscriminatorLosses", "ReconstructionLosses"]

Logits = torch.Tensor | Sequence[torch.Tensor]


def _as_list(logits: Logits) -> list[torch.Tensor]:
    if torch.is_tensor(logits):
        return [logits]
    out = list(logits)
    if not out:
        raise ValueError("adversarial loss: got an empty list of discriminator logits")
    return out


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) || N(0, 1)) for latents ``(B, C, T)``: summed over C, averaged over B and T (scalar)."""
    per_elem = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, C, T)
    return per_elem.sum(dim=1).mean()


def margin_kl(kl: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, kl − margin)`` (eq. 2). Its gradient is zero while the KL is within the margin."""
    if margin < 0:
        raise ValueError(f"margin_kl: margin={margin} must be >= 0 (nats per latent frame)")
    return torch.clamp(kl - margin, min=0.0)


@dataclass
class ReconstructionLosses:
    mse: torch.Tensor
    l1: torch.Tensor


def reconstruction_losses(pred: torch.Tensor, target: torch.Tensor) -> ReconstructionLosses:
    if pred.shape != target.shape:
        raise ValueError(f"reconstruction_losses: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                         f"differ; crop the decoder output to the input's frames")
    return ReconstructionLosses(mse=F.mse_loss(pred, target), l1=F.l1_loss(pred, target))


def frame_levels(log_mel: torch.Tensor, log_base: float = 10.0) -> torch.Tensor:
    """Each frame's level, log10 of the norm of its mel magnitudes: ``(B, M, T)`` log-mel → ``(B, T)``."""
    ln = log_mel * math.log(log_base)  # natural log of each magnitude
    return torch.logsumexp(2.0 * ln, dim=1) / (2.0 * math.log(10.0))


def frame_level_loss(pred: torch.Tensor, target: torch.Tensor, *, pool: int = 3, range_db: float = 40.0,
                     log_base: float = 10.0) -> torch.Tensor:
    """Level distance (log10 units: 1 = 20 dB) of ``pred`` and ``target`` (B, M, T) that forgives a shift of up to
    ``pool // 2`` frames: per frame, how far each side's level lies *under* the other side's loudest frame nearby
    (``relu(l_t − maxpool(l_p)) + relu(l_p − maxpool(l_t))``), averaged over the frames where either side lies
    within ``range_db`` of the target's loudest. A lowered peak costs its loss in full; the same peak a frame early
    or late costs nothing."""
    if pred.shape != target.shape:
        raise ValueError(f"frame_level_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pool < 1 or pool % 2 == 0:
        raise ValueError(f"frame_level_loss: pool={pool} must be an odd number >= 1 (frames)")
    lp, lt = frame_levels(pred, log_base), frame_levels(target, log_base)  # (B, T)

    def pooled(x):
        return F.max_pool1d(x[:, None], pool, stride=1, padding=pool // 2)[:, 0]
    gap = F.relu(lt - pooled(lp)) + F.relu(lp - pooled(lt))
    floor = lt.amax(dim=1, keepdim=True) - range_db / 20.0
    active = ((lt >= floor) | (lp >= floor)).float()
    return (gap * active).sum() / active.sum().clamp_min(1.0)


def hinge_discriminator_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """E[max(0, 1 − D(real))] + E[max(0, 1 + D(fake))], averaged over discriminator scales (eq. 6)."""
    real, fake = _as_list(real_logits), _as_list(fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"hinge_discriminator_loss: {len(real)} real vs {len(fake)} fake logit maps")
    terms = [F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake_logits: Logits) -> torch.Tensor:
    """−E[D(fake)], averaged over scales (eq. 4)."""
    return torch.stack([-f.mean() for f in _as_list(fake_logits)]).mean()


def r1_penalty(real_logits: Logits, real_input: torch.Tensor) -> torch.Tensor:
    """E_x ||∇_x Σ D(x)||² over the batch, for ``real_input`` that required grad when the logits were computed.

    The gradient graph is kept (``create_graph``) so the penalty itself can be back-propagated.
    """
    if not real_input.requires_grad:
        raise ValueError("r1_penalty: real_input must have requires_grad=True before the discriminator runs on it")
    total = sum(r.sum() for r in _as_list(real_logits))
    (grad,) = torch.autograd.grad(total, real_input, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------------------------
# Composite losses for one training step


@dataclass
class GeneratorLosses:
    total: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor
    kl: torch.Tensor  # raw KL (nats per latent frame), for logging
    kl_margin: torch.Tensor  # max(0, KL − Δ), the term that is weighted
    adversarial: torch.Tensor  # L_g (zero tensor when no discriminator logits are given)
    level: torch.Tensor  # frame_level_loss (computed only when weighted; zero otherwise)

    def to_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach())
                for k in ("total", "mse", "l1", "kl", "kl_margin", "adversarial", "level")}


@dataclass
class DiscriminatorLosses:
    total: torch.Tensor
    hinge: torch.Tensor
    r1: torch.Tensor

    def to_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "hinge", "r1")}


def generator_loss(reconstruction: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                   weights: StageWeights, *, kl_margin: float = 0.0, l1_weight: float = 0.0,
                   fake_logits: Logits | None = None, level_weight: float = 0.0) -> GeneratorLosses:
    """``mse + l1_weight·l1 + level_weight·frame_level_loss + weights.kl·max(0, KL − Δ) + weights.gan·L_g`` for
    the VAE's optimiser."""
    rec = reconstruction_losses(reconstruction, target)
    kl = kl_divergence(mean, logvar)
    klm = margin_kl(kl, kl_margin)
    if weights.gan > 0 and fake_logits is None:
        raise ValueError(f"generator_loss: stage {weights.stage} (step {weights.step}) weights the adversarial loss "
                         f"by {weights.gan:g}; pass fake_logits=discriminator(reconstruction).logits")
    zero = reconstruction.new_zeros(())
    adv = generator_adversarial_loss(fake_logits) if (fake_logits is not None and weights.gan > 0) else zero
    total = weights.mse * rec.mse + l1_weight * rec.l1
    level = zero
    if level_weight > 0:
        level = frame_level_loss(reconstruction, target)
        total = total + level_weight * level
    if weights.kl > 0:
        total = total + weights.kl * klm
    if weights.gan > 0:
        total = total + weights.gan * adv
    return GeneratorLosses(total=total, mse=rec.mse, l1=rec.l1, kl=kl, kl_margin=klm, adversarial=adv,
                           level=level)


def discriminator_loss(discriminator: Callable[[torch.Tensor], object], real: torch.Tensor, fake: torch.Tensor,
                       weights: StageWeights) -> DiscriminatorLosses:
    """``weights.gan·L_adv + weights.r1·R1`` (eq. 5) for the discriminator's optimiser.

    ``discriminator(x)`` returns logits (a tensor, a list of tensors, or an object with ``.logits``). ``fake`` is
    detached here so this loss never reaches the VAE.
    """
    def logits_of(x):
        out = discriminator(x)
        return out.logits if hasattr(out, "logits") else out

    real = real.detach().requires_grad_(weights.r1 > 0)
    real_logits = logits_of(real)
    fake_logits = logits_of(fake.detach())
    hinge = hinge_discriminator_loss(real_logits, fake_logits)
    r1 = r1_penalty(real_logits, real) if weights.r1 > 0 else hinge.new_zeros(())
    return DiscriminatorLosses(total=weights.gan * hinge + weights.r1 * r1, hinge=hinge, r1=r1)
