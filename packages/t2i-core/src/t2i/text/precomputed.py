"""``precomputed``: embeddings computed elsewhere, one row per caption, read from a file.

Formats (chosen by the file's suffix):
- ``.pt`` / ``.pth``: a dict ``{"captions": list[str], "embeddings": float tensor (N, D)}``, read with
  ``torch.load(weights_only=True)``;
- ``.npz``: arrays ``captions`` (strings) and ``embeddings`` ``(N, D)``;
- ``.npy``: the ``(N, D)`` embeddings, with the captions beside it in ``<same name>.txt``, one per line
  (UTF-8), in the same order;
- ``.pickle`` / ``.pkl``: a dict ``{"captions": [...], "embeddings": array (N, D)}``, read with the
  restricted unpickler of :mod:`t2i.data.safe_pickle` (plain data and numpy arrays only, never code).

Frozen. :meth:`tokenize` looks each caption up and returns its rows; :meth:`forward` is the identity. A
caption that is not in the file is a :class:`~t2i.errors.UsageError`. When a caption occurs more than once
in the file, its first row is used. The table is not in ``state_dict()`` (checkpoints stay small):
``extra_state()`` records the file and the sha256 of its contents, and restoring a checkpoint against a
file whose contents changed is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import TextEncoder

__all__ = ["PrecomputedConfig", "Precomputed", "read_embeddings"]

_NEEDS_PATH = "precomputed text encoder needs -T path=FILE (.npy with a captions list beside it, or .pt)"
SUFFIXES = (".pt", ".pth", ".npz", ".npy", ".pickle", ".pkl")


@dataclass
class PrecomputedConfig:
    path: str = field(default="", metadata={"help": "embeddings file: .pt/.pth {captions, embeddings}, .npz, or .npy with <name>.txt captions beside it"})

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError(_NEEDS_PATH)


def read_embeddings(path: str | Path) -> tuple[list[str], Tensor]:
    """``path`` -> (captions, float32 embeddings ``(N, D)``). Raises :class:`UsageError` for a bad file."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"precomputed embeddings {path}: unsupported suffix '{path.suffix}' (use {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise UsageError(f"precomputed embeddings {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, Mapping) or "captions" not in data or "embeddings" not in data:
                raise UsageError(f"precomputed embeddings {path}: expected a dict with 'captions' and 'embeddings'")
            captions, emb = data["captions"], torch.as_tensor(data["embeddings"])
        elif suffix in (".pickle", ".pkl"):
            from ..data.safe_pickle import load_pickle

            data = load_pickle(path)
            if not isinstance(data, Mapping) or "captions" not in data or "embeddings" not in data:
                raise UsageError(f"precomputed embeddings {path}: expected a dict with 'captions' and 'embeddings'")
            captions, emb = list(data["captions"]), torch.from_numpy(np.asarray(data["embeddings"]).copy())
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                if "captions" not in arrays or "embeddings" not in arrays:
                    raise UsageError(f"precomputed embeddings {path}: expected arrays 'captions' and 'embeddings'")
                captions, emb = arrays["captions"].tolist(), torch.from_numpy(arrays["embeddings"].copy())
        else:
            listing = path.with_suffix(".txt")
            if not listing.is_file():
                raise UsageError(f"precomputed embeddings {path}: the captions list {listing.name} is not beside it")
            captions = listing.read_text(encoding="utf-8").splitlines()
            emb = torch.from_numpy(np.load(path, allow_pickle=False).copy())
    except UsageError:
        raise
    except Exception as exc:  # pickle, zip and numpy errors for a file that is not what it claims
        raise UsageError(f"precomputed embeddings {path}: cannot read it ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(captions, (list, tuple)) or not all(isinstance(c, str) for c in captions):
        raise UsageError(f"precomputed embeddings {path}: 'captions' must be a list of strings")
    if emb.ndim != 2 or not (emb.is_floating_point() or emb.dtype in (torch.int32, torch.int64)):
        raise UsageError(f"precomputed embeddings {path}: 'embeddings' must be a 2-d float array, got {emb.dtype} {tuple(emb.shape)}")
    if emb.shape[0] != len(captions) or emb.shape[1] < 1:
        raise UsageError(f"precomputed embeddings {path}: {len(captions)} captions but embeddings of shape {tuple(emb.shape)}")
    emb = emb.float()
    if not torch.isfinite(emb).all():
        raise UsageError(f"precomputed embeddings {path}: the embeddings contain NaN or infinite values")
    return list(captions), emb


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if path.suffix.lower() == ".npy":
        h.update(path.with_suffix(".txt").read_bytes())
    return h.hexdigest()


class Precomputed(TextEncoder):
    """Embeddings read from a file; ``tokenize`` looks captions up, ``forward`` is the identity."""

    trainable = False

    def __init__(self, cfg: PrecomputedConfig | None = None):
        super().__init__()
        self.cfg = cfg or PrecomputedConfig()
        self.path = Path(self.cfg.path).expanduser()
        captions, self._table = read_embeddings(self.path)
        self.sha256 = _sha256(self.path)
        self.dim = int(self._table.shape[1])
        self._rows: dict[str, int] = {}
        for i, caption in enumerate(captions):
            self._rows.setdefault(caption, i)

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        rows = []
        for caption in captions:
            row = self._rows.get(caption)
            if row is None:
                shown = caption if len(caption) <= 60 else caption[:57] + "..."
                raise UsageError(f"caption {shown!r} is not in the precomputed embeddings {self.path}")
            rows.append(row)
        return self._table[torch.tensor(rows, dtype=torch.long)]

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"precomputed: expected rows of tokenize() with {self.dim} columns, got shape {tuple(tokens.shape)}")
        return tokens

    def extra_state(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("sha256")
        if saved and saved != self.sha256:
            raise UsageError(
                f"precomputed embeddings {self.path} differ from the file the checkpoint was made with "
                f"({state.get('path')}, sha256 {saved[:12]} vs {self.sha256[:12]} now)"
            )
