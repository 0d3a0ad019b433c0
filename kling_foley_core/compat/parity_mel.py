"""Parity handler for MMAudio's mel front-ends and mel VAE fixtures.

* ``ext/mel_converter``: builds one ``MelSpectrogram`` per mode from the numbers in the fixture's ``modes`` and
  recomputes ``mel_<mode>`` from ``wav_<mode>``.
* ``ext/autoencoder/vae.VAE``: converts the reference-key weights (saved before weight-norm removal, as real
  checkpoints are) with ``convert_mmaudio_vae_state_dict``, builds ``MMAudioMelVAE`` from the inferred config
  (checked against the fixture's), and recomputes ``posterior_mean``/``posterior_std`` = encode(mel) and
  ``decoded`` = decode(z).
"""
from __future__ import annotations

import torch

from kling_foley_core.audio.mel import MelConfig, MelSpectrogram
from kling_foley_core.compat.convert_mmaudio_vae import convert_mmaudio_vae_state_dict
from kling_foley_core.models.mel_vae_mmaudio import MMAudioMelVAE

_LOG_BASES = {"log10": "10", "ln": "e", "log": "e"}


def mel_config_from_spec(mode: dict) -> MelConfig:
    """A fixture's mode description (sr, n_fft, mels, hop, win, fmin, fmax, norm) → ``MelConfig``."""
    if mode["norm"] not in _LOG_BASES:
        raise ValueError(f"parity_mel: unknown log norm {mode['norm']!r} (known: {sorted(_LOG_BASES)})")
    return MelConfig(sampling_rate=int(mode["sr"]), n_fft=int(mode["n_fft"]), hop_length=int(mode["hop"]),
                     win_length=int(mode["win"]), n_mels=int(mode["mels"]), f_min=float(mode["fmin"]),
                     f_max=float(mode["fmax"]), log_base=_LOG_BASES[mode["norm"]])


def _run_mel(fixture) -> dict[str, torch.Tensor]:
    out = {}
    for name, mode in fixture.spec["modes"].items():
        wav = fixture.io[f"wav_{name}"]
        out[f"mel_{name}"] = MelSpectrogram(mel_config_from_spec(mode))(wav)
    return out


def _check_config(name: str, inferred: dict, expected: dict) -> None:
    """The architecture read off the weights must be the one the fixture was built with.

    Attention / resampling indices past the last level have no effect in the reference (its default
    ``attn_layers=[3]`` with three levels means "none"), so only the effective ones are compared.
    """
    n_levels = len(expected.get("ch_mult", inferred["ch_mult"]))

    def effective(key, cfg):
        value = cfg.get(key)
        if key in ("attn_layers", "down_layers"):
            return sorted(i for i in value if i < n_levels)
        return list(value) if isinstance(value, (list, tuple)) else value

    for key in expected:
        if key in inferred and effective(key, inferred) != effective(key, expected):
            raise ValueError(f"parity_mel: {name}: weights imply {key}={inferred[key]}, fixture config says "
                             f"{expected[key]}")


def _run_vae(fixture) -> dict[str, torch.Tensor]:
    if fixture.weights is None:
        raise ValueError(f"parity_mel: {fixture.name} has no weights file")
    # Fixtures hold raw (pre-removal) weights like real checkpoints; "auto" also accepts an inference-form export.
    converted = convert_mmaudio_vae_state_dict(fixture.weights, source=fixture.name, weight_norm="auto")
    _check_config(fixture.name, converted.config, fixture.spec.get("config", {}))
    model = MMAudioMelVAE(**converted.config)
    model.load_state_dict(converted.state_dict, strict=True)
    model.eval()
    with torch.inference_mode():
        post = model.encode(fixture.io["mel"])
        # decode the fixture's own z when it has one (a posterior sample drawn by the reference), else the mean
        decoded = model.decode(fixture.io["z"] if "z" in fixture.io else post.mean)
    return {"posterior_mean": post.mean, "posterior_std": post.std, "decoded": decoded}


def run(fixture) -> dict[str, torch.Tensor]:
    reference = fixture.spec.get("reference", "")
    if "mel_converter" in reference:
        return _run_mel(fixture)
    if "autoencoder/vae" in reference:
        return _run_vae(fixture)
    raise ValueError(f"parity_mel: cannot handle reference {reference!r}")
