"""``pixel_mean``: how far the mean colour of generated images is from the reference split's.

For the first ``samples`` images of the reference split, the generator draws one image from each image's
first caption; the metric is the mean, over the three channels, of ``|mean_c(generated) -
mean_c(reference)|`` in uint8 pixel units (0-255). Lower is better; 0 means the colours match on
average (which says nothing about shapes: it is an example, not a quality measure).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from t2i.interfaces import CaptionedImages, Metric
from t2i.options import require_positive
from torch import Tensor

__all__ = ["PixelMeanConfig", "PixelMean"]


@dataclass
class PixelMeanConfig:
    samples: int = field(
        default=1000, metadata={"help": "images generated (one per reference image, from its first caption)"}
    )
    batch_size: int = field(default=100, metadata={"help": "captions per call to the generator"})

    def __post_init__(self) -> None:
        require_positive(self, "samples", "batch_size")


class PixelMean(Metric):
    """Mean absolute difference of the per-channel means of generated and reference images."""

    higher_is_better = False

    def __init__(self, cfg: PixelMeanConfig | None = None):
        self.cfg = cfg or PixelMeanConfig()

    def evaluate(
        self, generate: Callable[[Sequence[str]], Tensor], reference: CaptionedImages
    ) -> dict[str, Any]:
        n = min(self.cfg.samples, len(reference))
        r = reference.resolution
        captions = [reference.captions_of(i)[0] for i in range(n)]
        total = torch.zeros(3, dtype=torch.float64)
        for start in range(0, n, self.cfg.batch_size):
            batch = captions[start : start + self.cfg.batch_size]
            images = generate(batch)
            if images.dtype != torch.uint8 or tuple(images.shape) != (len(batch), r, r, 3):
                raise ValueError(
                    f"pixel_mean: generate() must return uint8 ({len(batch)}, {r}, {r}, 3), "
                    f"got {images.dtype} {tuple(images.shape)}"
                )
            total += images.double().sum(dim=(0, 1, 2))
        generated = total / (n * r * r)
        real = reference.images[:n].double().mean(dim=(0, 1, 2))
        return {
            "abs_diff": (generated - real).abs().mean().item(),  # logged by the engine as pixel_mean/abs_diff
            "protocol": {
                "samples": n,
                "captions": "the first caption of each of the first `samples` reference images",
                "reference": {k: reference.info[k] for k in ("name", "split", "seed") if k in reference.info},
                "resolution": r,
                "units": "uint8 pixel values (0-255)",
                "generated_channel_means": [round(v, 3) for v in generated.tolist()],
                "reference_channel_means": [round(v, 3) for v in real.tolist()],
            },
        }
