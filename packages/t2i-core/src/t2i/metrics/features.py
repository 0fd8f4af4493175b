"""Feature extractors for distribution metrics (FID, KID, IS, precision/recall, ...): one small protocol and
a name -> factory table.

An extractor maps uint8 images ``(B, H, W, 3)`` (any size; it resizes them itself) to a dict of float
tensors ``(B, D)``, one per feature it provides (``dims``: name -> D). ``weights_sha256`` and ``protocol()``
say exactly which network produced the numbers, so every metric can record it, and ``cache_key()`` is what
a cache of real-data statistics must match to be reused.

Add an extractor by adding a factory to :data:`EXTRACTORS`::

    EXTRACTORS["my_net"] = lambda **opts: MyNetFeatures(**opts)
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import UsageError

__all__ = ["FeatureExtractor", "EXTRACTORS", "make_extractor", "extractor_names", "features_of"]


@runtime_checkable
class FeatureExtractor(Protocol):
    """A frozen network turning uint8 ``(B, H, W, 3)`` images into named float feature tensors ``(B, D)``."""

    name: str
    dims: Mapping[str, int]  # feature name -> size, e.g. {"pool3": 2048, "logits_unbiased": 1008}
    weights_sha256: str

    def __call__(self, images: Tensor) -> dict[str, Tensor]: ...

    def protocol(self) -> dict[str, Any]:
        """What to record next to a number computed from these features (name, weights file and hash, resize)."""
        ...

    def cache_key(self) -> dict[str, Any]:
        """What a cache of features from this extractor must match (name, weights hash, preprocessing)."""
        ...


def _inception(**opts: Any) -> FeatureExtractor:
    from .inception import InceptionFeatures

    return InceptionFeatures(**opts)


def _dinov2(**opts: Any) -> FeatureExtractor:
    from .timm_features import make_dinov2_extractor

    return make_dinov2_extractor(**opts)


def _timm(**opts: Any) -> FeatureExtractor:
    from .timm_features import make_timm_extractor

    return make_timm_extractor(**opts)


# name -> factory(**options). Factories import their network lazily: listing names costs nothing.
EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "inception": _inception,
    "dinov2": _dinov2,  # DINOv2 ViT-L/14 at 224 px (t2i.metrics.timm_features)
    "timm": _timm,  # "timm:<model name>": any timm model, model=<name>
}


def extractor_names() -> list[str]:
    """The extractor names :func:`make_extractor` knows, sorted."""
    return sorted(EXTRACTORS)


def make_extractor(name: str, **opts: Any) -> FeatureExtractor:
    """Build the extractor ``name`` with its options (e.g. ``weights=PATH``, ``device="cuda"``)."""
    if name.startswith("timm:"):  # "timm:resnet50.a1_in1k" -> EXTRACTORS["timm"](model="resnet50.a1_in1k")
        return EXTRACTORS["timm"](model=name[len("timm:"):], **opts)
    if name not in EXTRACTORS:
        close = difflib.get_close_matches(name, EXTRACTORS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown feature extractor '{name}'{hint} known: {', '.join(extractor_names())}")
    return EXTRACTORS[name](**opts)


def features_of(extractor: FeatureExtractor, images: Tensor, names: tuple[str, ...], batch_size: int) -> dict[str, Tensor]:
    """The features ``names`` of uint8 ``images``, ``batch_size`` images per forward pass, on the CPU (what a
    metric hands to :func:`t2i.metrics.generated_rows`)."""
    parts = [extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {name: torch.cat([p[name].cpu() for p in parts]) for name in names}
