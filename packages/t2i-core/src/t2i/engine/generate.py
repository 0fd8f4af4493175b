"""The generator outside the training step, in one place: its text inputs and its full-resolution image.

Grids, metrics, the pre-flight check and ``t2i sample`` call :func:`encode_captions` then
:func:`generate_images`, so a generator that ``uses_words`` gets its word features and a multi-scale one
gives its last (full-resolution) image everywhere (:class:`t2i.interfaces.Generator`)::

    text, words = encode_captions(encoder, captions, device, words=uses_words(G))
    images = generate_images(G, z, text, words)   # (B, 3, R, R) in [-1, 1]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..interfaces import TextEncoder, WordFeatures, final_image

__all__ = ["uses_words", "encode_captions", "generate_images"]


def uses_words(network: nn.Module) -> bool:
    """Whether ``network`` (a generator or discriminator, or a wrapper with ``.module``) reads word features."""
    return bool(getattr(network, "uses_words", getattr(getattr(network, "module", None), "uses_words", False)))


@torch.no_grad()
def encode_captions(encoder: TextEncoder, captions: Sequence[str], device: torch.device | str, *,
                    words: bool = False) -> tuple[Tensor, WordFeatures | None]:
    """Float32 embeddings ``(B, dim)`` of ``captions`` on ``device`` and, with ``words``, their word features
    (:meth:`~t2i.interfaces.TextEncoder.forward_words`, one pass); else ``None``. No gradients."""
    if not words:
        return encoder.encode(list(captions)).to(device).float(), None
    own = next(encoder.parameters(), torch.empty(0)).device
    text, feats = encoder.forward_words(encoder.tokenize(list(captions)).to(own))
    return text.to(device).float(), WordFeatures(feats.features.to(device).float(), feats.mask.to(device))


def generate_images(generator: nn.Module, z: Tensor, text: Tensor, words: WordFeatures | None = None,
                    **kwargs: Any) -> Tensor:
    """``generator(z, text[, words=words], **kwargs)``'s full-resolution images (the last of a multi-scale list).
    ``words`` is passed exactly when the generator ``uses_words``."""
    if uses_words(generator):
        if words is None:
            raise ValueError(f"{type(generator).__name__} uses word features; pass words "
                             f"(encode_captions(..., words=True))")
        return final_image(generator(z, text, words=words, **kwargs))
    return final_image(generator(z, text, **kwargs))
