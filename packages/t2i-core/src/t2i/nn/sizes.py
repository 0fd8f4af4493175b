"""Resolutions and widths: the build context a network is given, its feature-map sizes and channels.

Every generator and discriminator factory is called as ``factory(cfg, resolution=R, text_dim=D)``
(:mod:`t2i.interfaces`). Convolutional GANs then work on square maps from 4x4 up to ``R`` (a generator)
or from ``R`` down to 4x4 (a discriminator), one factor of two per block, with DCGAN's width rule: the
fewer pixels, the more channels.
"""

from __future__ import annotations

import math

__all__ = ["check_context", "doublings", "map_sizes", "doubling_width"]


def check_context(network: type, resolution: int, text_dim: int) -> int:
    """Refuse what ``network`` (a class with a ``resolutions`` attribute) cannot be built with.

    Raises a one-line ``ValueError`` (which the engine reports as the component's error) when
    ``resolution`` is not one of ``network.resolutions`` or ``text_dim`` is not a positive integer.
    Returns :func:`doublings` of ``resolution``: the number of x2 steps between 4x4 and it.
    """
    supported = network.resolutions
    if resolution not in supported:
        raise ValueError(
            f"{network.__name__} supports resolutions {', '.join(map(str, supported))}; got {resolution!r}"
        )
    if isinstance(text_dim, bool) or not isinstance(text_dim, int) or text_dim < 1:
        raise ValueError(f"{network.__name__}: text_dim must be a positive integer, got {text_dim!r}")
    return doublings(resolution)


def doublings(resolution: int) -> int:
    """The number of x2 steps from a 4x4 map to ``resolution`` (3 for 32 px, 4 for 64 px)."""
    return int(math.log2(resolution // 4))


def map_sizes(resolution: int) -> list[int]:
    """The map sizes from 4x4 up to ``resolution``: ``[4, 8, 16, 32]`` for 32 px.

    A generator grows through them in this order; a discriminator shrinks through them in reverse
    (``map_sizes(R)[-2::-1]`` are the sizes after each of its down blocks: ``R/2, ..., 4``).
    """
    return [4 * 2**i for i in range(doublings(resolution) + 1)]


def doubling_width(
    base: int, resolution: int, size: int, *, base_size: int | None = None, max_multiple: int | None = None
) -> int:
    """Channels of the ``size`` x ``size`` map in a network for ``resolution`` px images: DCGAN's rule.

    ``base`` channels at ``base_size`` (default ``resolution // 2``, the last hidden map of DCGAN's
    generator and the first of its discriminator) and at every larger map, doubled per halving below
    it, at most ``max_multiple * base``. At 64 px with ``base=8``: 64 channels at 4x4, 32 at 8x8, 16 at
    16x16, 8 at 32x32 and 64x64. Progressive growing counts from the image itself, capped at 8x:
    ``doubling_width(ch, R, size, base_size=R, max_multiple=8)``.
    """
    multiple = max((base_size or resolution // 2) // size, 1)
    if max_multiple is not None:
        multiple = min(multiple, max_multiple)
    return base * multiple
