"""A disk cache of a frozen text encoder's embeddings, so each data set is encoded once, not once per run.

``<cache>/embeddings/<digest>.safetensors``, where ``<cache>`` is ``cache_dir``, else ``$T2I_CACHE_DIR``,
else ``~/.cache/t2i``, and ``<digest>`` is the sha256 of the caller's key (data set, split, encoder and
their options), the captions in order, and a fingerprint of the encoder (its ``state_dict`` tensors and
``extra_state``). Different weights therefore give a different file. The file's metadata repeats the key,
the caption count, the captions' and the encoder's digests and the sha256 of the table itself; a file
whose metadata or tensor does not match (edited, truncated, another version) is recomputed and replaced,
never reused.

:func:`cached_word_features` does the same for the encoder's word features (``<cache>/words/``): float16
features ``(N, L, word_dim)`` and a bool mask ``(N, L)``, ``L`` the longest caption, keyed like the sentence
embeddings plus what makes word tables differ: the tokens' width (the encoder's maximum length) and the
dtype. The engine uses it below a size cap (:mod:`t2i.engine.captions` says which, and what it costs on COCO).
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
from ..interfaces import TextEncoder, WordFeatures
from ..paths import default_cache_dir

__all__ = ["cached_embeddings", "cached_word_features", "compute_word_features", "embeddings_path",
           "encoder_fingerprint"]

_FORMAT = "t2i-embeddings-v1"
_WORDS_FORMAT = "t2i-words-v1"


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


def embeddings_path(key: Mapping[str, Any], captions_sha: str, fingerprint: str, cache_dir: str | os.PathLike | None = None,
                    *, kind: str = "embeddings") -> Path:
    """Where the embeddings (``kind="words"``: the word features) of (key, captions, encoder) are (or will be) stored."""
    fmt = _WORDS_FORMAT if kind == "words" else _FORMAT
    digest = hashlib.sha256(f"{fmt}\n{_key_json(key)}\n{captions_sha}\n{fingerprint}".encode()).hexdigest()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / kind / f"{digest}.safetensors"


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
    specs = {"embeddings": (torch.float32, (len(captions), encoder.dim))}
    stored = _read(path, expected, specs)
    if stored is None:
        with cache_lock(path):  # parallel jobs encode once; the others wait, then read the file
            stored = _read(path, expected, specs)
            if stored is None:
                table = _compute(encoder, captions, chunk)
                if tuple(table.shape) != (len(captions), encoder.dim):
                    raise ValueError(f"text encoder returned embeddings of shape {tuple(table.shape)}, "
                                     f"expected ({len(captions)}, {encoder.dim})")
                stored = {"embeddings": table}
                _write(path, stored, expected)
    return stored["embeddings"]


def cached_word_features(
    encoder: TextEncoder,
    captions: list[str],
    key: Mapping[str, Any],
    tokens: Tensor,
    cache_dir: str | os.PathLike | None = None,
    *,
    chunk: int = 1024,
) -> WordFeatures:
    """Word features of ``captions`` on the CPU (float16, padded to the longest caption), read from the cache
    or computed by :func:`compute_word_features` and stored there.

    ``tokens``: ``encoder.tokenize(captions)`` (its width, the encoder's maximum length, is part of the key);
    ``encoder`` must be frozen and have word features; ``key`` as for :func:`cached_embeddings`.
    """
    if encoder.trainable or not encoder.word_dim:
        raise ValueError("cached_word_features needs a frozen text encoder with word features")
    captions = list(captions)
    width = int(tokens.shape[-1]) if tokens.dim() > 1 else 1
    full_key = {**key, "words": {"max_length": width, "dtype": "float16"}}
    fingerprint = encoder_fingerprint(encoder)
    captions_sha = _captions_sha256(captions)
    path = embeddings_path(full_key, captions_sha, fingerprint, cache_dir, kind="words")
    expected = {
        "format": _WORDS_FORMAT,
        "key": _key_json(full_key),
        "count": str(len(captions)),
        "captions_sha256": captions_sha,
        "encoder_sha256": fingerprint,
        "word_dim": str(encoder.word_dim),
    }
    count, dim = len(captions), encoder.word_dim
    specs = {"features": (torch.float16, (count, None, dim)), "mask": (torch.bool, (count, None))}
    stored = _read_words(path, expected, specs)
    if stored is None:
        with cache_lock(path):
            stored = _read_words(path, expected, specs)
            if stored is None:
                words = compute_word_features(encoder, tokens, chunk=chunk)
                stored = {"features": words.features, "mask": words.mask}
                _write(path, stored, expected)
    return WordFeatures(stored["features"], stored["mask"])


def _read_words(path: Path, expected: dict[str, str], specs: Mapping[str, Any]) -> dict[str, Tensor] | None:
    stored = _read(path, expected, specs)
    if stored is None or stored["features"].shape[1] != stored["mask"].shape[1]:
        return None
    return stored


@torch.no_grad()
def compute_word_features(encoder: TextEncoder, tokens: Tensor, *, chunk: int = 1024,
                          device: torch.device | str = "cpu") -> WordFeatures:
    """The word features of every row of ``tokens`` in one table on ``device``: float16 features ``(N, L, word_dim)``
    and a bool mask, ``L`` the longest caption (shorter ones padded with zeros, mask ``False``). The encoder runs
    ``chunk`` rows at a time on its own device, in eval mode."""
    own = next(encoder.parameters(), torch.empty(0)).device
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [encoder.forward_words(tokens[i : i + chunk].to(own))[1] for i in range(0, len(tokens), chunk)]
    finally:
        encoder.train(was_training)
    count, dim = len(tokens), encoder.word_dim or 0
    longest = max((p.features.shape[1] for p in parts), default=1)
    features = torch.zeros(count, longest, dim, dtype=torch.float16, device=device)
    mask = torch.zeros(count, longest, dtype=torch.bool, device=device)
    start = 0
    for p in parts:
        n, length = p.features.shape[:2]
        features[start : start + n, :length] = p.features.to(device, torch.float16)
        mask[start : start + n, :length] = p.mask.to(device)
        start += n
    return WordFeatures(features, mask)


def _tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 of the tensors' bytes, in name order (one tensor: the sha256 of its bytes)."""
    h = hashlib.sha256()
    for _, t in sorted(tensors.items()):
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy of the bytes
    return h.hexdigest()


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


def _digest_field(tensors: Mapping[str, Any]) -> str:
    return "embeddings_sha256" if set(tensors) == {"embeddings"} else "tensors_sha256"


def _write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Save atomically (a uniquely named temporary file beside ``path``, then a rename), with the tensors' sha256."""
    from safetensors.torch import save_file

    tensors = {name: t.contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={**metadata, _digest_field(tensors): _tensors_sha256(tensors)})


def _read(path: Path, expected: dict[str, str],
          specs: Mapping[str, tuple[torch.dtype, tuple[int | None, ...]]]) -> dict[str, Tensor] | None:
    """The stored tensors, or ``None`` when the file is missing, unreadable or does not match in every field:
    the metadata, the names, each tensor's dtype and shape (``specs``; ``None``: any size) and the bytes."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if any(metadata.get(k) != v for k, v in expected.items()) or set(f.keys()) != set(specs):
                return None
            tensors = {name: f.get_tensor(name) for name in specs}
    except Exception:  # truncated, garbled or foreign: whatever safetensors raises, compute again
        return None
    for name, (dtype, shape) in specs.items():
        t = tensors[name]
        if t.dtype != dtype or t.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
            return None
    if metadata.get(_digest_field(tensors)) != _tensors_sha256(tensors):  # bytes changed after writing
        return None
    return tensors
