"""A trainable head between any text encoder and the networks: a projection or a small MLP.

Set with the text encoder's options, whatever the encoder: ``-T head=mlp -T head_dim=256`` (TOML:
``[text_encoder.options] head = "mlp"``). The engine (:func:`t2i.engine.components.build_text_encoder`)
takes ``head``, ``head_dim`` and ``head_dropout`` out of the options before the encoder sees them and wraps
the encoder in :class:`HeadedTextEncoder`.

- ``head = "linear"``: ``Linear(encoder.dim, head_dim)``;
- ``head = "mlp"``: an MLP ``Linear -> LayerNorm -> ReLU -> Dropout``.

The head is trained with the discriminator's optimiser (as a trainable encoder is); the encoder under it
stays as it is (a frozen one stays frozen). With a frozen encoder, its embeddings are computed once per
run in :meth:`HeadedTextEncoder.tokenize` (not in the on-disk cache) and only the head runs every step.
Dropout is active in training mode only: call ``.eval()`` for inference.

Word features pass through the head unchanged: a trainable encoder's :meth:`~HeadedTextEncoder.forward_words`
returns the head's sentence embedding and the encoder's word features. With a frozen encoder the tokens are
its sentence embeddings, so the headed encoder has no word features (``word_dim = None``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..interfaces import TextEncoder, WordFeatures

__all__ = ["HEAD_OPTIONS", "TextHeadConfig", "HeadedTextEncoder", "text_head", "fit_encoder"]

HEAD_OPTIONS = ("head", "head_dim", "head_dropout")


@dataclass
class TextHeadConfig:
    head: Literal["", "linear", "mlp"] = field(default="", metadata={"help": "'' (none), linear, or mlp (Linear, LayerNorm, ReLU, Dropout)"})
    head_dim: int = field(default=0, metadata={"help": "the head's output size (0: the encoder's size)"})
    head_dropout: float = field(default=0.1, metadata={"help": "dropout after the mlp head's ReLU, in training"})

    def __post_init__(self) -> None:
        if self.head_dim < 0:
            raise ValueError(f"head_dim must be >= 0, got {self.head_dim}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")


def fit_encoder(encoder: TextEncoder, captions: Sequence[str], caption_ids: Tensor | None) -> None:
    """``encoder.fit(captions)``, with ``caption_ids`` too when its ``fit`` takes them (see
    :meth:`t2i.interfaces.TextEncoder.fit`); encoders written for the one-argument ``fit`` keep working."""
    if caption_ids is not None and "caption_ids" in inspect.signature(encoder.fit).parameters:
        encoder.fit(captions, caption_ids=caption_ids)
    else:
        encoder.fit(captions)


def text_head(kind: str, in_dim: int, out_dim: int, dropout: float) -> nn.Module:
    """The head module: ``linear`` or ``mlp``."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU(), nn.Dropout(dropout))
    raise ValueError(f"unknown text head {kind!r}; choose linear or mlp")


class HeadedTextEncoder(TextEncoder):
    """``encoder`` followed by a trainable head; ``dim`` is the head's output size."""

    trainable = True

    def __init__(self, encoder: TextEncoder, cfg: TextHeadConfig):
        super().__init__()
        self.base = encoder
        self.cfg = cfg
        self.dim = cfg.head_dim or encoder.dim
        self.word_dim = encoder.word_dim if encoder.trainable else None
        self.head = text_head(cfg.head, encoder.dim, self.dim, cfg.head_dropout)

    def fit(self, captions: Sequence[str], caption_ids: Tensor | None = None) -> None:
        fit_encoder(self.base, captions, caption_ids)

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        tokens = self.base.tokenize(captions)
        if self.base.trainable:
            return tokens
        with torch.no_grad():  # a frozen encoder's embeddings are its tokens here: computed once
            device = next(self.base.parameters(), torch.empty(0)).device
            return self.base(tokens.to(device)).float().cpu()

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.base(tokens) if self.base.trainable else tokens)

    def forward_words(self, tokens: Tensor) -> tuple[Tensor, WordFeatures]:
        if self.word_dim is None:
            return super().forward_words(tokens)
        sentence, words = self.base.forward_words(tokens)
        return self.head(sentence), words

    def on_train_step(self, step: int, images_seen: int) -> None:
        self.base.on_train_step(step, images_seen)

    def extra_state(self) -> dict[str, Any]:
        return {"base": self.base.extra_state(), "head": self.cfg.head}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.base.load_extra_state(state.get("base", {}))
