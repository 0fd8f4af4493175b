"""Progressive growing of GANs (Karras et al. 2018), text-conditional, as a t2i generator and discriminator.

Both networks are built at the target resolution R from the start; a :class:`GrowthSchedule` driven by
the images seen (``on_train_step``) says which stage is active and how far its fade-in has gone.

Generator: ``c = [pixelnorm(z); LeakyReLU(Linear(text))]`` -> a 4x4 map (Linear + 3x3 conv) -> one block
per doubling (nearest x2, two 3x3 convs). Every conv is followed by LeakyReLU 0.2, pixel norm and a
text modulation ``x * (1 + gamma(c)) + beta(c)`` (gamma, beta start at zero). Each stage has a 1x1
``to_rgb``. During the fade-in of stage k: ``rgb = lerp(up2(to_rgb[k-1](h_{k-1})), to_rgb[k](h_k), alpha)``;
then tanh, and the image is upsampled (nearest) to R, so the output is always ``(B, 3, R, R)``.

Discriminator: the image is average-pooled to the active stage's resolution, ``from_rgb`` of that stage,
blocks (two 3x3 convs, average pool /2) down to 4x4 with the fade-in mirrored
(``h = lerp(from_rgb[k-1](pool2(x)), block(from_rgb[k](x)), alpha)``), minibatch standard deviation,
a 3x3 conv and a 4x4 conv to a vector ``h``, and a projection head
``logit = linear(h) + <embed(text), h>`` (Miyato & Koyama 2018).

All convolutions and linear layers use the equalized learning rate (weights N(0, 1), scaled at run time
by He's constant). Widths: ``ch`` channels at R, doubled per halving of the resolution up to ``8 * ch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.interfaces import Discriminator, Generator
from t2i.nn import check_context, doubling_width, doublings, map_sizes
from t2i.options import require_non_negative, require_positive

from .schedule import FULLY_GROWN, GrowthClock, GrowthSchedule, stage_resolutions

__all__ = [
    "ProgressiveGeneratorConfig",
    "ProgressiveDiscriminatorConfig",
    "ProgressiveGenerator",
    "ProgressiveDiscriminator",
    "EqualizedConv2d",
    "EqualizedLinear",
]

RESOLUTIONS = (16, 32, 64, 128)
_SQRT2 = math.sqrt(2.0)


@dataclass
class ProgressiveGeneratorConfig(GrowthSchedule):
    ch: int = field(default=32, metadata={"help": "channels at the target resolution; doubled per halving, up to 8 x ch"})
    z_dim: int = field(default=128, metadata={"help": "size of the noise vector z"})
    text_proj_dim: int = field(default=128, metadata={"help": "the text embedding is projected to this size (+ LeakyReLU)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "ch", "z_dim", "text_proj_dim")


@dataclass
class ProgressiveDiscriminatorConfig(GrowthSchedule):
    ch: int = field(default=32, metadata={"help": "channels at the target resolution; doubled per halving, up to 8 x ch"})
    mbstd_group: int = field(default=4, metadata={"help": "minibatch standard deviation over groups of this many images (0: off)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "ch")
        require_non_negative(self, "mbstd_group")


# --------------------------------------------------------------------------------------------------
# Layers


class EqualizedConv2d(nn.Module):
    """Conv2d with the equalized learning rate: weights N(0, 1), multiplied by ``gain / sqrt(fan_in)``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int = 0, gain: float = _SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = gain / math.sqrt(in_ch * kernel * kernel)
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear with the equalized learning rate."""

    def __init__(self, in_features: int, out_features: int, gain: float = _SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalise each position's feature vector to unit mean square (over dim 1)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class _Modulation(nn.Module):
    """``x * (1 + gamma(c)) + beta(c)`` per channel; gamma and beta start at zero (identity)."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.affine = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        gamma, beta = self.affine(c)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class _GConv(nn.Module):
    """3x3 conv, LeakyReLU, pixel norm, text modulation."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.conv = EqualizedConv2d(in_ch, out_ch, 3, padding=1)
        self.mod = _Modulation(cond_dim, out_ch)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.mod(pixel_norm(_lrelu(self.conv(x))), c)


class _GBase(nn.Module):
    """``c`` -> 4x4 map: Linear, LeakyReLU, pixel norm, modulation, then one :class:`_GConv`."""

    def __init__(self, cond_dim: int, out_ch: int):
        super().__init__()
        self.fc = EqualizedLinear(cond_dim, out_ch * 16, gain=_SQRT2 / 4)  # as in the paper's 4x4 dense layer
        self.mod = _Modulation(cond_dim, out_ch)
        self.conv = _GConv(out_ch, out_ch, cond_dim)

    def forward(self, c: Tensor) -> Tensor:
        x = self.fc(c).view(c.shape[0], -1, 4, 4)
        return self.conv(self.mod(pixel_norm(_lrelu(x)), c), c)


class _GBlock(nn.Module):
    """Nearest x2, then two :class:`_GConv`."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.conv1 = _GConv(in_ch, out_ch, cond_dim)
        self.conv2 = _GConv(out_ch, out_ch, cond_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.conv2(self.conv1(F.interpolate(x, scale_factor=2, mode="nearest"), c), c)


class _DBlock(nn.Module):
    """Two 3x3 convs with LeakyReLU, then average pool /2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = EqualizedConv2d(in_ch, in_ch, 3, padding=1)
        self.conv2 = EqualizedConv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(_lrelu(self.conv2(_lrelu(self.conv1(x)))), 2)


def minibatch_stddev(x: Tensor, group: int) -> Tensor:
    """Append one channel: the standard deviation over groups of ``group`` images, averaged (Karras et al.).

    The group shrinks to the largest divisor of the batch size that is <= ``group`` (1 for a batch of one,
    which gives a constant channel).
    """
    b, _, hgt, wid = x.shape
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.float().view(g, b // g, *x.shape[1:])
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b // g,)
    feature = std.repeat(g).view(b, 1, 1, 1).expand(b, 1, hgt, wid).to(x.dtype)
    return torch.cat([x, feature], dim=1)


# --------------------------------------------------------------------------------------------------
# What both networks share: the target, the stages, the clock


class _Growing:
    """Stage bookkeeping for a network grown by a :class:`GrowthSchedule` up to ``self.resolution``.

    Level ``L`` is the ``4 * 2**L`` resolution (level 0 is the 4x4 base); stage ``s`` is level
    ``start_level + s``. A freshly built network is fully grown until ``on_train_step`` says otherwise.
    """

    progressive: ClassVar[bool] = True
    resolution: int
    schedule: GrowthSchedule

    def _init_growth(self, schedule: GrowthSchedule, resolution: int) -> None:
        self.schedule = GrowthSchedule(schedule.start_resolution, schedule.images_per_phase)
        self.stage_resolutions = stage_resolutions(self.schedule, resolution)  # ValueError: start > target
        self.levels = doublings(resolution)
        self.start_level = doublings(self.stage_resolutions[0])
        self._clock = GrowthClock(FULLY_GROWN, *self.schedule.at(FULLY_GROWN, resolution))

    def _set_clock(self, images_seen: int) -> None:
        stage, alpha = self.schedule.at(int(images_seen), self.resolution)  # ValueError when negative
        self._clock.images_seen, self._clock.stage, self._clock.alpha = int(images_seen), stage, alpha

    def _widths(self, ch: int) -> list[int]:
        """Channels of the map at each level: ``ch`` at R, doubled per halving, at most ``8 * ch``."""
        r = self.resolution
        return [doubling_width(ch, r, size, base_size=r, max_multiple=8) for size in map_sizes(r)]

    # -- the hook and what it sets ------------------------------------------------------------------
    def on_train_step(self, step: int, images_seen: int) -> None:
        """Set the stage (and fade-in) to where ``images_seen`` real images put the schedule."""
        self._set_clock(images_seen)

    @property
    def images_seen(self) -> int:
        """The clock: images seen at the last ``on_train_step`` (a huge number when never driven)."""
        return self._clock.images_seen

    @property
    def growth(self) -> tuple[int, float]:
        """``(stage, alpha)`` now."""
        return self._clock.stage, self._clock.alpha

    @property
    def stage(self) -> int:
        return self._clock.stage

    @property
    def alpha(self) -> float:
        """Fade-in of the current stage: 0 -> 1 during its fade-in, 1 once it is stable."""
        return self._clock.alpha

    @property
    def current_resolution(self) -> int:
        """The resolution the network works at now (its output or input is resampled to/from it)."""
        return self.stage_resolutions[self.stage]

    # -- the clock travels in the state_dict (key ``_extra_state``) --------------------------------------
    def get_extra_state(self) -> Tensor:
        return self._clock.state()

    def set_extra_state(self, state: Any) -> None:
        self._set_clock(int(state))


# --------------------------------------------------------------------------------------------------
# Generator


class ProgressiveGenerator(_Growing, Generator):
    """Text-conditional progressive-growing generator; returns ``(B, 3, R, R)`` at every stage."""

    resolutions = RESOLUTIONS
    progressive = True

    def __init__(
        self, cfg: ProgressiveGeneratorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or ProgressiveGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        self._init_growth(cfg, resolution)
        cond_dim = cfg.z_dim + cfg.text_proj_dim
        widths = self._widths(cfg.ch)

        self.text_proj = EqualizedLinear(text_dim, cfg.text_proj_dim)
        self.base = _GBase(cond_dim, widths[0])
        self.blocks = nn.ModuleList(_GBlock(widths[i], widths[i + 1], cond_dim) for i in range(self.levels))
        self.to_rgb = nn.ModuleList(
            EqualizedConv2d(widths[self.start_level + s], 3, 1, gain=1.0) for s in range(len(self.stage_resolutions))
        )

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        stage, alpha = self._clock.stage, self._clock.alpha
        level = self.start_level + stage
        c = torch.cat([pixel_norm(z), _lrelu(self.text_proj(text))], dim=1)
        h = previous = self.base(c)
        for block in self.blocks[:level]:
            previous, h = h, block(h, c)
        rgb = self.to_rgb[stage](h)
        if stage > 0:  # the fade-in; exactly ``rgb`` once alpha = 1 (computed anyway: no branch on alpha)
            old = F.interpolate(self.to_rgb[stage - 1](previous), scale_factor=2, mode="nearest")
            rgb = torch.lerp(old, rgb, alpha)
        image = torch.tanh(rgb)
        factor = self.resolution // rgb.shape[-1]
        return image if factor == 1 else F.interpolate(image, scale_factor=factor, mode="nearest")


# --------------------------------------------------------------------------------------------------
# Discriminator


class ProgressiveDiscriminator(_Growing, Discriminator):
    """Progressive-growing discriminator with minibatch stddev and a projection head; takes ``(B, 3, R, R)``."""

    resolutions = RESOLUTIONS
    progressive = True
    provides_features = True

    def __init__(
        self, cfg: ProgressiveDiscriminatorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or ProgressiveDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self._init_growth(cfg, resolution)
        widths = self._widths(cfg.ch)
        ch = widths[0]

        self.from_rgb = nn.ModuleList(
            EqualizedConv2d(3, widths[self.start_level + s], 1) for s in range(len(self.stage_resolutions))
        )
        self.blocks = nn.ModuleList(_DBlock(widths[i + 1], widths[i]) for i in range(self.levels))  # level i+1 -> i
        extra = 1 if cfg.mbstd_group else 0
        self.final_conv = EqualizedConv2d(ch + extra, ch, 3, padding=1)
        self.final_dense = EqualizedConv2d(ch, ch, 4)  # 4x4 -> 1x1
        self.out = EqualizedLinear(ch, 1, gain=1.0)
        self.embed = EqualizedLinear(text_dim, ch, gain=1.0)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        stage, alpha = self._clock.stage, self._clock.alpha
        level = self.start_level + stage
        factor = self.resolution // self.stage_resolutions[stage]
        x = image if factor == 1 else F.avg_pool2d(image, factor)
        h = _lrelu(self.from_rgb[stage](x))
        features: list[Tensor] = []
        for i in range(level - 1, -1, -1):
            h = self.blocks[i](h)
            if i == level - 1 and stage > 0:  # the fade-in: the last stage's path on the pooled image
                old = _lrelu(self.from_rgb[stage - 1](F.avg_pool2d(x, 2)))
                h = torch.lerp(old, h, alpha)
            features.append(h)
        if self.cfg.mbstd_group:
            h = minibatch_stddev(h, self.cfg.mbstd_group)
        h = _lrelu(self.final_conv(h))
        features.append(h)
        return _lrelu(self.final_dense(h)).flatten(1), features

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        return self.out(h).flatten() + (self.embed(text) * h).sum(dim=1)
