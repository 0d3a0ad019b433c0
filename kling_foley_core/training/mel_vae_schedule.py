"""Kling-Foley Mel-VAE: the multi-stage stepping optimisation schedule (paper §4.5.2, Algorithm 2).

Driven only by the global step count, it says which losses are active with which weight and which parts train:

=========  ===========================  ===========================================  ==============================
stage      steps                        loss weights                                 trains
=========  ===========================  ===========================================  ==============================
1          step ≤ stage1_end            L_mse                                        encoder + decoder
2          stage1_end < step ≤ s2_end   L_mse + γ·L_kl, γ = kl_upper·min(1, ramp)    encoder + decoder
3          s2_end < step ≤ s3_end       L_mse + kl_upper·L_kl + λ·(L_g + L_d),       encoder + decoder + discrim.
                                        λ = gan_upper·min(1, ramp)
4          step > stage3_end            L_mse + kl_upper·L_kl + gan_upper·(L_g+L_d)  decoder + discriminator only
=========  ===========================  ===========================================  ==============================

with ramp = (step − start) / (end − start) over the stage. In stage 4 the mel encoder and the VAE bottleneck are
frozen, so the decoder is refined on fixed latents (what the diffusion model will generate in). The discriminator's
R1 penalty weight (λ_R1 in eq. 5) applies whenever the discriminator trains.

A trainer calls ``weights = schedule(step)`` each step, uses ``weights.mse/kl/gan/r1`` in the loss functions of
``mel_vae_losses``, steps the discriminator optimiser only when ``weights.train_discriminator``, and calls
``apply_trainable(vae, weights)`` (cheap; it only flips ``requires_grad``) to freeze the encoder in stage 4.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

__all__ = ["SteppingSchedule", "StageWeights", "apply_trainable", "STAGE_NAMES"]

STAGE_NAMES = {1: "base reconstruction", 2: "regularisation enhancement", 3: "adversarial introduction",
               4: "decoder refinement"}


class ScheduleError(ValueError):
    """Inconsistent stage boundaries or weights."""


@dataclass(frozen=True)
class StageWeights:
    """What is active at one step."""

    step: int
    stage: int  # 1..4
    mse: float  # weight of the reconstruction loss (always 1: the anchor of every stage)
    kl: float  # weight of the margin-KL loss (γ)
    gan: float  # weight of L_g in the generator loss and of the hinge loss L_adv in L_d (λ, γ_step in eq. 5)
    r1: float  # weight of the R1 penalty in L_d (λ_R1), 0 while the discriminator is off
    train_encoder: bool  # mel encoder + VAE bottleneck
    train_decoder: bool
    train_discriminator: bool

    @property
    def name(self) -> str:
        return STAGE_NAMES[self.stage]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SteppingSchedule:
    """Algorithm 2's hyper-parameters; call it with a step to get that step's :class:`StageWeights`."""

    stage1_end: int
    stage2_end: int
    stage3_end: int
    kl_upper: float = 1e-2
    gan_upper: float = 0.1
    r1_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.stage1_end < self.stage2_end < self.stage3_end:
            raise ScheduleError(
                f"SteppingSchedule: need 0 <= stage1_end < stage2_end < stage3_end, got {self.stage1_end}, "
                f"{self.stage2_end}, {self.stage3_end} (each ramp needs at least one step)")
        for name in ("kl_upper", "gan_upper", "r1_weight"):
            if getattr(self, name) < 0:
                raise ScheduleError(f"SteppingSchedule: {name}={getattr(self, name)} must be >= 0")

    def stage(self, step: int) -> int:
        if step < 0:
            raise ScheduleError(f"SteppingSchedule: step={step} must be >= 0")
        if step <= self.stage1_end:
            return 1
        if step <= self.stage2_end:
            return 2
        if step <= self.stage3_end:
            return 3
        return 4

    def __call__(self, step: int) -> StageWeights:
        stage = self.stage(step)
        if stage == 1:
            kl, gan = 0.0, 0.0
        elif stage == 2:
            kl = self.kl_upper * min(1.0, (step - self.stage1_end) / (self.stage2_end - self.stage1_end))
            gan = 0.0
        elif stage == 3:
            kl = self.kl_upper
            gan = self.gan_upper * min(1.0, (step - self.stage2_end) / (self.stage3_end - self.stage2_end))
        else:
            kl, gan = self.kl_upper, self.gan_upper
        disc = stage >= 3
        return StageWeights(step=step, stage=stage, mse=1.0, kl=kl, gan=gan, r1=self.r1_weight if disc else 0.0,
                            train_encoder=stage <= 3, train_decoder=True, train_discriminator=disc)

    def boundaries(self) -> list[tuple[int, int | None, int]]:
        """[(first_step, last_step or None, stage)] for logging."""
        return [(0, self.stage1_end, 1), (self.stage1_end + 1, self.stage2_end, 2),
                (self.stage2_end + 1, self.stage3_end, 3), (self.stage3_end + 1, None, 4)]


def apply_trainable(vae: nn.Module, weights: StageWeights, discriminator: nn.Module | None = None) -> None:
    """Set ``requires_grad`` of the VAE's encoder/decoder (and the discriminator) to what the stage trains.

    The VAE must expose ``encoder`` and ``decoder`` submodules (``KlingMelVAE`` does). Frozen parameters keep
    their optimiser state; an optimiser skips parameters whose ``.grad`` is None, so freezing needs no rebuild
    (call ``optimizer.zero_grad(set_to_none=True)`` so stale gradients do not linger).
    """
    for p in vae.encoder.parameters():
        p.requires_grad_(weights.train_encoder)
    for p in vae.decoder.parameters():
        p.requires_grad_(weights.train_decoder)
    if discriminator is not None:
        for p in discriminator.parameters():
            p.requires_grad_(weights.train_discriminator)
