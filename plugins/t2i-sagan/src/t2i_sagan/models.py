"""Self-attention GAN (SAGAN, Zhang et al. 2019) as a t2i generator and discriminator.

Both networks are residual, as in the SAGAN/BigGAN reference code, with spectral norm on every
convolution and linear layer (the paper normalises G as well as D) and self-attention after the blocks
whose output has a resolution listed in ``attn_res``.

Generator: ``Linear([z; text])`` -> 4x4 map -> up blocks (conditional BN, ReLU, x2 nearest, conv3x3;
conditional BN, ReLU, conv3x3; plus a 1x1 shortcut) -> BN, ReLU, conv3x3, tanh. Conditional BN is
BatchNorm without affine, then ``(1 + scale(c)) * x + shift(c)`` with ``c = [z; text]`` and linear
``scale`` / ``shift`` (BigGAN's ``ccbn``, built with :class:`t2i.nn.CondBatchNorm2d`).

Discriminator: down blocks (ReLU, conv3x3, ReLU, conv3x3, 2x2 average pool, plus a 1x1 shortcut; the
first block has no leading ReLU) down to 4x4 (:meth:`image_features`), then the projection head of
Miyato & Koyama (2018): ``linear(sum(relu(h))) + <embed(text), sum(relu(h))>`` (:meth:`condition`).

Self-attention: queries and keys with C/8 channels, values with C/2 (keys and values max-pooled 2x2),
a 1x1 conv back to C, added as ``x + gamma * o`` with ``gamma`` learned from 0.

Widths: the map at resolution r has ``ch * max(R // (2r), 1)`` channels in both networks
(:func:`t2i.nn.doubling_width`: DCGAN's doubling towards 4x4: at 64 px, 8 ch at 4x4, 4 ch at 8x8, 2 ch at 16x16 and ch at 32x32 and 64x64).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from t2i.interfaces import Discriminator, Generator
from t2i.nn import CondBatchNorm2d, check_context, doubling_width, map_sizes, trunk_features
from t2i.options import require_positive

__all__ = [
    "SAGANGeneratorConfig",
    "SAGANDiscriminatorConfig",
    "SAGANGenerator",
    "SAGANDiscriminator",
    "SelfAttention",
    "CondBatchNorm2d",
]


def _attn_res(value: object) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in items):
        raise ValueError(f"attn_res must be positive integers (resolutions such as 16,32), got {value!r}")
    return tuple(sorted(set(items)))


@dataclass
class SAGANGeneratorConfig:
    ch: int = field(
        default=32, metadata={"help": "channels at the output resolution; doubled per step towards 4x4"}
    )
    z_dim: int = field(default=128, metadata={"help": "size of the noise vector z"})
    attn_res: tuple[int, ...] = field(
        default=(16,), metadata={"help": "resolutions followed by self-attention, e.g. 16,32 (empty: none)"}
    )

    def __post_init__(self) -> None:
        require_positive(self, "ch", "z_dim")
        self.attn_res = _attn_res(self.attn_res)


@dataclass
class SAGANDiscriminatorConfig:
    ch: int = field(
        default=32, metadata={"help": "channels of the first block; doubled per step towards 4x4"}
    )
    attn_res: tuple[int, ...] = field(
        default=(16,), metadata={"help": "resolutions followed by self-attention, e.g. 16,32 (empty: none)"}
    )

    def __post_init__(self) -> None:
        require_positive(self, "ch")
        self.attn_res = _attn_res(self.attn_res)


def _check(cls: type, resolution: int, text_dim: int, attn_res: tuple[int, ...]) -> None:
    """Validate the build context, and ``attn_res`` against the maps the networks have."""
    check_context(cls, resolution, text_dim)
    inner = map_sizes(resolution)[1:-1]  # 8 ... R/2: maps that both G and D have
    bad = [r for r in attn_res if r not in inner]
    if bad:
        raise ValueError(
            f"attn_res {', '.join(map(str, bad))}: self-attention goes after an intermediate resolution of "
            f"the {resolution} px network, one of {', '.join(map(str, inner))}"
        )


def _sn(layer: nn.Module) -> nn.Module:
    """Orthogonal init (BigGAN's default), zero bias, then spectral norm (one power iteration per step)."""
    nn.init.orthogonal_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return spectral_norm(layer)


def _conv(in_ch: int, out_ch: int, k: int, bias: bool = True) -> nn.Module:
    return _sn(nn.Conv2d(in_ch, out_ch, k, padding=k // 2, bias=bias))


# --------------------------------------------------------------------------------------------------
# Shared blocks


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma * o(softmax(theta(x)^T phi(x)) g(x))``; ``gamma`` starts at 0."""

    def __init__(self, ch: int):
        super().__init__()
        qk, v = max(ch // 8, 1), max(ch // 2, 1)
        self.theta = _conv(ch, qk, 1, bias=False)
        self.phi = _conv(ch, qk, 1, bias=False)
        self.g = _conv(ch, v, 1, bias=False)
        self.o = _conv(v, ch, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = F.max_pool2d(self.phi(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/8)
        v = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, C/2)
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # unscaled logits, as in SAGAN
        return x + self.gamma * self.o(a.transpose(1, 2).reshape(b, -1, h, w))


def _attention(widths: list[int], sizes: list[int], attn_res: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(SelfAttention(w) if r in attn_res else nn.Identity() for w, r in zip(widths, sizes))


def _ccbn(channels: int, cond_dim: int) -> CondBatchNorm2d:
    """BigGAN's ``ccbn``: conditional BN whose ``scale`` and ``shift`` are orthogonal-initialised,
    spectrally normalised linear layers without bias."""
    return CondBatchNorm2d(channels, cond_dim, bias=False, zero_init=False, wrap=_sn, names=("scale", "shift"))


class GBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.norm1 = _ccbn(in_ch, cond_dim)
        self.conv1 = _conv(in_ch, out_ch, 3, bias=False)  # a bias would be removed by norm2
        self.norm2 = _ccbn(out_ch, cond_dim)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.shortcut = _conv(in_ch, out_ch, 1)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x, c)), scale_factor=2.0)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0))


class DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, first: bool = False):
        super().__init__()
        self.first = first  # the image itself: no ReLU before conv1, pool before the shortcut conv
        self.conv1 = _conv(in_ch, out_ch, 3)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.shortcut = _conv(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x if self.first else F.relu(x)))), 2)
        sc = self.shortcut(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.shortcut(x), 2)
        return h + sc


# --------------------------------------------------------------------------------------------------
# Networks


class SAGANGenerator(Generator):
    """SAGAN generator: residual up blocks, conditional BN from [z; text], self-attention, SN throughout."""

    resolutions = (32, 64, 128)

    def __init__(
        self, cfg: SAGANGeneratorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or SAGANGeneratorConfig()
        _check(type(self), resolution, text_dim, cfg.attn_res)
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        sizes = map_sizes(resolution)  # 4, 8, ..., R
        widths = [doubling_width(cfg.ch, resolution, r) for r in sizes]
        cond_dim = cfg.z_dim + text_dim

        self.fc = _sn(nn.Linear(cond_dim, widths[0] * 16))
        self.blocks = nn.ModuleList(GBlock(i, o, cond_dim) for i, o in zip(widths[:-1], widths[1:]))
        self.attn = _attention(widths[1:], sizes[1:], cfg.attn_res)
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.to_rgb = _conv(widths[-1], 3, 3)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        c = torch.cat([z, text], dim=1)
        x = self.fc(c).view(c.shape[0], -1, 4, 4)
        for block, attn in zip(self.blocks, self.attn):
            x = attn(block(x, c))
        return torch.tanh(self.to_rgb(F.relu(self.out_norm(x))))


class SAGANDiscriminator(Discriminator):
    """SAGAN discriminator: residual down blocks, self-attention, SN throughout, projection head."""

    resolutions = (32, 64, 128)

    def __init__(
        self, cfg: SAGANDiscriminatorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or SAGANDiscriminatorConfig()
        _check(type(self), resolution, text_dim, cfg.attn_res)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        sizes = map_sizes(resolution)[-2::-1]  # R/2, ..., 4
        widths = [doubling_width(cfg.ch, resolution, r) for r in sizes]

        ins = [3] + widths[:-1]
        self.blocks = nn.ModuleList(DBlock(i, o, first=k == 0) for k, (i, o) in enumerate(zip(ins, widths)))
        self.attn = _attention(widths, sizes, cfg.attn_res)
        self.out = _sn(nn.Linear(widths[-1], 1))
        self.embed = _sn(nn.Linear(text_dim, widths[-1], bias=False))

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return trunk_features(image, self.blocks, after=self.attn)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        pooled = F.relu(h).sum(dim=(2, 3))
        return self.out(pooled).flatten() + (self.embed(text) * pooled).sum(dim=1)
