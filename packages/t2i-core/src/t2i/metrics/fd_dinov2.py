"""``fd_dinov2``: the Frechet distance in the feature space of DINOv2 (or of any timm model), as recommended
by Stein et al. 2023 ("Exposing flaws of generative model evaluation metrics and their unfair treatment of
diffusion models"): Inception's ImageNet-classifier features judge a generator by ImageNet-class cues, a
self-supervised backbone by what the images look like.

The number is FID's formula on other features: fit a Gaussian to the generated features and one to the real
features and take ``||mu_r - mu_g||^2 + tr(S_r) + tr(S_g) - 2 tr((S_r S_g)^(1/2))``
(:func:`t2i.metrics.frechet.frechet_distance`, float64, streaming statistics). Lower is better; 0 for
identical statistics. The default ``extractor = "dinov2"`` is DINOv2 ViT-L/14 at 224 px
(:mod:`t2i.metrics.timm_features`); ``timm:<model>`` takes any timm model instead.

Protocol. Generate ``n`` images (at most the size of the reference split), one for each caption of the first
``n`` images of a seeded permutation of the reference split (one seeded caption each), and compare them with
all real images of the reference split. ``n_generated = N`` instead generates exactly ``N`` images, cycling
the split in the same seeded order with a new seeded caption on each pass
(:func:`t2i.metrics.cycled_captions`). The real statistics are cached on disk (``<cache>/metrics/``, keyed
by the split's pixels and the extractor's weights and preprocessing) and reused. :meth:`FrechetDino.compare`
compares two image sets without a generator (``t2i eval FOLDER --reference ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..interfaces import CaptionedImages, ImageSet, ImageSetMetric
from . import CYCLE_RULE, Generate, cycled_captions, generated_rows, seeded_caption, seeded_order
from .features import FeatureExtractor, features_of
from .frechet import RunningStats, frechet_distance
from .image_sets import cached_features, split_images
from .prc import build_extractor

__all__ = ["FrechetDinoConfig", "FrechetDino"]


@dataclass
class FrechetDinoConfig:
    """Options of the ``fd_dinov2`` metric."""

    n: int = field(default=10000, metadata={"help": "generated images (capped at the reference split's size)"})
    n_generated: int = field(
        default=0, metadata={"help": "generate exactly this many, cycling the split's captions in a seeded order (0: n, capped)"}
    )
    extractor: str = field(default="dinov2", metadata={"help": "feature space: dinov2 | timm:<model>"})
    weights: str = field(default="", metadata={"help": "extractor weights file ('' = $T2I_DINOV2_WEIGHTS / $T2I_TIMM_WEIGHTS, caches, download)"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    seed: int = field(default=2020, metadata={"help": "seed of the choice of captions (2020, like fid)"})
    device: str = field(default="auto", metadata={"help": "where the extractor runs: auto | cpu | cuda"})
    cache_dir: str = field(default="", metadata={"help": "real-feature cache ('' = $T2I_CACHE_DIR, else ~/.cache/t2i)"})
    cache: bool = field(default=True, metadata={"help": "cache the reference split's statistics on disk"})

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n must be >= 2 (a covariance needs two samples), got {self.n}")
        if self.n_generated < 0 or self.n_generated == 1:
            raise ValueError(f"n_generated must be 0 (use n) or >= 2, got {self.n_generated}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.extractor != "dinov2" and not self.extractor.startswith("timm:"):
            raise ValueError(f"extractor must be dinov2 or timm:<model>, got {self.extractor!r} (for Inception use fid)")


@dataclass
class _Generated:
    """Generated images' feature statistics (from every rank's share), in place of an image set."""

    stats: RunningStats
    identity: dict[str, Any]

    @property
    def count(self) -> int:
        return self.stats.n

    def describe(self) -> dict[str, Any]:
        return dict(self.identity)


class FrechetDino(ImageSetMetric):
    """Frechet distance between generated and real images in DINOv2 (or any timm model's) feature space."""

    higher_is_better = False
    chunk = 250  # captions per generate() call
    splits_across_ranks = True  # per-image features (t2i.metrics.generated_rows)

    def __init__(self, cfg: FrechetDinoConfig | None = None):
        self.cfg = cfg or FrechetDinoConfig()
        self._extractor: FeatureExtractor | None = None

    @property
    def extractor(self) -> FeatureExtractor:
        """The backbone (built, and its weights resolved, on first use)."""
        if self._extractor is None:
            self._extractor = build_extractor(self.cfg.extractor, self.cfg.weights, self.cfg.device)
        return self._extractor

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        if len(reference) < 2:
            raise UsageError(f"fd_dinov2 needs a reference split with at least 2 images, got {len(reference)}")
        if self.cfg.n_generated:
            captions = cycled_captions(reference, self.cfg.n_generated, self.cfg.seed)
            rule: dict[str, Any] = {"n_generated": self.cfg.n_generated, "captions": CYCLE_RULE}
        else:
            rows = seeded_order(len(reference), self.cfg.seed)[: min(self.cfg.n, len(reference))]
            captions = seeded_caption(reference, rows, self.cfg.seed)
            rule = {"n_requested": self.cfg.n,
                    "captions": "first n of a seeded permutation of the reference split, one seeded caption each"}
        ex, batch = self.extractor, self.cfg.batch_size
        key = next(iter(ex.dims))
        features = generated_rows(generate, captions, reference.resolution,
                                  lambda images: features_of(ex, images, (key,), batch)[key],
                                  chunk=self.chunk, align=batch)
        stats = RunningStats()
        for i in range(0, len(features), batch):  # batch by batch, as compare() sums them
            stats.update(features[i : i + batch])
        shape = [len(captions), reference.resolution, reference.resolution, 3]
        result = self.compare(_Generated(stats, {"source": "generated", "shape": shape}), split_images(reference))
        result["protocol"].update(
            rule,
            reference={"size": len(reference), **{k: reference.info[k] for k in ("name", "split", "seed") if k in reference.info}},
            resolution=reference.resolution,
        )
        return result

    def compare(self, images: ImageSet | _Generated, reference: ImageSet | None, *,
                cache_images: bool = False) -> dict[str, Any]:
        """FD of image set ``images`` (or of generated images' statistics) against ``reference`` (whose statistics
        are cached on disk)."""
        if reference is None:
            raise UsageError("fd_dinov2 compares with reference images: pass a reference folder or data set")
        if images.count < 2 or reference.count < 2:
            raise UsageError(f"fd_dinov2 needs at least 2 images on each side, got {images.count} and {reference.count}")
        ex, cfg = self.extractor, self.cfg
        key = next(iter(ex.dims))
        cache_dir = cfg.cache_dir or None
        if isinstance(images, _Generated):
            fake = images.stats
        elif cache_images and cfg.cache:
            fake = cached_features(ex, images, batch_size=cfg.batch_size, cache_dir=cache_dir)[0][key]
        else:
            fake = RunningStats()
            for batch in images.batches(cfg.batch_size):
                fake.update(ex(batch)[key])
        stats, _, cache = cached_features(ex, reference, batch_size=cfg.batch_size, cache_dir=cache_dir, use_cache=cfg.cache)
        real = stats[key]
        return {
            "fd_dinov2": frechet_distance(fake.mean, fake.cov, real.mean, real.cov),
            "protocol": {
                "metric": "fd_dinov2 (Frechet distance in a self-supervised feature space, Stein et al. 2023)",
                "n": fake.n,
                "n_reference": real.n,
                "images": images.describe(),
                "reference_images": reference.describe(),
                "reference_cache": cache if cfg.cache else "off",
                "seed": cfg.seed,
                "statistics": "float64 streaming mean and unbiased covariance; trace term from eigvalsh",
                **ex.protocol(),
            },
        }
