"""StyleGAN2's residual discriminator (Karras et al., CVPR 2020) with a text head, written anew after
StyleGAN2-ADA's ``training/networks.py`` (``DiscriminatorBlock``, ``MinibatchStdLayer``,
``DiscriminatorEpilogue``, ``Discriminator``; NVlabs/stylegan2-ada-pytorch), in plain PyTorch.

Layout, from the image down (every layer has an equalized learning rate, every activation is leaky ReLU 0.2
times sqrt 2):

- ``fromrgb``: a 1x1 conv from RGB to the channels of the top resolution;
- one residual :class:`DiscriminatorBlock` per resolution ``R, R/2, ..., 8``: ``(skip(x) + conv1(conv0(x)))``
  scaled by sqrt 1/2 (StyleGAN2's ``gain = sqrt(0.5)`` on both paths); ``conv1`` (3x3) and ``skip`` (1x1, no
  bias) halve the size after blurring with the ``[1, 3, 3, 1]`` FIR filter (``resample_filter``);
- the epilogue at 4x4: minibatch standard deviation (:class:`MinibatchStd`), a 3x3 conv, a fully connected
  layer on the flattened map, and the output layer;
- the text head (``head``). ``"projection"`` (default) is StyleGAN2-ADA's conditional D: the text is mapped
  by ``embed`` (then normalised to unit second moment) and ``cmap_layers`` fully connected layers (learning
  rate x0.01) to ``cmap``, the output layer gives ``cmap_dim`` features ``x``, and the logit is
  ``sum(x * cmap) / sqrt(cmap_dim)``. ``"concat"`` tiles ``cmap`` over the 4x4 map and concatenates it
  before the epilogue's conv (as DF-GAN's head does), and the output layer gives one logit. ``"hybrid"`` (not
  in StyleGAN2) does both: ``cmap`` is tiled and concatenated before the conv, and the output layer's
  ``cmap_dim`` features are projected on ``cmap``, so the text reaches D where it sees the object's place
  (the 4x4 conv) and where it weighs whole-image features (the dot product), as t2i's default D does.
- ``pooled_projection`` (not in StyleGAN2) adds ``<mean over positions of the 4x4 map, W cmap> / sqrt(c4)`` to
  any head: weights shared over positions, as the projection of t2i's default D (with the ``projection`` head
  the pooled map travels beside the output features from :meth:`image_features` to :meth:`condition`).

Channels: ``min(channel_base // size, channel_max)`` for the ``size`` x ``size`` map. The split the
:class:`~t2i.interfaces.Discriminator` interface asks for: :meth:`image_features` runs everything that does
not read the text (for ``projection``, through the output layer; for ``concat`` and ``hybrid``, up to the
minibatch-std channel), and :meth:`condition` the rest, so mismatched captions cost only the head.

Precision: the convolutions run in the autocast dtype (bf16); the minibatch standard deviation, the text
mapping and the head's dot product are computed in fp32, and the logits are fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.interfaces import Discriminator
from t2i.nn import check_context
from t2i.options import require_choices, require_non_negative, require_positive

from .layers import FIR_TAPS, LRELU_GAIN, EqualLinear, bias_lrelu, fir_filter, fp32, normalize_2nd_moment

__all__ = [
    "StyleGANDiscriminatorConfig",
    "StyleGANDiscriminator",
    "DiscriminatorBlock",
    "DownConv2d",
    "MinibatchStd",
    "TextMapping",
    "stylegan_width",
]

SQRT_HALF = math.sqrt(0.5)


def stylegan_width(channel_base: int, channel_max: int, size: int) -> int:
    """Channels of the ``size`` x ``size`` map: ``min(channel_base // size, channel_max)``."""
    return min(channel_base // size, channel_max)


@dataclass
class StyleGANDiscriminatorConfig:
    channel_base: int = field(default=16384, metadata={
        "help": "channels of a map are min(channel_base / size, channel_max); 16384 is StyleGAN2-ADA's paper256 "
                "config (fmaps 0.5), 32768 its stylegan2 config"})
    channel_max: int = field(default=512, metadata={"help": "the most channels of any map (StyleGAN2: 512)"})
    head: Literal["projection", "concat", "hybrid"] = field(default="projection", metadata={
        "help": "'projection': StyleGAN2-ADA's conditional D, sum(features * cmap(text)) / sqrt(cmap_dim); "
                "'concat': cmap(text) tiled over the 4x4 map and concatenated before the epilogue's conv; "
                "'hybrid': both (tiled before the conv, and the output features projected on cmap)"})
    cmap_dim: int = field(default=0, metadata={
        "help": "size of the mapped text cmap; 0: the channels of the 4x4 map (StyleGAN2-ADA's default)"})
    cmap_layers: int = field(default=8, metadata={
        "help": "fully connected layers (lr x0.01) after the text embedding, as StyleGAN2-ADA's D mapping (8)"})
    mbstd_group: int = field(default=4, metadata={
        "help": "minibatch-std group size (StyleGAN2: 4; paper256: 8); a batch it does not divide uses the "
                "largest divisor of the batch below it"})
    mbstd_channels: int = field(default=1, metadata={"help": "minibatch-std feature channels (0: off)"})
    pooled_projection: bool = field(default=False, metadata={
        "help": "add a projection term on the 4x4 map averaged over positions (not in StyleGAN2): "
                "<mean(h4), W cmap> / sqrt(channels), as t2i's default D and t2i-dfgan's hybrid head; its weights "
                "are shared over positions, so a local attribute (a shape) is read the same wherever it is"})
    resample_filter: tuple[float, ...] = field(default=FIR_TAPS, metadata={
        "help": "taps of the low-pass filter applied before each x2 downsampling (StyleGAN2-ADA's "
                "resample_filter, [1, 3, 3, 1]); [1, 1] is a 2x2 box (average pooling), [1] no filter (plain "
                "stride-2 convolutions)"})

    def __post_init__(self) -> None:
        require_positive(self, "channel_base", "channel_max", "mbstd_group")
        require_non_negative(self, "cmap_dim", "cmap_layers", "mbstd_channels")
        require_choices(self)
        self.resample_filter = tuple(float(t) for t in self.resample_filter)
        if not self.resample_filter or sum(self.resample_filter) <= 0:
            raise ValueError(f"resample_filter must have taps with a positive sum (e.g. [1, 3, 3, 1], [1, 1] or [1]), "
                             f"got {list(self.resample_filter)}")


class DownConv2d(nn.Module):
    """StyleGAN2-ADA's ``Conv2dLayer`` as the discriminator uses it: equalized lr, optional x2 downsampling
    (blur with the ``taps`` filter, ``[1, 3, 3, 1]`` by default, then stride 2), optional bias + leaky ReLU
    (``activate``).

    ``down``: a 3x3 conv blurs the input padded by ``1 + (n - 1) // 2`` before and ``1 + (n - 2) // 2`` after
    (``n`` taps; 2 and 2 for StyleGAN's filter) and convolves with stride 2 (StyleGAN's ``conv2d_resample``); a
    1x1 conv blurs with stride 2 first (padding ``(n - 1) // 2`` and ``(n - 2) // 2``; with ``[1, 1]`` that is
    average pooling, with ``[1]`` taking every other pixel). ``gain`` scales the output (sqrt 1/2 in the
    residual sum).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, down: bool = False,
                 bias: bool = True, activate: bool = True, taps: tuple[float, ...] = FIR_TAPS) -> None:
        super().__init__()
        self.down, self.activate, self.kernel_size = down, activate, kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", fir_filter(taps) if down else None, persistent=False)

    def _blur(self, x: Tensor, pad: int, stride: int) -> Tensor:
        """The FIR filter over ``x`` padded by ``pad`` plus upfirdn2d's ``(n - 1) // 2`` before and ``(n - 2) // 2``
        after (``n`` taps; negative crops), so any number of taps keeps the pixel grid of a x2 downsampling."""
        n = self.resample_filter.shape[0]
        before, after = pad + (n - 1) // 2, pad + (n - 2) // 2
        x = F.pad(x, (before, after, before, after))
        if n == 1:  # no filter (the taps are normalised to [1]): only the padding and the stride are left
            return x[:, :, ::stride, ::stride]
        f = self.resample_filter.to(x.dtype)[None, None].expand(x.shape[1], 1, n, n)
        return F.conv2d(x, f, stride=stride, groups=x.shape[1])

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if not self.down:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        elif self.kernel_size == 1:
            x = F.conv2d(self._blur(x, pad=0, stride=2), w)
        else:
            x = F.conv2d(self._blur(x, pad=self.kernel_size // 2, stride=1), w, stride=2)
        if self.activate:
            bias = self.bias if self.bias is not None else torch.zeros(x.shape[1], device=x.device)
            return bias_lrelu(x, bias, LRELU_GAIN * gain)
        x = x * gain if gain != 1.0 else x
        return x if self.bias is None else x + self.bias.to(x.dtype)[None, :, None, None]


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual D: ``(skip(x) + conv1(conv0(x))) * sqrt(1/2)``, halving the size."""

    def __init__(self, in_channels: int, out_channels: int, taps: tuple[float, ...] = FIR_TAPS) -> None:
        super().__init__()
        self.conv0 = DownConv2d(in_channels, in_channels, 3)
        self.conv1 = DownConv2d(in_channels, out_channels, 3, down=True, taps=taps)
        self.skip = DownConv2d(in_channels, out_channels, 1, down=True, bias=False, activate=False, taps=taps)

    def forward(self, x: Tensor) -> Tensor:
        y = self.skip(x, gain=SQRT_HALF)
        return y + self.conv1(self.conv0(x), gain=SQRT_HALF)


class MinibatchStd(nn.Module):
    """Appends ``channels`` feature maps: the standard deviation of each feature over a group of samples,
    averaged over the features (of one of ``channels`` slices) and pixels, and tiled over the map.

    Groups take every ``B / G``-th sample, as StyleGAN2-ADA's ``reshape(G, -1, ...)`` does. ``G`` is the
    group size, or when it does not divide the batch (a last batch of 6 with group 4) the largest divisor of
    the batch below it; a batch of one gets std 0 (well, sqrt 1e-8). Computed in fp32.
    """

    def __init__(self, group_size: int = 4, channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.channels = group_size, channels

    def group(self, batch: int) -> int:
        """The group size used for a batch of ``batch``."""
        return max(g for g in range(1, min(self.group_size, batch) + 1) if batch % g == 0)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g, f = self.group(n), self.channels
        with fp32(x):
            y = x.float().reshape(g, -1, f, c // f, h, w)
            y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
            y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (n / g, F)
            y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class TextMapping(nn.Module):
    """Text embedding -> ``cmap``: ``embed`` (equalized lr), normalised to unit second moment, then ``layers``
    leaky-ReLU fully connected layers with learning rate x0.01 (StyleGAN2-ADA's ``MappingNetwork`` with
    ``z_dim = 0``, as its conditional D builds it). Runs in fp32."""

    def __init__(self, text_dim: int, cmap_dim: int, layers: int) -> None:
        super().__init__()
        self.embed = EqualLinear(text_dim, cmap_dim)
        self.layers = nn.Sequential(*(EqualLinear(cmap_dim, cmap_dim, activation="lrelu", lr_multiplier=0.01)
                                      for _ in range(layers)))

    def forward(self, text: Tensor) -> Tensor:
        with fp32(text):
            return self.layers(normalize_2nd_moment(self.embed(text.float())))


class StyleGANDiscriminator(Discriminator):
    """StyleGAN2's residual discriminator, conditioned on the sentence embedding (see the module docstring)."""

    resolutions = (32, 64, 128, 256)

    def __init__(self, cfg: StyleGANDiscriminatorConfig | None = None, *, resolution: int = 256,
                 text_dim: int = 256) -> None:
        super().__init__()
        cfg = cfg or StyleGANDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        sizes = [resolution // 2**i for i in range(int(math.log2(resolution)) - 1)]  # R, R/2, ..., 4
        widths = [stylegan_width(cfg.channel_base, cfg.channel_max, s) for s in sizes]
        c4 = widths[-1]
        self.cmap_dim = cfg.cmap_dim or c4

        self.fromrgb = DownConv2d(3, widths[0], 1)
        self.blocks = nn.ModuleList(DiscriminatorBlock(i, o, cfg.resample_filter)
                                    for i, o in zip(widths[:-1], widths[1:]))
        self.mbstd = MinibatchStd(cfg.mbstd_group, cfg.mbstd_channels) if cfg.mbstd_channels else nn.Identity()
        self.mapping = TextMapping(text_dim, self.cmap_dim, cfg.cmap_layers)
        text_in = self.cmap_dim if cfg.head in ("concat", "hybrid") else 0
        self.conv = DownConv2d(c4 + cfg.mbstd_channels + text_in, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualLinear(c4, 1 if cfg.head == "concat" else self.cmap_dim)
        self.c4 = c4
        self.pool_embed = EqualLinear(self.cmap_dim, c4) if cfg.pooled_projection else None

    def _epilogue(self, x: Tensor) -> Tensor:
        """The 4x4 map (with its minibatch-std channel) -> conv, fc, output layer (fp32 output)."""
        x = self.fc(self.conv(x).flatten(1))
        with fp32(x):
            return self.out(x.float())

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.fromrgb(image)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        if self.cfg.head != "projection":
            return self.mbstd(x), features
        h = self._epilogue(self.mbstd(x))
        if self.pool_embed is not None:  # the pooled 4x4 map travels beside the output features
            h = torch.cat([h, x.float().mean(dim=(2, 3))], dim=1)
        return h, features

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        cmap = self.mapping(text)
        pooled = None
        if self.pool_embed is not None:
            pooled = h[:, self.cmap_dim:] if self.cfg.head == "projection" else h[:, :self.c4].float().mean(dim=(2, 3))
            h = h[:, :self.cmap_dim] if self.cfg.head == "projection" else h
        if self.cfg.head != "projection":  # the text tiled over the 4x4 map, before the epilogue's conv
            tiled = cmap.to(h.dtype)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            h = self._epilogue(torch.cat([h, tiled], dim=1))
        with fp32(h):
            if self.cfg.head == "concat":
                logits = h.float().flatten()
            else:
                logits = (h.float() * cmap).sum(dim=1) / math.sqrt(self.cmap_dim)
            if pooled is not None:
                logits = logits + (pooled.float() * self.pool_embed(cmap)).sum(dim=1) / math.sqrt(self.c4)
            return logits
