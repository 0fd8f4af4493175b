"""A disk cache of a frozen text encoder's embeddings, so each data set is encoded once, not once per run.

``<cache>/embeddings/<digest>.safetensors``, where ``<cache>`` is ``cache_dir``, else ``$T2I_CACHE_DIR``,
else ``~/.cache/t2i``, and ``<digest>`` is the sha256 of the caller's key (data set, split, encoder and
their options), the captions in order, and a fingerprint of the encoder (its ``state_dict`` tensors and
``extra_state``). Different weights therefore give a different file. The file's metadata repeats the key,
the caption count, the captions' and the encoder's digests and the sha256 of the table itself; a file
whose metadata or tensor does not match (edited, truncated, another version) is recomputed and replaced,
never reused.

Word features are not stored here: a frozen encoder's are kept on the device when small and recomputed per
batch otherwise (:mod:`t2i.engine.captions` says why, with what caching them would cost on COCO).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..fileio import atomic_path, cache_lock
from ..interfaces import TextEncoder
from ..paths import default_cache_dir

__all__ = ["cached_embeddings", "embeddings_path", "encoder_fingerprint"]

_FORMAT = "t2i-embeddings-v1"


def encoder_fingerprint(encoder: TextEncoder) -> str:
    """sha256 of the encoder's class, ``state_dict`` (name, dtype, shape and bytes of each tensor) and ``extra_state``."""
    h = hashlib.sha256()
    cls = type(encoder)
    h.update(f"{cls.__module__}.{cls.__qualname__};dim={encoder.dim};".encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(encoder.extra_state(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def _captions_sha256(captions: Sequence[str]) -> str:
    h = hashlib.sha256()
    for c in captions:
        data = c.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: ["ab", "c"] != ["a", "bc"]
        h.update(data)
    return h.hexdigest()


def _key_json(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def embeddings_path(key: Mapping[str, Any], captions_sha: str, fingerprint: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the embeddings of (key, captions, encoder) are (or will be) stored."""
    digest = hashlib.sha256(f"{_FORMAT}\n{_key_json(key)}\n{captions_sha}\n{fingerprint}".encode()).hexdigest()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "embeddings" / f"{digest}.safetensors"


def cached_embeddings(
    encoder: TextEncoder,
    captions: list[str],
    key: Mapping[str, Any],
    cache_dir: str | os.PathLike | None = None,
    *,
    chunk: int = 1024,
) -> Tensor:
    """Float32 ``(N, dim)`` embeddings of ``captions`` (CPU), read from the cache or computed and stored there.

    ``encoder`` must be frozen (``trainable = False``); it is run in eval mode under ``no_grad`` on the
    device of its parameters (CPU when it has none), ``chunk`` captions at a time.
    ``key`` names what is encoded, e.g. ``{"data": ..., "split": ..., "encoder": ...}``; JSON-serialisable.
    """
    if encoder.trainable:
        raise ValueError("cached_embeddings needs a frozen text encoder (trainable = False)")
    captions = list(captions)
    fingerprint = encoder_fingerprint(encoder)
    captions_sha = _captions_sha256(captions)
    path = embeddings_path(key, captions_sha, fingerprint, cache_dir)
    expected = {
        "format": _FORMAT,
        "key": _key_json(key),
        "count": str(len(captions)),
        "captions_sha256": captions_sha,
        "encoder_sha256": fingerprint,
        "dim": str(encoder.dim),
    }
    table = _read(path, expected, len(captions), encoder.dim)
    if table is None:
        with cache_lock(path):  # parallel jobs encode once; the others wait, then read the file
            table = _read(path, expected, len(captions), encoder.dim)
            if table is None:
                table = _compute(encoder, captions, chunk)
                if tuple(table.shape) != (len(captions), encoder.dim):
                    raise ValueError(f"text encoder returned embeddings of shape {tuple(table.shape)}, "
                                     f"expected ({len(captions)}, {encoder.dim})")
                _write(path, table, {**expected, "embeddings_sha256": _table_sha256(table)})
    return table


def _table_sha256(table: Tensor) -> str:
    return hashlib.sha256(table.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _compute(encoder: TextEncoder, captions: list[str], chunk: int) -> Tensor:
    if not captions:
        return torch.empty(0, encoder.dim)
    device = next(encoder.parameters(), torch.empty(0)).device
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            parts = [
                encoder(encoder.tokenize(captions[i : i + chunk]).to(device)).float().cpu()
                for i in range(0, len(captions), chunk)
            ]
    finally:
        encoder.train(was_training)
    return torch.cat(parts).contiguous()


def _write(path: Path, table: Tensor, metadata: dict[str, str]) -> None:
    """Save atomically: a uniquely named temporary file beside ``path``, then a rename."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"embeddings": table.contiguous()}, str(tmp), metadata=metadata)


def _read(path: Path, expected: dict[str, str], count: int, dim: int) -> Tensor | None:
    """The stored table, or ``None`` when the file is missing, unreadable or does not match in every field."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if any(metadata.get(k) != v for k, v in expected.items()) or set(f.keys()) != {"embeddings"}:
                return None
            table = f.get_tensor("embeddings")
    except Exception:  # truncated, garbled or foreign: whatever safetensors raises, compute again
        return None
    if table.dtype != torch.float32 or tuple(table.shape) != (count, dim):
        return None
    if metadata.get("embeddings_sha256") != _table_sha256(table):  # bytes changed after writing
        return None
    return table
