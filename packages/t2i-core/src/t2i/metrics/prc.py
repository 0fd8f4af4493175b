"""``prc``: improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models"), on a configurable feature extractor.

Each set of feature vectors stands for a manifold: the union of balls centred at its points, each ball's
radius the distance from its centre to its ``k``-th nearest neighbour in the same set (``k = 3``; the
point itself does not count). Then

- ``precision``: the fraction of generated images whose features fall inside the real manifold
  (are they realistic?);
- ``recall``: the fraction of real images whose features fall inside the generated manifold (is the
  variety of the data covered?).

Both are in ``[0, 1]``; a point on a ball's boundary counts as inside. Distances are Euclidean, computed in
float64 from ``|a|^2 - 2 a.b + |b|^2`` in blocks of ``batch_size`` rows, so memory grows with
``batch_size x n`` rather than ``n^2`` (the reference code does the same; it uses VGG-16 fc2 features).

Protocol. From the reference split, take the first ``n`` images of a seeded permutation (all, if fewer) and
one seeded caption of each; generate one image per caption; compare the ``n`` generated images with those
``n`` real ones (whose features are cached on disk, like FID's) in the feature space of ``extractor``
(``inception``: pool3, 2048-d; ``dinov2``; ``timm:<model>``), whose weights are resolved like every
pretrained network's (``weights=PATH``, then the extractor's environment variable and caches).
``n_generated = N`` generates exactly ``N`` images instead, cycling the split's captions
(:func:`t2i.metrics.cycled_captions`), against the same ``min(n, split)`` real ones. :meth:`PrecisionRecall.compare` compares two image sets
without a generator (``t2i eval FOLDER --reference ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, ImageSet, ImageSetMetric
from . import CYCLE_RULE, Generate, cycled_captions, generated_rows, seeded_caption, seeded_order
from .features import FeatureExtractor, features_of, make_extractor
from .image_sets import cached_features, extract_all, tensor_images

__all__ = ["PrecisionRecallConfig", "PrecisionRecall", "knn_radii", "manifold_coverage", "precision_recall",
           "build_extractor"]


@dataclass
class PrecisionRecallConfig:
    """Options of the ``prc`` metric."""

    n: int = field(default=5000, metadata={"help": "generated images, compared with as many real ones"})
    n_generated: int = field(
        default=0, metadata={"help": "generate exactly this many (cycling the split's captions), against min(n, split) real (0: n)"}
    )
    k: int = field(default=3, metadata={"help": "neighbourhood size: a ball reaches the k-th nearest neighbour"})
    extractor: str = field(default="inception", metadata={"help": "feature space: inception | dinov2 | timm:<model>"})
    feature: str = field(default="", metadata={"help": "which feature of the extractor ('' = its first: pool3, ...)"})
    weights: str = field(default="", metadata={"help": "extractor weights file ('' = env var, caches, download)"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of reference images and captions"})
    batch_size: int = field(default=64, metadata={"help": "images per extractor forward pass"})
    distance_batch: int = field(default=1000, metadata={"help": "rows per block of the pairwise distances"})
    device: str = field(default="auto", metadata={"help": "where the extractor runs: auto | cpu | cuda"})
    cache_dir: str = field(default="", metadata={"help": "real-feature cache ('' = $T2I_CACHE_DIR, else ~/.cache/t2i)"})

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.n < self.k + 1:
            raise ValueError(f"n must be > k = {self.k}, got {self.n}")
        if self.n_generated and self.n_generated < self.k + 1:
            raise ValueError(f"n_generated must be 0 (use n) or > k = {self.k}, got {self.n_generated}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.batch_size < 1 or self.distance_batch < 1:
            raise ValueError(f"batch_size and distance_batch must be >= 1, got {self.batch_size}, {self.distance_batch}")


# -- the computation ---------------------------------------------------------------------------------
def _squared_distances(a: Tensor, b: Tensor, b_norms: Tensor) -> Tensor:
    """``(len(a), len(b))`` squared Euclidean distances (float64, clamped at 0)."""
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + b_norms[None, :]
    return d.clamp_(min=0)


def knn_radii(x: Tensor, k: int = 3, batch_size: int = 1000) -> Tensor:
    """Squared distance from each row of ``x`` to its ``k``-th nearest other row (float64, ``(N,)``)."""
    x = x.double()
    if len(x) <= k:
        raise UsageError(f"precision/recall with k = {k} needs more than {k} samples, got {len(x)}")
    norms = (x * x).sum(1)
    parts = []
    for start in range(0, len(x), batch_size):
        d = _squared_distances(x[start : start + batch_size], x, norms)
        parts.append(d.kthvalue(k + 1, dim=1).values)  # the k+1-th smallest: the row itself is the first
    return torch.cat(parts)


def manifold_coverage(queries: Tensor, points: Tensor, radii: Tensor, batch_size: int = 1000) -> Tensor:
    """For each query: is it inside some ball (``points[j]``, squared radius ``radii[j]``)? -> bool ``(M,)``."""
    queries, points = queries.double(), points.double()
    norms = (points * points).sum(1)
    inside = [(_squared_distances(queries[s : s + batch_size], points, norms) <= radii[None, :]).any(1)
              for s in range(0, len(queries), batch_size)]
    return torch.cat(inside) if inside else torch.zeros(0, dtype=torch.bool)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall of ``fake`` feature rows against ``real`` ones (Kynkaanniemi et al. 2019)."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    precision = manifold_coverage(fake, real, knn_radii(real, k, batch_size), batch_size)
    recall = manifold_coverage(real, fake, knn_radii(fake, k, batch_size), batch_size)
    return precision.double().mean().item(), recall.double().mean().item()


# -- the extractor (shared with fd_dinov2) ----------------------------------------------------------
def build_extractor(spec: str, weights: str = "", device: str = "auto") -> FeatureExtractor:
    """``inception`` / ``dinov2`` / ``timm:<model>`` with weights and device; unknown names -> UsageError."""
    from ..device import pick_device

    options: dict[str, Any] = {"device": pick_device(device)}
    if weights:
        options["weights"] = weights
    return make_extractor(spec, **options)


# -- the metric --------------------------------------------------------------------------------------
class PrecisionRecall(ImageSetMetric):
    """Improved precision (realism) and recall (coverage) of generated images, k-NN manifolds in feature space."""

    chunk = 250  # captions per generate() call
    splits_across_ranks = True  # per-image features (t2i.metrics.generated_rows)

    def __init__(self, cfg: PrecisionRecallConfig | None = None):
        self.cfg = cfg or PrecisionRecallConfig()
        self._extractor: FeatureExtractor | None = None

    @property
    def extractor(self) -> FeatureExtractor:
        """The feature extractor (built, and its weights loaded, on first use)."""
        if self._extractor is None:
            self._extractor = build_extractor(self.cfg.extractor, self.cfg.weights, self.cfg.device)
        return self._extractor

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        cfg = self.cfg
        if len(reference) <= cfg.k:
            raise UsageError(f"prc with k = {cfg.k} needs more than {cfg.k} reference images, got {len(reference)}")
        rows = seeded_order(len(reference), cfg.seed)[: cfg.n]
        if cfg.n_generated:
            captions = cycled_captions(reference, cfg.n_generated, cfg.seed)
        else:
            captions = seeded_caption(reference, rows, cfg.seed)
        ex, key, batch = self.extractor, self._feature_key(), cfg.batch_size
        fake = generated_rows(generate, captions, reference.resolution,
                              lambda images: features_of(ex, images, (key,), batch)[key],
                              chunk=self.chunk, align=batch)
        info = {k: v for k, v in reference.info.items() if k != "cache"}
        real = tensor_images(reference.images[torch.from_numpy(rows)],
                             {"source": "dataset", **info, "rows": f"first {len(rows)} of seeded permutation {cfg.seed}"})
        result = self.compare(fake, real)
        result["protocol"].update(
            seed=cfg.seed,
            selection="first n of a seeded permutation of the reference split; one seeded caption each",
            **({"n_generated": cfg.n_generated, "captions": CYCLE_RULE} if cfg.n_generated else {}),
            reference={"size": len(reference), **{k: reference.info[k] for k in ("name", "split") if k in reference.info}},
            resolution=reference.resolution,
        )
        return result

    def _feature_key(self) -> str:
        ex = self.extractor
        key = self.cfg.feature or next(iter(ex.dims))
        if key not in ex.dims:
            raise UsageError(f"extractor {ex.name} has no feature '{key}'; it has {', '.join(ex.dims)}")
        return key

    def compare(self, images: ImageSet | Tensor, reference: ImageSet | None, *, cache_images: bool = False) -> dict[str, Any]:
        """Precision and recall of image set ``images`` (or of their features, already extracted) against
        ``reference`` (whose features are cached)."""
        cfg = self.cfg
        if reference is None:
            raise UsageError("prc compares with reference images: pass a reference folder or data set")
        ex = self.extractor
        key = self._feature_key()
        if isinstance(images, Tensor):
            fake = images
        elif cache_images:
            fake = cached_features(ex, images, batch_size=cfg.batch_size, cache_dir=cfg.cache_dir or None)[1][key]
        else:
            fake = extract_all(ex, images, cfg.batch_size)[key]
        real = cached_features(ex, reference, batch_size=cfg.batch_size, cache_dir=cfg.cache_dir or None)[1][key]
        precision, recall = precision_recall(real.double(), fake.double(), cfg.k, cfg.distance_batch)
        return {
            "prc/precision": precision,
            "prc/recall": recall,
            "protocol": {
                "metric": "prc (improved precision and recall, Kynkaanniemi et al. 2019)",
                "n": len(fake),
                "n_reference": len(real),
                "k": cfg.k,
                "feature": key,
                "distances": "Euclidean, float64; a point on a ball's boundary is inside",
                **ex.protocol(),
            },
        }
