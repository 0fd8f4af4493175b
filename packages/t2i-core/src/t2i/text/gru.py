"""``gru``: a bidirectional GRU over word vectors, trained from scratch with the discriminator.

The sentence encoder of AttnGAN's DAMSM (Xu et al. 2018) and of the common char/word-RNN baselines: captions are split
into words (lower-case, as ``bow`` does), words are looked up in a vocabulary built from the training
captions (words seen fewer than ``min_count`` times, and words never seen, become ``<unk>``), at most
``max_words`` words are kept, and the caption's embedding is the concatenation of the GRU's last hidden
state in each direction (``dim / 2`` each). Padding never reaches the GRU (packed sequences), so a
caption's embedding does not depend on the other captions of its batch; an empty caption is read as one
``<pad>`` word (a zero vector).

Word features (:meth:`GRUEncoder.forward_words`, for networks and terms that attend to words, as AttnGAN's
do): the GRU's per-word outputs, both directions concatenated, ``(B, L, dim)`` with ``L`` the batch's longest
caption, from the same pass as the sentence embedding (DAMSM's ``words_emb`` and ``sent_emb``). Note the two
sizes: the option ``word_dim`` is the size of the word *vectors fed to* the GRU (the GloVe size); the
encoder's attribute :attr:`GRUEncoder.word_dim` (the interface's) is the size of the word *features it
returns*, ``dim``.

``glove=PATH`` initialises the word vectors from a local GloVe file (``word_dim`` must be the file's
size); ``freeze_words`` then keeps them fixed while the GRU trains. With ``trainable = true`` (default)
the encoder's parameters join the discriminator's optimiser; the generator sees its output detached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..interfaces import WordFeatures
from .bow import PAD, UNK, VocabularyEncoder, token_mask

__all__ = ["GRUConfig", "GRUEncoder"]


@dataclass
class GRUConfig:
    dim: int = field(default=128, metadata={"help": "sentence embedding size (dim / 2 per direction; even)"})
    word_dim: int = field(default=128, metadata={"help": "size of the word vectors fed to the GRU (= the GloVe file's size "
                                                         "when glove is set); the word features it returns are dim"})
    layers: int = field(default=1, metadata={"help": "stacked GRU layers"})
    max_words: int = field(default=40, metadata={"help": "words kept per caption (longer captions are cut)"})
    min_count: int = field(default=1, metadata={"help": "words seen fewer times in training map to <unk>"})
    trainable: bool = field(default=True, metadata={"help": "train with D's optimiser (false: a frozen random encoder)"})
    glove: str = field(default="", metadata={"help": "initialise word vectors from this GloVe .txt file (word_dim must match)"})
    freeze_words: bool = field(default=False, metadata={"help": "keep the word vectors fixed (e.g. GloVe's) while the GRU trains"})

    def __post_init__(self) -> None:
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"dim must be an even number >= 2 (two directions), got {self.dim}")
        if min(self.word_dim, self.layers, self.max_words, self.min_count) < 1:
            raise ValueError("word_dim, layers, max_words and min_count must be >= 1")


class GRUEncoder(VocabularyEncoder):
    """Bi-GRU sentence encoder; vocabulary from :meth:`fit`, unknown words map to ``<unk>``."""

    def __init__(self, cfg: GRUConfig | None = None):
        super().__init__()
        self.cfg = cfg or GRUConfig()
        self.dim = self.cfg.dim
        self.word_dim = self.cfg.dim  # word FEATURES: both directions' outputs (cfg.word_dim is the input vectors')
        self.trainable = self.cfg.trainable
        self.gru = nn.GRU(self.cfg.word_dim, self.dim // 2, num_layers=self.cfg.layers, batch_first=True,
                          bidirectional=True)
        self.glove_report: dict[str, Any] = {}
        self._build([PAD, UNK])

    def _build(self, vocab: list[str]) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.embedding = nn.Embedding(len(self.vocab), self.cfg.word_dim, padding_idx=0)
        self.gru.requires_grad_(self.trainable)
        self.embedding.weight.requires_grad_(self.trainable and not self.cfg.freeze_words)

    def forward(self, tokens: Tensor) -> Tensor:
        return self._run(tokens, words=False)[0]

    def forward_words(self, tokens: Tensor) -> tuple[Tensor, WordFeatures]:
        """The sentence embeddings and the per-word outputs of both directions, ``(B, L, dim)``, from one pass."""
        sentence, words = self._run(tokens, words=True)
        assert words is not None
        return sentence, words

    def _run(self, tokens: Tensor, *, words: bool) -> tuple[Tensor, WordFeatures | None]:
        mask = token_mask(tokens)  # words are left-aligned; an empty caption reads one <pad>
        lengths = mask.sum(1).cpu()
        vectors = self.embedding(tokens)
        packed = pack_padded_sequence(vectors, lengths, batch_first=True, enforce_sorted=False)
        out, hidden = self.gru(packed)  # hidden: (layers * 2, B, dim / 2)
        sentence = torch.cat([hidden[-2], hidden[-1]], dim=1)
        if not words:
            return sentence, None
        longest = int(lengths.max()) if len(lengths) else 0
        features, _ = pad_packed_sequence(out, batch_first=True, total_length=longest)  # zeros at padding
        return sentence, WordFeatures(features, mask[:, :longest])
