"""Loading one split of a data set for training, sampling or evaluation, checked once for every caller."""

from __future__ import annotations

import torch

from ..errors import UsageError
from ..interfaces import CaptionedImages, Dataset

__all__ = ["load_split"]


def load_split(dataset: Dataset, split: str, resolution: int) -> CaptionedImages:
    """``split`` at ``resolution``, checked: a non-empty split of uint8 ``(N, R, R, 3)`` images."""
    if split not in dataset.splits:
        raise UsageError(f"data set has no split '{split}'; splits: {', '.join(dataset.splits)}")
    data = dataset.load(split, resolution)
    if len(data) == 0:
        raise UsageError(f"the {split} split of {dataset.describe()} has no images")
    if tuple(data.images.shape[1:]) != (resolution, resolution, 3) or data.images.dtype != torch.uint8:
        raise UsageError(f"{dataset.describe()} returned {split} images {data.images.dtype} {tuple(data.images.shape)}, "
                         f"expected uint8 (N, {resolution}, {resolution}, 3)")
    return data
