"""Ready-made component stacks. ``tiny``: random weights at toy size, for tests and for trying a graph offline.

The tiny stack produces noise-like audio: it proves the wiring (shapes, rates, lengths, files), not quality.
"""
from __future__ import annotations

import torch

TINY_SEED = 0


def tiny_components(seed: int = TINY_SEED, *, with_encoders: bool = True) -> dict:
    """Components of a 16 kHz tiny stack: tiny CLIP, Synchformer and T5 encoders (32-d), a tiny MM-DiT, a tiny
    MMAudio-style Mel-VAE (80 mels, 8-d latents), an untrained Mono2Stereo and the weight-free Griffin-Lim
    vocoder."""
    from .encoders import (TINY_SYNCHFORMER_CONFIG, SynchformerEncoder, get_text_encoder, get_visual_encoder,
                           load_motionformer)
    from .models.mel_vae_mmaudio import MMAudioMelVAE
    from .models.mmdit_presets import build_mmdit
    from .models.mono2stereo import Mono2Stereo
    from .models.vocoder_griffinlim import GriffinLimVocoder

    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    try:
        # module constructors draw from the global RNG: seed it for reproducible tiny weights, then restore it
        torch.manual_seed(seed)
        transformer = build_mmdit("tiny", clip_dim=32, sync_dim=32, text_dim=32, text_seq_len=77, latent_dim=8)
        # adaLN-Zero starts every block as identity and the output layer at zero; give the tiny model non-zero
        # weights so it produces a signal
        with torch.no_grad():
            for p in transformer.parameters():
                if p.ndim >= 1 and float(p.abs().max()) == 0.0:
                    p.normal_(0.0, 0.02, generator=g)
        vae = MMAudioMelVAE(data_dim=80, embed_dim=8, hidden_dim=16, ch_mult=(1, 2), num_res_blocks=1,
                            attn_layers=(), down_layers=(0,))
    finally:
        torch.random.set_rng_state(torch_state)
    # an untrained Mono2Stereo keeps the sound centred (its output layer starts at zero)
    mono2stereo = Mono2Stereo.from_preset("tiny", n_mels=80, video_dim=32, log_base="10")
    comps = dict(transformer=transformer.eval(), vae=vae.eval(), vocoder=GriffinLimVocoder("16k", n_iter=8).eval(),
                 mono2stereo=mono2stereo.eval())
    if with_encoders:
        # keep Synchformer's window contract (16 frames, stride 8, 8 tokens per window) at toy width
        sync = SynchformerEncoder(load_motionformer(None, config={**TINY_SYNCHFORMER_CONFIG, "num_frames": 16},
                                                    generator=g))
        comps.update(visual_encoder=get_visual_encoder("tiny-clip", generator=g), sync_encoder=sync,
                     text_encoder=get_text_encoder("tiny-t5", generator=g))
    return comps


def tiny_pipeline(seed: int = TINY_SEED):
    from .pipeline import KlingFoleyPipeline

    return KlingFoleyPipeline(**tiny_components(seed))
