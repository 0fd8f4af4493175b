"""Caption embeddings for the training step, looked up by caption id."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ExperimentConfig
from ..interfaces import TextEncoder
from ..text.cache import cached_embeddings

__all__ = ["CaptionTable", "caption_cache_key"]


class CaptionTable:
    """Every distinct caption of a split, ready for the text encoder: ``table(ids)`` -> ``(B, dim)``.

    A frozen encoder is run once over all captions (embeddings kept on the device; cached on disk when the
    encoder asks for it, keyed by ``key``); a trainable one keeps the tokenised captions and runs every
    step, through ``train_encoder`` (its DistributedDataParallel wrapper on several processes).
    """

    def __init__(self, encoder: TextEncoder, captions: list[str], device: torch.device,
                 key: dict[str, Any] | None = None, *, train_encoder: nn.Module | None = None, chunk: int = 1024):
        self.encoder = encoder
        self.frozen = not encoder.trainable
        if self.frozen and encoder.cache_embeddings and key is not None:  # expensive encoders: on disk, once
            self.table = cached_embeddings(encoder, captions, key, chunk=chunk).to(device)
            return
        tokens = encoder.tokenize(captions).to(device)
        if self.frozen:
            with torch.no_grad():
                self.table = torch.cat([encoder(tokens[i : i + chunk]) for i in range(0, len(captions), chunk)]).float()
        else:
            self.table = tokens
            self.encoder = train_encoder if train_encoder is not None else encoder

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids] if self.frozen else self.encoder(self.table[ids])


def caption_cache_key(resolved: ExperimentConfig) -> dict[str, Any]:
    """What the cached caption embeddings depend on (the encoder's weights are fingerprinted too)."""
    return {"data": {"name": resolved.data.name, "options": resolved.data.options, "split": resolved.data.train_split},
            "encoder": {"name": resolved.text_encoder.name, "options": resolved.text_encoder.options}}
