"""Caption embeddings (and word features) for the training step, looked up by caption id.

Word features, when the run needs them (a network that ``uses_words`` or a term that needs ``"words"``;
:meth:`CaptionTable.with_words`), are computed on the first request, never otherwise:

- a trainable encoder runs :meth:`~t2i.interfaces.TextEncoder.forward_words` on the batch's tokens every
  step (one pass gives the sentence embeddings and the words);
- a frozen encoder's word features are computed once and kept on the device, in float16, padded to the
  split's longest caption, when that table fits :data:`WORD_CACHE_BUDGET_MB`; otherwise the tokens are kept
  and the words are recomputed for each batch (no gradients), the sentence embeddings staying cached.

What caching costs on COCO (82,783 training images x 5 captions = 413,915 captions), float16 features plus
one byte of mask per token (:func:`word_cache_bytes`): ``gru`` or ``bow`` at DAMSM's size (18 words x 256 d):
3.8 GB; at t2i's defaults (up to 40 words x 128 d): 4.3 GB; ``clip`` ViT-B-32 (77 tokens x 512 d): 32.7 GB;
``minilm`` (~60 tokens x 384 d): 19 GB. None of these belongs on a GPU beside the networks, so above the
budget (:data:`WORD_CACHE_BUDGET_MB`, 512 MB; the size is estimated from the tokens' width, an upper bound
of the longest caption) the words are recomputed for each batch: a ``gru`` or ``bow`` pass over 64 captions
is far cheaper than the GAN step, a CLIP text tower a few milliseconds on a GPU. Shapes-sized splits are
cached; CUB's 88,550 captions at ``gru``'s defaults (0.9 GB) are not unless the budget is raised. Set
``$T2I_WORD_CACHE_MB`` to move the budget (0: always recompute).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..config import ExperimentConfig
from ..errors import UsageError
from ..interfaces import TextEncoder, WordFeatures
from ..text.cache import cached_embeddings

__all__ = ["CaptionTable", "caption_cache_key", "WORD_CACHE_BUDGET_MB", "word_cache_bytes"]

WORD_CACHE_BUDGET_MB = 512  # a frozen encoder's word features above this are recomputed per batch


def word_cache_bytes(count: int, length: int, word_dim: int) -> int:
    """Bytes of a cached word table: float16 features and a bool mask for ``count`` captions of ``length`` tokens."""
    return count * length * (2 * word_dim + 1)


def _budget_bytes() -> int:
    return int(float(os.environ.get("T2I_WORD_CACHE_MB", WORD_CACHE_BUDGET_MB)) * 2**20)


class CaptionTable:
    """Every distinct caption of a split, ready for the text encoder: ``table(ids)`` -> ``(B, dim)``, and
    ``table.with_words(ids)`` -> ``((B, dim), WordFeatures)`` (see the module docstring).

    A frozen encoder is run once over all captions (embeddings kept on the device; cached on disk when the
    encoder asks for it, keyed by ``key``); a trainable one keeps the tokenised captions and runs every
    step, through ``train_encoder`` (its DistributedDataParallel wrapper on several processes).
    """

    def __init__(self, encoder: TextEncoder, captions: list[str], device: torch.device,
                 key: dict[str, Any] | None = None, *, train_encoder: nn.Module | None = None, chunk: int = 1024):
        self.base = encoder
        self.encoder = encoder
        self.captions, self.device, self.chunk = captions, device, chunk
        self.frozen = not encoder.trainable
        self.tokens: torch.Tensor | None = None
        self.word_table: WordFeatures | None = None  # a frozen encoder's cached words, built on first request
        self.words_cached: bool | None = None  # None: not decided yet
        if self.frozen and encoder.cache_embeddings and key is not None:  # expensive encoders: on disk, once
            self.table = cached_embeddings(encoder, captions, key, chunk=chunk).to(device)
            return
        tokens = encoder.tokenize(captions).to(device)
        if self.frozen:
            with torch.no_grad():
                self.table = torch.cat([encoder(tokens[i : i + chunk]) for i in range(0, len(captions), chunk)]).float()
        else:
            self.table = tokens
            self.tokens = tokens
            self.encoder = train_encoder if train_encoder is not None else encoder

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids] if self.frozen else self.encoder(self.table[ids])

    def with_words(self, ids: torch.Tensor) -> tuple[torch.Tensor, WordFeatures]:
        """The embeddings of captions ``ids`` and their word features (``L`` = the batch's longest caption)."""
        if not self.frozen:
            assert self.tokens is not None
            if self.encoder is not self.base:  # DDP: forward_words would bypass its gradient averaging
                raise UsageError("word features from a trainable text encoder are not supported on several "
                                 "processes yet; freeze the encoder (-T trainable=false) or train on one process")
            return self.base.forward_words(self.tokens[ids])
        if self.words_cached is None:
            self._prepare_words()
        if self.word_table is not None:
            words = self.word_table[ids]
            longest = int(words.mask.sum(1).max()) if len(ids) else 0
            return self.table[ids], WordFeatures(words.features[:, :longest].float(), words.mask[:, :longest])
        assert self.tokens is not None
        with torch.no_grad():
            _, words = self.base.forward_words(self.tokens[ids])
        return self.table[ids], WordFeatures(words.features.float(), words.mask)

    @torch.no_grad()
    def _prepare_words(self) -> None:
        """Tokenise the captions for the words; cache a frozen encoder's words when they fit the budget."""
        if self.tokens is None:
            self.tokens = self.base.tokenize(self.captions).to(self.device)
        dim = self.base.word_dim or 0
        length = int(self.tokens.shape[-1]) if self.tokens.dim() > 1 else 1  # an upper bound of the longest caption
        self.words_cached = word_cache_bytes(len(self.captions), length, dim) <= _budget_bytes()
        if not self.words_cached:
            return
        parts = [self.base.forward_words(self.tokens[i : i + self.chunk])[1]
                 for i in range(0, len(self.captions), self.chunk)]
        longest = max((p.features.shape[1] for p in parts), default=1)
        features = torch.zeros(len(self.captions), longest, dim, dtype=torch.float16, device=self.device)
        mask = torch.zeros(len(self.captions), longest, dtype=torch.bool, device=self.device)
        start = 0
        for p in parts:
            n, length = p.features.shape[:2]
            features[start : start + n, :length] = p.features.to(self.device, torch.float16)
            mask[start : start + n, :length] = p.mask.to(self.device)
            start += n
        self.word_table = WordFeatures(features, mask)


def caption_cache_key(resolved: ExperimentConfig) -> dict[str, Any]:
    """What the cached caption embeddings depend on (the encoder's weights are fingerprinted too)."""
    return {"data": {"name": resolved.data.name, "options": resolved.data.options, "split": resolved.data.train_split},
            "encoder": {"name": resolved.text_encoder.name, "options": resolved.text_encoder.options}}
