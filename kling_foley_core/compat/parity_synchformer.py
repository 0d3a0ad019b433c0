"""Parity handler for ``mmaudio/synchformer_rule``: MMAudio's Synchformer visual branch at full ViT-B size.

The fixture stores no weights (122 M parameters): the JSON lists every reference key with its shape and a
``weight_rule`` to regenerate each tensor from its key; ``weight_check`` pins the first values of a few keys so a
drifting rule is caught before any comparison. The input video is closed-form (``video_rule``). The weights go
through the library's own converter (:func:`convert_synchformer_state_dict`, which also drops any non-visual
keys) into the library's :class:`MotionFormer`, and ``features`` is recomputed from the rebuilt video.
"""
from __future__ import annotations

import math
import zlib

import torch

from ..encoders.synchformer import MotionFormer, SYNCHFORMER_CONFIG, convert_synchformer_state_dict
from .checkpoints import init_empty, load_state_dict_strict
from .parity import Fixture, ParityError


def rule_tensor(key: str, shape: list[int]) -> torch.Tensor:
    """One tensor by the fixture's weight rule (seeded by the CRC32 of its reference key)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) == 1:
        return 1 + 0.1 * r if key.endswith("weight") else 0.02 * r
    if key.endswith("weight"):
        return r / math.sqrt(r.numel() / shape[0])
    return 0.02 * r


def rule_state_dict(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: rule_tensor(k, shape) for k, shape in keys.items()}


def check_weights(sd: dict[str, torch.Tensor], weight_check: dict[str, list[float]]) -> None:
    for key, head in weight_check.items():
        if key not in sd:
            raise ParityError(f"parity: weight_check names '{key}', which the rebuilt weights lack")
        got = sd[key].flatten()[: len(head)].double()
        if not torch.allclose(got, torch.tensor(head, dtype=torch.float64), rtol=1e-6, atol=1e-9):
            raise ParityError(f"parity: rebuilt '{key}' starts {got.tolist()}, the fixture says {head}: "
                              "the weight rule is not reproduced")


def rule_video(batch: int, segments: int, frames: int = 16, size: int = 224) -> torch.Tensor:
    """The fixture's closed-form video (B, S, T, C, H, W), computed in float64 then cast to float32."""
    b = torch.arange(batch, dtype=torch.float64).view(-1, 1, 1, 1, 1, 1)
    s = torch.arange(segments, dtype=torch.float64).view(1, -1, 1, 1, 1, 1)
    t = torch.arange(frames, dtype=torch.float64).view(1, 1, -1, 1, 1, 1)
    c = torch.arange(3, dtype=torch.float64).view(1, 1, 1, -1, 1, 1)
    h = torch.arange(size, dtype=torch.float64).view(1, 1, 1, 1, -1, 1)
    w = torch.arange(size, dtype=torch.float64).view(1, 1, 1, 1, 1, -1)
    video = 0.8 * torch.sin((0.05 + 0.03 * s) * h + 0.07 * w * (1 + 0.2 * t) + 0.3 * t + 1.1 * c + 0.9 * s + 0.4 * b) \
        * torch.cos(0.031 * h * (1 + 0.1 * t) - 0.02 * w * (1 + s))
    return video.float()


def run(fixture: Fixture) -> dict[str, torch.Tensor]:
    spec = fixture.spec
    if fixture.weights is not None:
        ref_sd = fixture.weights
    elif "keys" in spec:
        ref_sd = rule_state_dict(spec["keys"])
    else:
        raise ParityError(f"parity: {fixture.name}: no weights file and no key list to rebuild them from")
    check_weights(ref_sd, spec.get("weight_check", {}))

    sd = convert_synchformer_state_dict(ref_sd)
    model = init_empty(MotionFormer, **SYNCHFORMER_CONFIG)
    load_state_dict_strict(model, sd, what="Synchformer visual branch")
    model.eval()

    b, s, t, d = spec["io_keys"]["features"]
    video = rule_video(b, s, frames=model.config.num_frames, size=model.config.image_size)  # (B, S, T, C, H, W)
    with torch.inference_mode():
        features = model(video)  # (B, S, 8, 768)
    return {"features": features, "video_first_frame": video[0, 0, 0].clone()}
