"""Reference statistics in a file: the ``.npz`` of ``mu`` / ``sigma`` that pytorch-fid and DF-GAN's released
statistics use, read by ``fid`` (``reference_stats=PATH``, ``t2i eval FOLDER --reference stats.npz``) and
written by ``t2i eval ... --save-stats PATH``.

The file holds ``mu`` (D,) and ``sigma`` (D, D), float64: the mean and unbiased covariance of the reference
images' pool3 features. Files t2i writes add ``t2i_n`` (the image count) and ``t2i_protocol`` (a JSON string:
extractor, weights sha256, resize, reference images), which pytorch-fid ignores. When a file carries them and
its weights sha256 or its mode (resize) differs from the extractor's, reading it is a UsageError: its
statistics come from another network or another preprocessing. A file without them (pytorch-fid's, DF-GAN's) is taken on trust, and the protocol says so.

KID and precision/recall need the reference features themselves, not a Gaussian fitted to them, so they
refuse such a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..fileio import atomic_path
from ..interfaces import ImageSet
from .features import FeatureExtractor
from .frechet import RunningStats

__all__ = ["GaussianStats", "load_reference_stats", "save_reference_stats", "is_stats_file"]


@dataclass
class GaussianStats:
    """``mean`` and ``cov`` (float64) of ``n`` feature vectors (``n = 0``: unknown), as :class:`RunningStats` has them."""

    mean: Tensor
    cov: Tensor
    n: int = 0


def is_stats_file(path: str | os.PathLike) -> bool:
    """Does ``path`` name a statistics file (``.npz``) rather than images?"""
    return str(path).lower().endswith(".npz")


def load_reference_stats(
    path: str | os.PathLike, extractor: FeatureExtractor, feature: str = "pool3"
) -> tuple[GaussianStats, dict[str, Any]]:
    """``(statistics, what the protocol records about the file)``; unreadable or mismatched -> UsageError."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"reference statistics {file} do not exist")
    try:
        with np.load(file, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
            n = int(data["t2i_n"]) if "t2i_n" in data else 0
            written = json.loads(str(data["t2i_protocol"])) if "t2i_protocol" in data else None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot read reference statistics {file}: {exc} (expected an .npz with mu and sigma)") from None
    dim = extractor.dims.get(feature)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or (dim is not None and mu.shape[0] != dim):
        raise UsageError(f"reference statistics {file}: mu {mu.shape} and sigma {sigma.shape} do not fit {feature} ({dim})")
    ours = extractor.protocol().get("weights_sha256")
    if written is not None and ours and written.get("weights_sha256") not in (None, ours):
        raise UsageError(f"reference statistics {file} were computed with weights {written['weights_sha256'][:12]}, "
                         f"not the {ours[:12]} this metric uses")  # fmt: skip
    mode = extractor.protocol().get("mode")
    if written is not None and mode and written.get("mode", "legacy_tensorflow") != mode:
        raise UsageError(f"reference statistics {file} were computed in mode {written.get('mode', 'legacy_tensorflow')}, "
                         f"not the {mode} this metric uses")  # fmt: skip
    source = {
        "file": str(file.resolve()), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "n": n or "unknown",
        "written_by": written if written is not None else "not t2i (mu/sigma only: extractor and resize not recorded)",
    }  # fmt: skip
    return GaussianStats(torch.from_numpy(mu), torch.from_numpy(sigma), n), source


def save_reference_stats(
    extractor: FeatureExtractor, images: ImageSet, path: str | os.PathLike, *, batch_size: int = 64, feature: str = "pool3"
) -> Path:
    """Write ``mu`` / ``sigma`` of ``images``' ``feature`` (pytorch-fid's format, plus t2i's record) to ``path``."""
    if images.count < 2:
        raise UsageError(f"reference statistics need at least 2 images, got {images.count}")
    stats = RunningStats()
    for batch in images.batches(batch_size):
        stats.update(extractor(batch)[feature])
    record = {**extractor.protocol(), "feature": feature, "images": images.describe()}
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, mu=stats.mean.numpy(), sigma=stats.cov.numpy(), t2i_n=np.asarray(stats.n),
                 t2i_protocol=np.asarray(json.dumps(record, sort_keys=True, default=str)))  # fmt: skip
    return path
