"""A discriminator's trunk: the image through its blocks, keeping what each block returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

__all__ = ["trunk_features"]


def trunk_features(
    x: Tensor,
    blocks: Sequence[Callable[[Tensor], Tensor]],
    after: Sequence[Callable[[Tensor], Tensor]] | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Run ``x`` through ``blocks`` in order; return ``(the last output, [every block's output])``.

    That pair is what :meth:`t2i.interfaces.Discriminator.image_features` returns: the trunk's output for
    the text-conditional head, and the intermediate features, shallow to deep, that terms such as
    feature matching read. ``after``, as long as ``blocks``, holds a module applied to each block's
    output before it is kept (self-attention after some blocks, ``nn.Identity`` after the others).
    """
    features = []
    for i, block in enumerate(blocks):
        x = block(x)
        if after is not None:
            x = after[i](x)
        features.append(x)
    return x, features
