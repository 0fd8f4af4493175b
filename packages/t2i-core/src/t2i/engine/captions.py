"""Caption embeddings (and word features) for the training step, looked up by caption id.

Word features, when the run needs them (a network that ``uses_words`` or a term that needs ``"words"``;
:meth:`CaptionTable.with_words`), are computed on the first request, never otherwise:

- a trainable encoder runs :meth:`~t2i.interfaces.TextEncoder.forward_words` on the batch's tokens every
  step (one pass gives the sentence embeddings and the words), through DistributedDataParallel on several
  processes (:class:`~t2i.engine.networks.EncoderPasses`);
- a frozen encoder's word features are computed once, in float16, padded to the split's longest caption, and
  kept on the device when that table fits :data:`WORD_CACHE_BUDGET_MB`;
- an encoder that keeps its sentence embeddings on disk (``cache_embeddings``: ``clip``, ``minilm``) keeps
  its word table there too (:func:`t2i.text.cache.cached_word_features`), when it fits
  :data:`WORD_DISK_CACHE_MB`: a second run reads it instead of encoding every caption again; the table is
  then kept on the device if it fits the first budget, else in host memory, each batch's rows copied over;
- otherwise the tokens are kept and the words are recomputed for each batch (no gradients), the sentence
  embeddings staying cached.

What a word table costs on COCO (82,783 training images x 5 captions = 413,915 captions), float16 features
plus one byte of mask per token (:func:`word_cache_bytes`), on the device, on disk and in host memory alike:
``gru`` or ``bow`` at DAMSM's size (18 words x 256 d): 3.8 GB; at t2i's defaults (up to 40 words x 128 d):
4.3 GB; ``clip`` ViT-B-32 (77 tokens x 512 d): 32.7 GB; ``minilm`` (~60 tokens x 384 d): 19 GB. None of
these belongs on a GPU beside the networks, so above the device budget (:data:`WORD_CACHE_BUDGET_MB`,
512 MB; the size is estimated from the tokens' width, an upper bound of the longest caption) the words are
read from host memory when the disk cache holds them and recomputed for each batch otherwise: a ``gru`` or
``bow`` pass over 64 captions is far cheaper than the GAN step, a CLIP text tower a few milliseconds on a
GPU. Shapes-sized splits are cached; CUB's 88,550 captions at ``gru``'s defaults (0.9 GB) are not unless
the budget is raised; ``clip`` on COCO (32.7 GB) is above the disk cap (:data:`WORD_DISK_CACHE_MB`, 4096 MB).
Set ``$T2I_WORD_CACHE_MB`` to move the device budget (0: never on the device) and
``$T2I_WORD_DISK_CACHE_MB`` to move the disk cap (0: never on disk; the host must hold what the cap allows).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..config import ExperimentConfig
from ..interfaces import TextEncoder, WordFeatures
from ..text.cache import cached_embeddings, cached_word_features, compute_word_features
from .networks import EncoderPasses

__all__ = ["CaptionTable", "caption_cache_key", "WORD_CACHE_BUDGET_MB", "WORD_DISK_CACHE_MB", "word_cache_bytes"]

WORD_CACHE_BUDGET_MB = 512  # a frozen encoder's word features above this are not kept on the device
WORD_DISK_CACHE_MB = 4096  # nor on disk (and in host memory) above this: then they are recomputed per batch


def word_cache_bytes(count: int, length: int, word_dim: int) -> int:
    """Bytes of a cached word table: float16 features and a bool mask for ``count`` captions of ``length`` tokens."""
    return count * length * (2 * word_dim + 1)


def _budget_bytes(variable: str, default_mb: int) -> int:
    return int(float(os.environ.get(variable, default_mb)) * 2**20)


class CaptionTable:
    """Every distinct caption of a split, ready for the text encoder: ``table(ids)`` -> ``(B, dim)``, and
    ``table.with_words(ids)`` -> ``((B, dim), WordFeatures)`` (see the module docstring).

    A frozen encoder is run once over all captions (embeddings kept on the device; cached on disk when the
    encoder asks for it, keyed by ``key``); a trainable one keeps the tokenised captions and runs every
    step, through ``train_encoder``: an :class:`~t2i.engine.networks.EncoderPasses` (in DistributedDataParallel
    on several processes), so that both passes, sentence and words, have their gradients averaged.
    """

    def __init__(self, encoder: TextEncoder, captions: list[str], device: torch.device,
                 key: dict[str, Any] | None = None, *, train_encoder: nn.Module | None = None, chunk: int = 1024):
        self.base = encoder
        self.encoder = encoder
        self.captions, self.device, self.chunk, self.key = captions, device, chunk, key
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
            self.encoder = train_encoder if train_encoder is not None else EncoderPasses(encoder)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids] if self.frozen else self.encoder(self.table[ids])

    def with_words(self, ids: torch.Tensor) -> tuple[torch.Tensor, WordFeatures]:
        """The embeddings of captions ``ids`` and their word features (``L`` = the batch's longest caption)."""
        if not self.frozen:
            assert self.tokens is not None
            return self.encoder(self.tokens[ids], words=True)  # through DDP on several processes
        if self.words_cached is None:
            self._prepare_words()
        if self.word_table is not None:
            words = self.word_table[ids.to(self.word_table.mask.device)]
            longest = int(words.mask.sum(1).max()) if len(ids) else 0
            words = WordFeatures(words.features[:, :longest], words.mask[:, :longest]).to(self.device)
            return self.table[ids], WordFeatures(words.features.float(), words.mask)
        assert self.tokens is not None
        with torch.no_grad():
            _, words = self.base.forward_words(self.tokens[ids])
        return self.table[ids], WordFeatures(words.features.float(), words.mask)

    @torch.no_grad()
    def _prepare_words(self) -> None:
        """Decide where a frozen encoder's words come from (see the module docstring): a table on the device,
        a table in host memory read from the disk cache, or the encoder for each batch."""
        tokens = self.base.tokenize(self.captions)
        dim = self.base.word_dim or 0
        length = int(tokens.shape[-1]) if tokens.dim() > 1 else 1  # an upper bound of the longest caption
        size = word_cache_bytes(len(self.captions), length, dim)
        on_device = size <= _budget_bytes("T2I_WORD_CACHE_MB", WORD_CACHE_BUDGET_MB)
        on_disk = (self.key is not None and self.base.cache_embeddings
                   and size <= _budget_bytes("T2I_WORD_DISK_CACHE_MB", WORD_DISK_CACHE_MB))
        self.words_cached = on_device or on_disk
        if on_disk:
            assert self.key is not None
            table = cached_word_features(self.base, self.captions, self.key, tokens, chunk=self.chunk)
            self.word_table = table.to(self.device) if on_device else table  # else it stays in host memory
        elif on_device:
            self.word_table = compute_word_features(self.base, tokens, chunk=self.chunk, device=self.device)
        else:
            self.tokens = tokens.to(self.device)


def caption_cache_key(resolved: ExperimentConfig) -> dict[str, Any]:
    """What the cached caption embeddings depend on (the encoder's weights are fingerprinted too)."""
    return {"data": {"name": resolved.data.name, "options": resolved.data.options, "split": resolved.data.train_split},
            "encoder": {"name": resolved.text_encoder.name, "options": resolved.text_encoder.options}}
