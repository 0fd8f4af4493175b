"""Initialise word vectors from a local GloVe file (Pennington et al. 2014), for ``bow`` and ``gru``.

GloVe files are plain text, one word per line followed by its vector (``glove.6B.300d.txt``: ``the 0.04656
0.21318 ...``). Only the words of the encoder's vocabulary are kept while the file is streamed, so even the
5 GB ``glove.840B.300d.txt`` needs little memory. Words with no GloVe vector (and ``<unk>``) keep a random
vector with the same standard deviation as the GloVe ones; ``<pad>`` stays zero. The vectors end up in the
encoder's ``state_dict``, so a checkpoint does not need the file again.

Nothing is downloaded: get the file from https://nlp.stanford.edu/projects/glove/ and pass
``-T glove=/path/to/glove.6B.300d.txt``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..errors import UsageError

__all__ = ["GloveReport", "read_glove", "glove_init"]


@dataclass
class GloveReport:
    """What a GloVe initialisation did: the file, and how many vocabulary words it covered."""

    path: str
    dim: int
    found: int
    words: int  # vocabulary words that could have a vector (everything but <pad> and <unk>)

    @property
    def coverage(self) -> float:
        return self.found / self.words if self.words else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "dim": self.dim, "found": self.found, "words": self.words,
                "coverage": round(self.coverage, 4)}

    def __str__(self) -> str:
        return f"GloVe {Path(self.path).name}: {self.found} of {self.words} words ({self.coverage:.1%}) have a vector"


def read_glove(path: str | Path, vocab: Sequence[str], dim: int) -> dict[str, Tensor]:
    """The ``dim``-d vectors of the words of ``vocab`` found in GloVe file ``path`` (first occurrence wins).

    Raises :class:`UsageError` for a missing file or vectors of another size (naming both sizes).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"GloVe file {path} does not exist (download e.g. glove.6B.300d.txt from "
                         f"https://nlp.stanford.edu/projects/glove/ and pass glove=PATH)")
    wanted = set(vocab)
    found: dict[str, Tensor] = {}
    checked = False
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if len(parts) == 2 and number == 1:  # a word2vec-style header "count dim"
                continue
            if len(parts) < 2:
                continue
            if not checked:
                if len(parts) - 1 != dim:
                    raise UsageError(f"GloVe file {path} has {len(parts) - 1}-d vectors but the encoder's word vectors "
                                     f"are {dim}-d; set the encoder's size to {len(parts) - 1}")
                checked = True
            word = " ".join(parts[:-dim])  # glove.840B has a few "words" with spaces
            if word in wanted and word not in found:
                try:
                    found[word] = torch.tensor([float(v) for v in parts[-dim:]])
                except ValueError:
                    raise UsageError(f"GloVe file {path}, line {number}: not a word followed by {dim} numbers") from None
    if not checked:
        raise UsageError(f"GloVe file {path} holds no vectors")
    return found


@torch.no_grad()
def glove_init(weight: Tensor, vocab: Sequence[str], path: str | Path, skip: Sequence[str] = ()) -> GloveReport:
    """Copy GloVe vectors into the rows of ``weight`` ``(len(vocab), dim)`` for the words of ``vocab``.

    Rows of words not in the file are redrawn from a normal with the GloVe vectors' standard deviation;
    rows of ``skip`` (``<pad>``, ``<unk>``) are left as they are. Warns when fewer than half the words
    are covered (a file for another language or casing).
    """
    dim = weight.shape[1]
    vectors = read_glove(path, vocab, dim)
    candidates = [i for i, w in enumerate(vocab) if w not in skip]
    hits = [i for i in candidates if vocab[i] in vectors]
    if hits:
        table = torch.stack([vectors[vocab[i]] for i in hits])
        std = float(table.std()) if table.numel() > 1 else 1.0
        for i in candidates:
            if vocab[i] not in vectors:
                weight[i].normal_(0.0, std)
        weight[torch.tensor(hits)] = table.to(weight.dtype)
    report = GloveReport(str(path), dim, len(hits), len(candidates))
    if report.words and report.coverage < 0.5:
        warnings.warn(f"{report}: most words keep random vectors", stacklevel=3)
    return report
