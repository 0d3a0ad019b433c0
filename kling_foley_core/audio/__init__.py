"""Audio front-ends: log-mel spectrograms with the MMAudio / Kling-Foley presets."""
from .mel import MEL_PRESETS, MelConfig, MelInputError, MelSpectrogram, mel_preset, slaney_mel_filters

__all__ = ["MEL_PRESETS", "MelConfig", "MelInputError", "MelSpectrogram", "mel_preset", "slaney_mel_filters"]
