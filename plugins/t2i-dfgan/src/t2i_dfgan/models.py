"""DF-GAN (Tao et al., CVPR 2022) as a t2i generator and discriminator, conditioned on the sentence vector.

The networks of the authors' final release (tobran/DF-GAN, ``code/models/GAN.py``), layer for layer: same
layers, shapes, initialisation and outputs, and so the same parameter counts, less the shortcut convs their
discriminator builds and never uses (see the README for the figures and how they were checked).

Generator: ``Linear(z)`` -> 4x4 map with ``8 nf`` channels -> up blocks to R -> LeakyReLU(0.2), conv3x3
to RGB, tanh. An up block upsamples x2 (nearest), then ``shortcut(x) + conv2(fuse2(conv1(fuse1(x))))``
(the shortcut is a 1x1 conv where the width changes, else the identity). A fusion block (:class:`DFBlock`,
the authors' ``DFBLK``) is two :class:`Affine` layers, each followed by LeakyReLU(0.2); an affine layer
scales and shifts every channel by MLPs (Linear, ReLU, Linear; hidden width = channels) of the condition
``c = [z; sentence]`` and starts as the identity (scale 1, shift 0).

Discriminator: conv3x3 from RGB (``nf`` channels) -> down blocks to 4x4
(:meth:`DFGANDiscriminator.image_features`, the authors' ``NetD``) -> the text head
(:meth:`DFGANDiscriminator.condition`, their ``NetC``): the sentence tiled over the 4x4 map and concatenated,
conv3x3 to ``2 nf``, LeakyReLU(0.2), conv4x4 to one logit (one-way output: the conditional logit only).
A down block is ``avgpool2(shortcut(x)) + gamma * LReLU(conv3x3(LReLU(conv4x4/2(x))))`` with ``gamma``
learned from 0; its 1x1 shortcut conv exists only where the width changes. The authors' blocks build that
conv in every block and leave it unused where the width does not change (their DDP runs need
``find_unused_parameters``); here it is not built, so every parameter takes part in every step.

Widths (both networks): the map at size s has ``nf * min(R // s, 8)`` channels (``nf`` at the image, up to
``8 nf`` from R/8 down to 4x4), which is the authors' ``get_G_in_out_chs`` / ``get_D_in_out_chs``. The
number of blocks is ``log2(R) - 2``: 4 at 64 px, 5 at 128 px, 6 at 256 px.

Sampling: in eval mode (sample grids, metrics, ``t2i sample`` and ``t2i eval``) the generator maps its
standard-normal ``z`` through the normal's CDF onto a normal truncated to [-2, 2] and scales it by
``trunc_rate`` (0.88): the distribution of the authors' ``truncated_noise`` (scipy
``truncnorm(-2, 2) * trunc_rate``), reached from the engine's ``torch.randn`` noise. Training (train mode)
uses ``z`` as it is, as they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.interfaces import Discriminator, Generator
from t2i.nn import check_context, doubling_width, map_sizes, trunk_features
from t2i.options import require_choices, require_positive

__all__ = [
    "DFGANGeneratorConfig",
    "DFGANDiscriminatorConfig",
    "DFGANGenerator",
    "DFGANDiscriminator",
    "Affine",
    "DFBlock",
    "GBlock",
    "DBlock",
    "dfgan_width",
    "truncate_noise",
    "TRUNCATION_BOUND",
    "parameter_count",
]

TRUNCATION_BOUND = 2.0  # the authors' truncnorm(-2, 2)


def dfgan_width(nf: int, resolution: int, size: int) -> int:
    """Channels of the ``size`` x ``size`` map of a ``resolution`` px DF-GAN: ``nf * min(R // size, 8)``."""
    return doubling_width(nf, resolution, size, base_size=resolution, max_multiple=8)


def truncate_noise(z: Tensor, rate: float, bound: float = TRUNCATION_BOUND) -> Tensor:
    """Standard-normal ``z`` -> a normal truncated to ``[-bound, bound]``, times ``rate``, element-wise.

    Inverse-CDF sampling: ``u = Phi(z)`` is uniform, and ``Phi^-1(Phi(-b) + u (Phi(b) - Phi(-b)))`` has
    exactly the truncated normal's distribution (scipy's ``truncnorm(-b, b)``), so the result is distributed
    as DF-GAN's ``truncated_noise(..., truncation=rate)``; the map is monotone, so fixed noise stays fixed.
    """
    lo = torch.special.ndtr(torch.tensor(-bound, dtype=torch.float32)).item()
    u = torch.special.ndtr(z.float())
    return (torch.special.ndtri(lo + u * (1.0 - 2.0 * lo)).clamp(-bound, bound) * rate).to(z.dtype)


@dataclass
class DFGANGeneratorConfig:
    nf: int = field(default=32, metadata={
        "help": "channels at the output resolution (the authors' nf: 32 in their CUB and COCO configs); "
                "x min(R/size, 8) per map, 8 nf at 4x4"})
    z_dim: int = field(default=100, metadata={"help": "size of the noise vector z (DF-GAN: 100)"})
    truncation: bool = field(default=True, metadata={
        "help": "sampling (eval mode) uses z truncated to [-2, 2] and scaled by trunc_rate, as DF-GAN's "
                "evaluation does; training always uses plain N(0, I)"})
    trunc_rate: float = field(default=0.88, metadata={
        "help": "scale of the truncated noise when truncation is on (DF-GAN's trunc_rate: 0.88)"})

    def __post_init__(self) -> None:
        require_positive(self, "nf", "z_dim")
        if not 0.0 < self.trunc_rate <= 1.0:
            raise ValueError(f"trunc_rate must be in (0, 1], got {self.trunc_rate}")


@dataclass
class DFGANDiscriminatorConfig:
    nf: int = field(default=32, metadata={
        "help": "channels of the first conv (the authors' nf); x min(R/size, 8) per map, 8 nf at 4x4"})
    head: Literal["concat", "hybrid"] = field(default="concat", metadata={
        "help": "'concat': the authors' NetC (sentence tiled over the 4x4 map); 'hybrid': plus a projection "
                "term (embedded sentence . mean-pooled 4x4 features), not in the paper: on Shapes it trades position "
                "for shape (README)"})
    gate_init: float = field(default=0.0, metadata={
        "help": "start value of each down block's residual gate gamma (the authors': 0, which leaves D's trunk "
                "almost linear for thousands of steps; 1 opens it from the start, README)"})

    def __post_init__(self) -> None:
        require_positive(self, "nf")
        require_choices(self)


# --------------------------------------------------------------------------------------------------
# Generator blocks


def _mlp(cond_dim: int, channels: int) -> nn.Sequential:
    """Linear(cond_dim, C), ReLU, Linear(C, C): the MLP giving one affine layer's scale or shift."""
    return nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(), nn.Linear(channels, channels))


class Affine(nn.Module):
    """``scale(c) * x + shift(c)`` per channel; ``scale`` and ``shift`` are MLPs of the condition ``c``.

    Their last layers start at zero weights with bias 1 (scale) and 0 (shift): the layer starts as the
    identity, as in the authors' ``Affine._initialize``.
    """

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.scale = _mlp(cond_dim, channels)
        self.shift = _mlp(cond_dim, channels)
        nn.init.zeros_(self.scale[2].weight)
        nn.init.ones_(self.scale[2].bias)
        nn.init.zeros_(self.shift[2].weight)
        nn.init.zeros_(self.shift[2].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.scale(c)[:, :, None, None] * x + self.shift(c)[:, :, None, None]


class DFBlock(nn.Module):
    """Deep text-image fusion (the authors' ``DFBLK``): (Affine, LeakyReLU 0.2) twice, on one condition."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.affine0 = Affine(cond_dim, channels)
        self.affine1 = Affine(cond_dim, channels)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = F.leaky_relu(self.affine0(x, c), 0.2)
        return F.leaky_relu(self.affine1(x, c), 0.2)


class GBlock(nn.Module):
    """x2 nearest, then ``shortcut(x) + conv2(fuse2(conv1(fuse1(x), c), c))``."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int):
        super().__init__()
        self.fuse1 = DFBlock(cond_dim, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.fuse2 = DFBlock(cond_dim, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0)
        h = self.conv2(self.fuse2(self.conv1(self.fuse1(x, c)), c))
        return self.shortcut(x) + h


# --------------------------------------------------------------------------------------------------
# Discriminator block


class DBlock(nn.Module):
    """``avgpool2(shortcut(x)) + gamma * LReLU(conv3x3(LReLU(conv4x4 stride 2(x))))``, ``gamma`` from
    ``gate_init`` (the authors': 0).

    The 1x1 shortcut conv is built only where the width changes (the authors build it always and use it
    only then).
    """

    def __init__(self, in_ch: int, out_ch: int, gate_init: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.gamma = nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.shortcut(x), 2) + self.gamma * self.residual(x)


# --------------------------------------------------------------------------------------------------
# Networks


class DFGANGenerator(Generator):
    """DF-GAN's generator: ``Linear(z)`` to 4x4, up blocks with deep fusion of ``[z; sentence]``, to RGB."""

    resolutions = (32, 64, 128, 256)
    supports_truncation = True  # t2i sample --truncation PSI: this call's trunc_rate

    def __init__(
        self, cfg: DFGANGeneratorConfig | None = None, *, resolution: int = 256, text_dim: int = 256
    ) -> None:
        super().__init__()
        cfg = cfg or DFGANGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        widths = [dfgan_width(cfg.nf, resolution, s) for s in map_sizes(resolution)]  # 4x4 ... R
        cond_dim = cfg.z_dim + text_dim

        self.fc = nn.Linear(cfg.z_dim, widths[0] * 16)
        self.blocks = nn.ModuleList(GBlock(cond_dim, i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, 1, 1)

    def forward(self, z: Tensor, text: Tensor, truncation: float | None = None) -> Tensor:
        """``truncation``: a trunc_rate for this call (eval mode; ``None``: the config's, when it is on)."""
        if not self.training and (truncation is not None or self.cfg.truncation):
            z = truncate_noise(z, self.cfg.trunc_rate if truncation is None else truncation)
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        c = torch.cat([z, text], dim=1)
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


class DFGANDiscriminator(Discriminator):
    """DF-GAN's discriminator: the image trunk (``NetD``) to a 4x4 map, then the sentence head (``NetC``)."""

    resolutions = (32, 64, 128, 256)

    def __init__(
        self, cfg: DFGANDiscriminatorConfig | None = None, *, resolution: int = 256, text_dim: int = 256
    ) -> None:
        super().__init__()
        cfg = cfg or DFGANDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        widths = [dfgan_width(cfg.nf, resolution, s) for s in map_sizes(resolution)[::-1]]  # R ... 4x4

        self.conv_img = nn.Conv2d(3, widths[0], 3, 1, 1)
        self.blocks = nn.ModuleList(DBlock(i, o, cfg.gate_init) for i, o in zip(widths[:-1], widths[1:]))
        self.head = nn.Sequential(
            nn.Conv2d(widths[-1] + text_dim, 2 * cfg.nf, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * cfg.nf, 1, 4, 1, 0, bias=False),
        )
        # hybrid: the projection discriminator's term (Miyato & Koyama 2018) beside NetC's concat head
        self.embed = nn.Linear(text_dim, widths[-1], bias=False) if cfg.head == "hybrid" else None

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return trunk_features(self.conv_img(image), self.blocks)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        tiled = text[:, :, None, None].to(h.dtype).expand(-1, -1, h.shape[2], h.shape[3])
        logits = self.head(torch.cat([h, tiled], dim=1)).flatten()
        if self.embed is not None:  # mean-pooled: MA-GP (k 2, p 6) expects D's input gradients near 1
            logits = logits + (self.embed(text.to(h.dtype)) * h.mean(dim=(2, 3))).sum(dim=1)
        return logits


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

