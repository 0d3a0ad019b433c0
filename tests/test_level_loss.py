"""The MM-DiT level loss: the one-step clean estimate, and the t-weighted frame-level distance of decoded latents."""
import pytest
import torch

from kling_foley_core.sampling.flow_matching import data_estimate, make_batch
from kling_foley_core.training.level_loss import decoded_level_loss


def test_data_estimate_of_the_true_velocity_is_the_data():
    x1 = torch.randn(3, 10, 4)
    b = make_batch(x1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(data_estimate(b.xt, b.t, b.target), x1, atol=1e-6)  # one t per item
    t = torch.tensor(0.3)  # one t for the batch, as the samplers step
    assert torch.allclose(data_estimate(0.3 * x1 + 0.7 * b.x0, t, x1 - b.x0), x1, atol=1e-6)


def test_decoded_level_loss_sees_a_quieter_strike_and_weighs_by_t():
    def decode(z):  # "latents" (B, N, C) read as a log-mel (B, C, N)
        return z.transpose(1, 2)

    x1 = torch.full((2, 9, 4), -5.0)
    x1[:, 4] = 0.0  # one strike per clip
    quiet = x1.clone()
    quiet[0, 4] = -0.15  # clip 0's strike 3 dB down; clip 1 exact
    assert decoded_level_loss(decode, x1, x1, torch.tensor([0.5, 0.5])).item() == 0.0
    t = torch.tensor([0.9, 0.1])
    assert decoded_level_loss(decode, quiet, x1, t).item() == pytest.approx(0.9 * 0.15 / 1.0, abs=1e-4)
    # the error counts less when it is made from near noise (small t)
    assert decoded_level_loss(decode, quiet, x1, torch.tensor([0.1, 0.9])).item() == pytest.approx(0.1 * 0.15,
                                                                                                   abs=1e-4)
    # only the items of largest t are decoded: clip 1 (t 0.9, exact) alone gives 0
    assert decoded_level_loss(decode, quiet, x1, torch.tensor([0.1, 0.9]), max_items=1).item() == 0.0
    assert decoded_level_loss(decode, quiet, x1, torch.tensor([0.9, 0.1]), max_items=1).item() == \
        pytest.approx(0.15, abs=1e-4)
    # a gradient reaches the prediction
    q = quiet.clone().requires_grad_(True)
    decoded_level_loss(decode, q, x1, t).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
