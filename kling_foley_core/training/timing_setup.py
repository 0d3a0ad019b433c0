"""``train_foley`` with ``--override transformer.timing_sync=true``: fit the timing head on the run's own clips.

The head reads the frozen sync encoder's tokens (its fit would go stale if the encoder moved), so the run must
freeze ``sync_encoder``. An ``--init`` that already holds a fitted head keeps it (``load_parts`` tells).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..models.timing_sync import fit_timing_head, token_timing
from .common import TrainingError
from .dataset import video_frames

log = logging.getLogger(__name__)


def fit_run_timing(objective, cache, max_clips: int = 400, seed: int = 0) -> dict:
    """Encode up to ``max_clips`` clips of the cache with the frozen sync encoder and fit the transformer's timing
    head on their contacts (:func:`~..models.timing_sync.fit_timing_head`)."""
    from .train_foley import sync_frame_count

    tr = objective.parts.transformer
    if "sync_encoder" not in objective.frozen:
        raise TrainingError("--override transformer.timing_sync=true fits its timing head on the sync encoder's "
                            "tokens: add --freeze sync_encoder (the fit would go stale as the encoder moves)")
    order = np.random.default_rng(seed).permutation(len(cache))
    chosen = [int(i) for i in order if cache.clips[int(i)]["events"]][:max_clips]
    if len(chosen) < 5:
        raise TrainingError(f"--override transformer.timing_sync=true: only {len(chosen)} clips with hits to fit "
                            f"the timing head on; give a --data set with hits")
    feats, hits, places = [], [], []
    with torch.no_grad():
        for i in chosen:
            lens = tr.sequence_lengths(float(cache.clips[i]["duration"]))
            sem, sync = video_frames(cache, [i], 1, sync_frame_count(lens))
            tokens = objective.encode_video(sem, sync)[1][0]  # (Ns, Ds)
            h, p = token_timing(cache.clips[i]["events"], tokens.shape[0] // 8)
            feats.append(tokens.float().cpu())
            hits.append(h)
            places.append(p)
    with torch.enable_grad():
        report = fit_timing_head(tr.sync_timing, feats, hits, places, seed=seed)
    log.info("timing head fitted on %d clips: balanced accuracy %.3f, place error %.3f of a token (held out: %d "
             "tokens)", len(chosen), report["balanced_accuracy"], report["place_error"], report["held_out_tokens"])
    return report

