"""Several image scales: which images a (multi-scale) discriminator judges, and its per-scale loss weights.

A generator declares the sizes it outputs (:attr:`t2i.interfaces.Generator.scales`, smallest first), a
discriminator the sizes it judges (:attr:`t2i.interfaces.Discriminator.scales`). The engine pairs them:

- G with several outputs, D with several scales: D judges G's outputs at D's scales (D's scales must be
  among G's);
- G with several outputs, D with one scale: D judges the final image only;
- G with one output, D with several scales: the image pyramid, G's image downsampled to each of D's scales.

Real images are always downsampled from the full-resolution batch, with ``F.interpolate(mode="area")``:
the mean over each block of pixels (a box filter; for a size that divides the resolution, exactly average
pooling), the same operation whatever the network. It is differentiable, so when the real batch requires
grad (R1, MA-GP) every scale's real images do too and a gradient penalty at a scale differentiates D's
logits at that scale with respect to that scale's images (``StepOutputs.real_images``).

:func:`check_scales` refuses pairings that cannot work (before the first step); :func:`scale_weights`
reads D's per-scale loss weights (``scale_weights``, default 1.0 each).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError

__all__ = ["scales_of", "check_scales", "scale_weights", "downsample", "ScalePairing"]


def scales_of(module: nn.Module) -> tuple[int, ...]:
    """A network's declared scales (``(resolution,)`` when it declares none)."""
    scales = getattr(module, "scales", None)
    if scales is None:
        return (int(module.resolution),)  # type: ignore[arg-type]
    return tuple(int(s) for s in scales)


def check_scales(G: nn.Module, D: nn.Module) -> None:
    """A one-line UsageError unless G's and D's scales can be paired (see the module docstring): both ascending
    and ending at G's resolution (D: at most it), D's scales among G's outputs when G has several, and each
    of D's scales dividing the resolution when a single image is downsampled to it."""
    g, d = scales_of(G), scales_of(D)
    resolution = int(G.resolution)  # type: ignore[arg-type]
    for name, scales in (("generator", g), ("discriminator", d)):
        if list(scales) != sorted(set(scales)) or scales[0] < 1:
            raise UsageError(f"{name} scales {scales} must be distinct sizes, smallest first")
    if g[-1] != resolution:
        raise UsageError(f"generator scales {g} must end at its resolution {resolution}")
    if len(d) == 1:
        if d[0] != resolution:
            raise UsageError(f"a single-scale discriminator judges the final image: its scale {d[0]} must be "
                             f"the resolution {resolution}")
        return
    if len(g) > 1:
        missing = [s for s in d if s not in g]
        if missing:
            raise UsageError(f"discriminator scales {d} include {missing}, which the generator does not output "
                             f"(its scales: {g}); judge a subset of them")
    elif any(s > resolution or resolution % s for s in d):
        raise UsageError(f"discriminator scales {d} must divide the generator's resolution {resolution} "
                         "(its image is downsampled to each)")


def scale_weights(D: nn.Module) -> tuple[float, ...]:
    """D's per-scale loss weights: its ``scale_weights`` (one per scale), else 1.0 each."""
    scales = scales_of(D)
    weights = getattr(D, "scale_weights", None)
    if weights is None:
        return (1.0,) * len(scales)
    weights = tuple(float(w) for w in weights)
    if len(weights) != len(scales):
        raise UsageError(f"discriminator declares {len(weights)} scale_weights for its {len(scales)} scales {scales}")
    return weights


def downsample(image: Tensor, size: int) -> Tensor:
    """``image`` ``(B, C, R, R)`` at ``size`` pixels by area averaging (the image itself when already that size)."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="area")


class ScalePairing:
    """For one (G, D) pair: the list of images D judges, one per D scale, from real batches and G's outputs."""

    def __init__(self, G: nn.Module, D: nn.Module):
        check_scales(G, D)
        self.g_scales, self.d_scales = scales_of(G), scales_of(D)
        self.weights = scale_weights(D)
        self.multi_d = len(self.d_scales) > 1

    @property
    def names(self) -> list[str]:
        """The suffix of each scale's logged losses: ``["@16", "@32"]``, or ``[""]`` for a single-scale D."""
        return [f"@{s}" for s in self.d_scales] if self.multi_d else [""]

    def reals(self, real: Tensor) -> list[Tensor]:
        """The full-resolution real batch at each of D's scales."""
        return [downsample(real, s) for s in self.d_scales]

    def fakes(self, fake: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """G's output (one image or a list, smallest first) at each of D's scales."""
        if isinstance(fake, Tensor):
            return [downsample(fake, s) for s in self.d_scales]
        by_size = {int(x.shape[-1]): x for x in fake}
        return [by_size[s] for s in self.d_scales]

    def judge(self, D: nn.Module, images: list[Tensor], *args, **kwargs) -> list:
        """D on ``images`` (one per scale): a list of :class:`~t2i.interfaces.DiscOutput`, one per scale."""
        out = D(images if self.multi_d else images[0], *args, **kwargs)
        return list(out) if self.multi_d else [out]

