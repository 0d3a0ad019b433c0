"""A small learned word-level text encoder, trained jointly with the default model's MM-DiT.

It stands in for T5 in ``foley-tiny`` so the shipped model needs no external weights: a fixed vocabulary (the
words of the training captions, stored in the config, so ``save_pretrained`` keeps it), hashed buckets for words
outside it (a stable CRC32 of the word, so an unseen word still gets a consistent, if untrained, embedding), a
learned position embedding and a few pre-norm transformer layers. Every prompt starts with a ``<s>`` token, so
the empty prompt is one real token ("no description"), distinct from the MM-DiT's learned text placeholder that
classifier-free guidance uses as its negative.

Interface: the library's :class:`~kling_foley_core.encoders.base.TextEncoder` — ``encode(prompts) ->
TextFeatures(hidden (B, L, dim), mask (B, L))`` with ``L = max_length`` (padded), plus a differentiable
``forward(ids, mask)`` for training.
"""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..encoders.base import EncoderError, TextFeatures
from ..offload import execution_device, onloads

__all__ = ["WordTextEncoder", "build_vocabulary", "split_words"]

PAD, BOS = 0, 1
_SPECIAL = 2
_WORD = re.compile(r"[a-z0-9']+")


def split_words(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, apostrophes); punctuation is dropped."""
    return _WORD.findall(text.lower())


def build_vocabulary(captions: Sequence[str], min_count: int = 1) -> list[str]:
    """Words of ``captions`` seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
    counts: dict[str, int] = {}
    for c in captions:
        for w in split_words(c):
            counts[w] = counts.get(w, 0) + 1
    return [w for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


class WordTextEncoder(ModelMixin, ConfigMixin):
    """Word embeddings (vocabulary + hashed buckets) → ``num_layers`` transformer layers → LayerNorm."""

    name = "foley-tiny-text"

    @register_to_config
    def __init__(self, vocabulary: Sequence[str] = (), hash_buckets: int = 256, dim: int = 64, num_layers: int = 2,
                 num_heads: int = 4, max_length: int = 24, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise EncoderError(f"WordTextEncoder: dim={dim} must be divisible by num_heads={num_heads}")
        if max_length < 2:
            raise EncoderError(f"WordTextEncoder: max_length={max_length} must be >= 2 (<s> plus one word)")
        self._index = {w: i + _SPECIAL for i, w in enumerate(vocabulary)}
        self.embed = nn.Embedding(_SPECIAL + len(vocabulary) + hash_buckets, dim)
        self.pos = nn.Parameter(torch.zeros(max_length, dim))
        layer = nn.TransformerEncoderLayer(dim, num_heads, 4 * dim, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    # -- the library's TextEncoder interface ---------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def token_id(self, word: str) -> int:
        i = self._index.get(word)
        if i is not None:
            return i
        c = self.config
        return _SPECIAL + len(c.vocabulary) + zlib.crc32(word.encode()) % c.hash_buckets

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → ids ``(B, max_length)`` (``<s>`` first, padded with 0) and the mask of real tokens."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise EncoderError(f"{self.name}: prompts must be a non-empty list of str, got {prompts!r:.80}")
        n = self.config.max_length
        ids = torch.zeros(len(prompts), n, dtype=torch.long)
        for b, p in enumerate(prompts):
            toks = [BOS] + [self.token_id(w) for w in split_words(p)][: n - 1]
            ids[b, : len(toks)] = torch.tensor(toks)
        return ids, ids != PAD

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, L)`` and mask → hidden states ``(B, L, dim)`` (padding positions zeroed)."""
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, D)
        x = self.layers(x, src_key_padding_mask=~mask)  # (B, L, D)
        return self.norm(x) * mask[..., None].to(x.dtype)

    @onloads
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextFeatures:
        ids, mask = self.tokenize(prompts)
        dev = execution_device(self)
        hidden = self.forward(ids.to(dev), mask.to(dev))
        return TextFeatures(hidden=hidden.float(), mask=mask.to(dev))
