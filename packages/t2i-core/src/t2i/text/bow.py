"""``bow``: a bag-of-words text encoder with a vocabulary built from the training captions.

Each caption is lower-cased and split into words; the embedding is the mean of its words' vectors.
Trainable (a jointly trained encoder, optimised with the discriminator) or frozen (a fixed
random projection of the word counts: deterministic, needs no pretrained weights, and keeps every word's
information, which is all a caption of the Shapes data carries). ``glove=PATH`` starts the word vectors
from a local GloVe file (:mod:`t2i.text.glove`; ``dim`` must be the file's size): frozen, the embedding is
the mean of the caption's GloVe vectors, the classic baseline.
"""

from __future__ import annotations

import abc
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..interfaces import TextEncoder
from .glove import glove_init

__all__ = ["BagOfWordsConfig", "BagOfWords", "VocabularyEncoder", "words"]

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9']+")


def words(caption: str) -> list[str]:
    """The tokens of a caption: lower-case runs of letters, digits and apostrophes."""
    return _WORD.findall(caption.lower())


@dataclass
class BagOfWordsConfig:
    dim: int = field(default=128, metadata={"help": "embedding size"})
    trainable: bool = field(default=False, metadata={"help": "train the word vectors with D (else a fixed random projection)"})
    max_words: int = field(default=40, metadata={"help": "words kept per caption (longer captions are cut)"})
    min_count: int = field(default=1, metadata={"help": "words seen fewer times in training map to <unk>"})
    glove: str = field(default="", metadata={"help": "initialise word vectors from this GloVe .txt file (dim must match)"})

    def __post_init__(self) -> None:
        if self.dim < 1 or self.max_words < 1 or self.min_count < 1:
            raise ValueError("dim, max_words and min_count must be >= 1")


class VocabularyEncoder(TextEncoder):
    """A text encoder over a word vocabulary built from the training captions (``bow``, ``gru``).

    Subclasses keep ``cfg.max_words``, ``cfg.min_count`` and ``cfg.glove`` and implement :meth:`_build`,
    which (re)creates ``self.embedding`` for a vocabulary; index 0 is ``<pad>``, 1 is ``<unk>``.
    """

    vocab: list[str]
    index: dict[str, int]
    embedding: nn.Embedding
    glove_report: dict[str, Any]

    @abc.abstractmethod
    def _build(self, vocab: list[str]) -> None:
        """Make ``vocab``, ``index`` and a fresh ``embedding`` for ``vocab``."""

    def fit(self, captions: Sequence[str]) -> None:
        counts = Counter(w for c in captions for w in words(c))
        kept = sorted(w for w, n in counts.items() if n >= self.cfg.min_count)
        self._build([PAD, UNK, *kept])
        if self.cfg.glove:
            self.glove_report = glove_init(self.embedding.weight, self.vocab, self.cfg.glove, skip=(PAD, UNK)).as_dict()

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        ids = torch.zeros(len(captions), self.cfg.max_words, dtype=torch.long)
        unk = self.index[UNK]
        for row, caption in enumerate(captions):
            toks = [self.index.get(w, unk) for w in words(caption)[: self.cfg.max_words]]
            if toks:
                ids[row, : len(toks)] = torch.tensor(toks)
        return ids

    def extra_state(self) -> dict[str, Any]:
        return {"vocab": self.vocab, **({"glove": self.glove_report} if self.glove_report else {})}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._build(list(state["vocab"]))
        self.glove_report = dict(state.get("glove", {}))


class BagOfWords(VocabularyEncoder):
    """Mean of word vectors; vocabulary from :meth:`fit`, unknown words map to ``<unk>``."""

    def __init__(self, cfg: BagOfWordsConfig | None = None):
        super().__init__()
        self.cfg = cfg or BagOfWordsConfig()
        self.dim = self.cfg.dim
        self.trainable = self.cfg.trainable
        self.vocab: list[str] = [PAD, UNK]
        self.glove_report: dict[str, Any] = {}
        self.index: dict[str, int] = {}
        self.embedding = nn.Embedding(2, self.dim, padding_idx=0)
        self._build(self.vocab)

    def _build(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.embedding = nn.Embedding(len(self.vocab), self.dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=1.0)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.embedding.weight.requires_grad_(self.trainable)

    def forward(self, tokens: Tensor) -> Tensor:
        vectors = self.embedding(tokens)  # (B, L, dim), zeros at padding
        counts = (tokens != 0).sum(1, keepdim=True).clamp_min(1)
        return vectors.sum(1) / counts
