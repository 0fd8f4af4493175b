"""``diversity``: mode collapse as a number, on any data set (no attributes needed).

Feature space: pixels. Each image is taken as RGB in ``[0, 1]``, area-resized to at most
:data:`FEATURE_SIZE` px, and the distance between two images is the root-mean-square difference of their
values (0: identical; 1: black against white everywhere). There is no learned extractor, so the number needs
no download, means the same on every data set, and at 32 and 64 px alike. Its blind spot: noise counts as
variety, so read it next to an accuracy or quality metric.

Protocol. Walk a seeded permutation of the reference split, take one seeded caption of each image and keep
it if it is new, until ``n_captions`` distinct captions; generate ``per_caption`` images of each. Then:

- ``diversity/within_caption``: mean distance between two generated images of the same caption;
- ``diversity/between_captions``: mean distance between two generated images of different captions;
- ``diversity/real_between_captions``: the same for the real images those captions came from (one each);
- ``diversity/real_within_caption``: mean distance between real images that carry the same caption (up to
  ``per_caption`` of them, over the chosen captions that have two or more); left out when none has;
- ``diversity/collapse_score`` = ``between_captions / real_between_captions``.

Why the captions are compared with each other. On Shapes a caption fixes every attribute, so real images
of one caption are identical (``real_within_caption`` is 0) and a perfect generator has a
``within_caption`` near 0 too: variety *within* a caption is not what the data asks for there. The
collapse seen in practice is *across* captions: every caption gives the same blob or canvas. The
``collapse_score`` measures that: near 0, all captions give the same image (mode collapse); near 1,
generated images differ between captions as much as real ones do; well above 1, they differ more than
real ones, which is noise or artefacts, not health. A generator that varies with the noise but ignores
the caption is not collapsed and scores near 1 too; it shows as ``within_caption`` close to
``between_captions`` (on Shapes it should be near 0), and as chance in ``shapes_accuracy``. On data sets
where one caption has many real images, compare ``within_caption`` with ``real_within_caption``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric
from . import Generate, generated_rows, seeded_caption, seeded_order

__all__ = ["FEATURE_SIZE", "DiversityConfig", "Diversity", "pixel_features", "rms_distances"]

FEATURE_SIZE = 64


@dataclass
class DiversityConfig:
    """Options of the ``diversity`` metric."""

    n_captions: int = field(default=50, metadata={"help": "distinct reference captions to generate from"})
    per_caption: int = field(default=8, metadata={"help": "images generated per caption (different noise)"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of reference images and captions"})

    def __post_init__(self) -> None:
        if self.n_captions < 2:
            raise ValueError(f"n_captions must be >= 2, got {self.n_captions}")
        if self.per_caption < 2:
            raise ValueError(f"per_caption must be >= 2, got {self.per_caption}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def pixel_features(images: Tensor) -> Tensor:
    """uint8 ``(N, R, R, 3)`` -> float64 ``(N, D)``: RGB in ``[0, 1]``, area-resized to <= FEATURE_SIZE px."""
    x = images.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-1] > FEATURE_SIZE:
        x = F.interpolate(x, size=FEATURE_SIZE, mode="area")
    return x.flatten(1).double()


def rms_distances(a: Tensor, b: Tensor | None = None) -> Tensor:
    """Pairwise root-mean-square differences between the rows of ``a`` and of ``b`` (default ``a``)."""
    return torch.cdist(a, a if b is None else b) / math.sqrt(a.shape[1])


class Diversity(Metric):
    """Mean pairwise pixel distance within and between captions; collapse_score ~0 means mode collapse."""

    # the raw distances describe the images, they are not better when larger or smaller; the collapse score
    # is best at 1, the variety of the real images (below: collapse, above: noise)
    goals = {
        "diversity/collapse_score": "one",
        "diversity/within_caption": "none",
        "diversity/between_captions": "none",
    }
    chunk = 250  # captions per generate() call
    splits_across_ranks = True  # per-image pixels (t2i.metrics.generated_rows); the distances are computed after

    def __init__(self, cfg: DiversityConfig | None = None):
        self.cfg = cfg or DiversityConfig()

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        cfg, resolution = self.cfg, reference.resolution
        rows, captions = self._choose(reference)
        k = cfg.per_caption
        repeated = [c for c in captions for _ in range(k)]
        fake = generated_rows(generate, repeated, resolution, pixel_features, chunk=self.chunk)
        group = torch.arange(len(captions)).repeat_interleave(k)
        same = group[:, None] == group[None, :]
        d = rms_distances(fake)
        within = d[same & ~torch.eye(len(group), dtype=torch.bool)].mean().item()
        between = d[~same].mean().item()
        real_between = _mean_over_pairs(rms_distances(pixel_features(reference.images[rows])))
        real_within, n_real_within = self._real_within(reference, captions)

        results: dict[str, Any] = {
            "diversity/within_caption": within,
            "diversity/between_captions": between,
            "diversity/real_between_captions": real_between,
        }
        if n_real_within:
            results["diversity/real_within_caption"] = real_within
        if real_between > 0:
            results["diversity/collapse_score"] = between / real_between
        results["protocol"] = {
            "metric": "diversity",
            "n_captions": len(captions),
            "per_caption": k,
            "seed": cfg.seed,
            "selection": "seeded permutation of the reference split; one seeded caption per image; distinct",
            "feature": f"pixels: RGB in [0, 1], area-resized to at most {FEATURE_SIZE} px",
            "distance": "root-mean-square difference (0 = identical, 1 = black vs white)",
            "real_within_captions": n_real_within,
            "reference": {
                "size": len(reference),
                **{key: reference.info[key] for key in ("name", "split", "seed") if key in reference.info},
            },
            "resolution": resolution,
        }
        return results

    def _choose(self, reference: CaptionedImages) -> tuple[list[int], list[str]]:
        """``n_captions`` reference rows with distinct (seeded) captions."""
        order = seeded_order(len(reference), self.cfg.seed).tolist()
        rows, captions, taken = [], [], set()
        for row, caption in zip(order, seeded_caption(reference, order, self.cfg.seed)):
            if caption not in taken:
                taken.add(caption)
                rows.append(row)
                captions.append(caption)
                if len(rows) == self.cfg.n_captions:
                    break
        if len(rows) < 2:
            raise UsageError("diversity needs a reference split with at least 2 distinct captions")
        return rows, captions

    def _real_within(self, reference: CaptionedImages, captions: list[str]) -> tuple[float, int]:
        """Mean pairwise distance among real images sharing each caption (up to per_caption each), and how
        many of the captions have two or more real images."""
        index = {c: i for i, c in enumerate(reference.captions)}
        means = []
        for caption in captions:
            rows = (reference.caption_ids == index[caption]).any(1).nonzero().flatten()
            rows = rows[: self.cfg.per_caption]
            if len(rows) >= 2:
                means.append(_mean_over_pairs(rms_distances(pixel_features(reference.images[rows]))))
        return (sum(means) / len(means) if means else 0.0), len(means)


def _mean_over_pairs(d: Tensor) -> float:
    """Mean of a square distance matrix off its diagonal: over all pairs of distinct images."""
    return d[~torch.eye(len(d), dtype=torch.bool)].mean().item()
