"""SNGAN (Miyato et al. 2018) ResNet generator and discriminator as t2i components named ``specnorm``.

Discriminator: residual down blocks (ReLU, conv3x3, ReLU, conv3x3, 2x2 average pool, plus a 1x1 shortcut;
the first block has no leading ReLU and pools before its shortcut) down to 4x4, then one more block at
4x4 without pooling (:meth:`image_features`). Spectral norm on every layer. Head (:meth:`condition`):
- ``projection`` (Miyato & Koyama 2018): ``linear(sum(relu(h))) + <embed(text), sum(relu(h))>``;
- ``concat``: text -> linear + ReLU, tiled over the 4x4 map and concatenated with ``relu(h)``, then a 1x1
  conv + ReLU, sum pooling and a linear layer to one logit.

Generator: ``Linear([z; text])`` -> 4x4 map -> residual up blocks (conditional BN, ReLU, x2 nearest,
conv3x3; conditional BN, ReLU, conv3x3; plus a 1x1 shortcut) -> BN, ReLU, conv3x3, tanh. Conditional BN is
BatchNorm without affine, then ``(1 + gamma(c)) * x + beta(c)`` with ``c = [z; text]``; ``gamma`` and
``beta`` start at zero (:class:`t2i.nn.CondBatchNorm2d`). As in SNGAN, the generator itself has no spectral norm.

Widths: the map at resolution r has ``ch * max(R // (2r), 1)`` channels in both networks (DCGAN's
doubling towards 4x4: at 64 px, 8 ch at 4x4, 4 ch at 8x8, 2 ch at 16x16 and ch at 32x32 and 64x64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from t2i.interfaces import Discriminator, Generator
from t2i.nn import CondBatchNorm2d, check_context, doubling_width, map_sizes, trunk_features
from t2i.options import require_choices, require_positive

__all__ = [
    "SNGANGeneratorConfig",
    "SNGANDiscriminatorConfig",
    "SNGANGenerator",
    "SNGANDiscriminator",
]


@dataclass
class SNGANGeneratorConfig:
    ch: int = field(
        default=32, metadata={"help": "channels at the output resolution; doubled per step towards 4x4"}
    )
    z_dim: int = field(default=128, metadata={"help": "size of the noise vector z"})

    def __post_init__(self) -> None:
        require_positive(self, "ch", "z_dim")


@dataclass
class SNGANDiscriminatorConfig:
    ch: int = field(
        default=32, metadata={"help": "channels of the first block; doubled per step towards 4x4"}
    )
    n_power_iterations: int = field(
        default=1, metadata={"help": "power iterations per training forward pass of each spectral norm"}
    )
    conditioning: Literal["projection", "concat"] = field(
        default="projection",
        metadata={"help": "'projection': <embed(text), pooled h> (Miyato & Koyama); 'concat': tiled text"},
    )

    def __post_init__(self) -> None:
        require_positive(self, "ch", "n_power_iterations")
        require_choices(self)


def _init(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """SNGAN's init: Xavier-uniform weights (gain sqrt(2) inside residual branches), zero biases."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


# --------------------------------------------------------------------------------------------------
# Generator


class GBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.norm1 = CondBatchNorm2d(in_ch, cond_dim)
        self.conv1 = _init(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), math.sqrt(2))  # norm2 follows
        self.norm2 = CondBatchNorm2d(out_ch, cond_dim)
        self.conv2 = _init(nn.Conv2d(out_ch, out_ch, 3, padding=1), math.sqrt(2))
        self.shortcut = _init(nn.Conv2d(in_ch, out_ch, 1))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x, c)), scale_factor=2.0)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0))


class SNGANGenerator(Generator):
    """SNGAN ResNet generator with conditional BN from [z; text] (no spectral norm in G, as in SNGAN)."""

    resolutions = (32, 64, 128)

    def __init__(
        self, cfg: SNGANGeneratorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or SNGANGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        widths = [doubling_width(cfg.ch, resolution, r) for r in map_sizes(resolution)]  # 4x4 ... R
        cond_dim = cfg.z_dim + text_dim

        self.fc = _init(nn.Linear(cond_dim, widths[0] * 16))
        self.blocks = nn.ModuleList(GBlock(i, o, cond_dim) for i, o in zip(widths[:-1], widths[1:]))
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.to_rgb = _init(nn.Conv2d(widths[-1], 3, 3, padding=1))

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        c = torch.cat([z, text], dim=1)
        x = self.fc(c).view(c.shape[0], -1, 4, 4)
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(F.relu(self.out_norm(x))))


# --------------------------------------------------------------------------------------------------
# Discriminator


class DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, sn: nn.Module, first: bool = False, down: bool = True):
        super().__init__()
        self.first, self.down = first, down  # first: the image itself, no ReLU before conv1
        self.conv1 = sn(_init(nn.Conv2d(in_ch, out_ch, 3, padding=1), math.sqrt(2)))
        self.conv2 = sn(_init(nn.Conv2d(out_ch, out_ch, 3, padding=1), math.sqrt(2)))
        self.shortcut = sn(_init(nn.Conv2d(in_ch, out_ch, 1))) if first or down or in_ch != out_ch else None

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: Tensor) -> Tensor:
        h = self._pool(self.conv2(F.relu(self.conv1(x if self.first else F.relu(x)))))
        if self.shortcut is None:
            return h + x
        sc = self.shortcut(self._pool(x)) if self.first else self._pool(self.shortcut(x))
        return h + sc


class SNGANDiscriminator(Discriminator):
    """SNGAN ResNet discriminator (Miyato et al. 2018): spectral norm on every layer, text head."""

    resolutions = (32, 64, 128)

    def __init__(
        self, cfg: SNGANDiscriminatorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or SNGANDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        widths = [doubling_width(cfg.ch, resolution, r) for r in map_sizes(resolution)[-2::-1]]  # R/2 ... 4

        def sn(layer: nn.Module) -> nn.Module:
            return spectral_norm(layer, n_power_iterations=cfg.n_power_iterations)

        ins = [3] + widths[:-1]
        self.blocks = nn.ModuleList(
            [DBlock(i, o, sn, first=k == 0) for k, (i, o) in enumerate(zip(ins, widths))]
            + [DBlock(widths[-1], widths[-1], sn, down=False)]  # SNGAN's last block, at 4x4
        )
        ch = widths[-1]
        if cfg.conditioning == "concat":
            self.text_proj = sn(_init(nn.Linear(text_dim, ch)))
            self.joint = sn(_init(nn.Conv2d(2 * ch, ch, 1)))
        else:
            self.embed = sn(_init(nn.Linear(text_dim, ch, bias=False)))
        self.out = sn(_init(nn.Linear(ch, 1)))

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return trunk_features(image, self.blocks)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        h = F.relu(h)
        if self.cfg.conditioning == "concat":
            t = F.relu(self.text_proj(text))[:, :, None, None].expand(-1, -1, *h.shape[2:])
            return self.out(F.relu(self.joint(torch.cat([h, t], dim=1))).sum(dim=(2, 3))).flatten()
        pooled = h.sum(dim=(2, 3))
        return self.out(pooled).flatten() + (self.embed(text) * pooled).sum(dim=1)
