"""Conditional batch norm, and a plain batch norm with the same call signature.

Conditional batch norm (de Vries et al. 2017; BigGAN's ``ccbn``) normalises each channel without a
learned affine, then scales and shifts it per sample by linear functions of a condition vector ``c``
(in a text-to-image generator, ``[z; text]``)::

    y = BatchNorm(x) * (1 + gamma(c)) + beta(c)

Writing the scale as ``1 + gamma`` means that with ``gamma`` and ``beta`` at zero the layer is plain
BatchNorm, so a network can start unconditioned and learn how much the condition matters.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["CondBatchNorm2d", "PlainBatchNorm2d", "batch_norm"]


class CondBatchNorm2d(nn.Module):
    """``BatchNorm2d(x, affine=False) * (1 + gamma(c)) + beta(c)``, per channel and per sample.

    Args:
        channels: channels of ``x`` ``(B, channels, H, W)``.
        cond_dim: size of the condition ``c`` ``(B, cond_dim)``.
        bias: whether the two linear layers have a bias.
        zero_init: start ``gamma`` and ``beta`` at zero, so the layer starts as plain BatchNorm (DCGAN,
            SNGAN). Leave it off when ``wrap`` adds spectral norm, which cannot normalise a zero weight.
        wrap: applied to each linear layer once it is built (and zeroed), e.g. an initialisation plus
            :func:`torch.nn.utils.parametrizations.spectral_norm`, as SAGAN and BigGAN do.
        names: the attribute names of the two layers, which are also their state-dict keys
            (``("scale", "shift")`` reproduces BigGAN's checkpoints).

    The batch norm itself is ``self.bn``; the layers are built in the order of ``names``.
    """

    def __init__(
        self,
        channels: int,
        cond_dim: int,
        *,
        bias: bool = True,
        zero_init: bool = True,
        wrap: Callable[[nn.Linear], nn.Module] | None = None,
        names: tuple[str, str] = ("gamma", "beta"),
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self._names = names
        for name in names:
            layer = nn.Linear(cond_dim, channels, bias=bias)
            if zero_init:
                nn.init.zeros_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
            self.add_module(name, wrap(layer) if wrap is not None else layer)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        gamma, beta = (self._modules[name](c)[:, :, None, None] for name in self._names)
        return self.bn(x) * (1 + gamma) + beta


class PlainBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that also accepts (and ignores) a condition: ``norm(x, c)``.

    A block written as ``norm(x, c)`` can then be built with plain or conditional batch norm.
    """

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return super().forward(x)


def batch_norm(channels: int, cond_dim: int | None = None, **cond_options) -> nn.Module:
    """:class:`PlainBatchNorm2d` when ``cond_dim`` is ``None``, else :class:`CondBatchNorm2d`
    (``cond_options`` go to it)."""
    if cond_dim is None:
        return PlainBatchNorm2d(channels)
    return CondBatchNorm2d(channels, cond_dim, **cond_options)
