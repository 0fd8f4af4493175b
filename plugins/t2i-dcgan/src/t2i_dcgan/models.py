"""Text-conditional DCGAN (GAN-INT-CLS, Reed et al. 2016) as a t2i generator and discriminator.

Generator: ``c = [z; LeakyReLU(Linear(text))]`` -> a 4x4 map -> ConvTranspose(4, 2, 1) blocks with
BatchNorm + ReLU -> ConvTranspose to 3 channels + tanh. How the text conditions the features
(``conditioning``):

- ``"concat"`` (GAN-INT-CLS, Reed et al. 2016): ``c`` enters at the input only;
- ``"cbn"``: every BatchNorm is also modulated per channel by ``c`` (conditional batch norm,
  :class:`t2i.nn.CondBatchNorm2d`);
- ``"affine"`` (DF-GAN's fusion block, Tao et al. 2022): no BatchNorm; every feature map, from the 4x4
  one to the last hidden one, goes through two ``x * (1 + gamma(c)) + beta(c)`` + LeakyReLU(0.2) layers
  whose gamma and beta are small MLPs of ``c`` (:class:`FusionBlock`).

``ca_dim > 0`` adds conditioning augmentation (StackGAN, Zhang et al. 2017): the text embedding gives
``(mu, logvar)`` and the text part of ``c`` is sampled from ``N(mu, exp(logvar))`` in training mode (``mu``
in eval mode), in every conditioning mode. The last ``(mu, logvar)`` is kept in ``ca_stats`` for the
core's ``ca_kl`` loss term.

Discriminator: a conv(4, 2, 1) trunk down to 4x4 (:meth:`image_features`) and a text-conditional head
(:meth:`condition`): GAN-INT-CLS concatenation, or the projection head of Miyato & Koyama (2018).

Widths double per resolution step (:func:`t2i.nn.doubling_width`): G's last hidden layer has ``ngf``
channels and D's first has ``ndf``, so at 64 px the 4x4 maps have ``ngf * 8`` / ``ndf * 8`` channels
(``* 4`` at 32 px, ``* 16`` at 128 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from t2i.interfaces import Discriminator, Generator
from t2i.nn import CondBatchNorm2d, batch_norm, check_context, doubling_width, map_sizes, trunk_features
from t2i.options import require_choices, require_non_negative, require_positive

__all__ = [
    "DCGANGeneratorConfig",
    "DCGANDiscriminatorConfig",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "CondBatchNorm2d",
    "Affine",
    "FusionBlock",
]


@dataclass
class DCGANGeneratorConfig:
    ngf: int = field(
        default=64, metadata={"help": "channels of the last hidden layer; doubled per step towards 4x4"}
    )
    z_dim: int = field(default=100, metadata={"help": "size of the noise vector z"})
    text_proj_dim: int = field(
        default=128,
        metadata={"help": "the text embedding is projected to this size (+ LeakyReLU); unused if ca_dim > 0"},
    )
    conditioning: Literal["concat", "cbn", "affine"] = field(
        default="concat",
        metadata={"help": "'concat': [z; text] at the input only; 'cbn': also modulate each BN by [z; text]; "
                          "'affine': no BN; on every map a DF-GAN fusion block (2x affine from [z; text] "
                          "+ LeakyReLU)"},
    )
    ca_dim: int = field(
        default=0,
        metadata={"help": "conditioning augmentation (StackGAN): text -> (mu, logvar) of this size, "
                          "c sampled in training; 0 = off. Pair it with the loss term ca_kl"},
    )

    def __post_init__(self) -> None:
        require_positive(self, "ngf", "z_dim", "text_proj_dim")
        require_non_negative(self, "ca_dim")
        require_choices(self)


@dataclass
class DCGANDiscriminatorConfig:
    ndf: int = field(
        default=64, metadata={"help": "channels of the first conv layer; doubled per step towards 4x4"}
    )
    text_proj_dim: int = field(
        default=128, metadata={"help": "text projection size of the 'concat' head (unused by 'projection')"}
    )
    norm: Literal["batch", "none"] = field(
        default="batch", metadata={"help": "normalisation of every conv block but the first"}
    )
    spectral_norm: bool = field(
        default=False, metadata={"help": "spectral norm on every conv/linear (usually with norm='none')"}
    )
    conditioning: Literal["concat", "projection", "hybrid"] = field(
        default="concat",
        metadata={"help": "'concat': tile text at 4x4 (GAN-INT-CLS); 'projection': <embed(text), pooled h>; "
                          "'hybrid': the sum of both"},
    )

    def __post_init__(self) -> None:
        require_positive(self, "ndf", "text_proj_dim")
        require_choices(self)


def _init_dcgan(m: nn.Module) -> None:
    """DCGAN init: conv/linear weights N(0, 0.02), BN weights N(1, 0.02), biases 0; CBN starts as identity."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, CondBatchNorm2d):  # apply() visits children first: gamma and beta back to zero
        for lin in (m.gamma, m.beta):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
    elif isinstance(m, Affine):  # the last layers of gamma and beta: the block starts as the identity
        for lin in (m.gamma[-1], m.beta[-1]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)


# --------------------------------------------------------------------------------------------------
# Generator


class Affine(nn.Module):
    """DF-GAN's ``Affine``: ``x * (1 + gamma(c)) + beta(c)`` per channel, gamma and beta Linear-ReLU-Linear.

    The hidden width is the number of channels, as in DF-GAN. DF-GAN initialises the last layer of gamma
    to output 1 and multiplies by it; here it outputs 0 and the scale is ``1 + gamma``: the same function
    at init (the identity), and weight decay pulls towards it.
    """

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(), nn.Linear(channels, channels))
        self.beta = nn.Sequential(nn.Linear(cond_dim, channels), nn.ReLU(), nn.Linear(channels, channels))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return x * (1 + self.gamma(c)[:, :, None, None]) + self.beta(c)[:, :, None, None]


class FusionBlock(nn.Module):
    """DF-GAN's ``DFBLK``: (:class:`Affine`, LeakyReLU 0.2) twice, both conditioned on the same ``c``."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.affine0 = Affine(channels, cond_dim)
        self.affine1 = Affine(channels, cond_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = F.leaky_relu(self.affine0(x, c), 0.2)
        return F.leaky_relu(self.affine1(x, c), 0.2)


class _UpBlock(nn.Module):
    """ConvTranspose(4, 2, 1), then BN + ReLU (``cond_dim=None``), CBN + ReLU, or a fusion block."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int | None, fuse: bool = False):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False)
        self.fused = fuse
        if fuse:
            assert cond_dim is not None
            self.fuse = FusionBlock(out_ch, cond_dim)
        else:
            self.norm = batch_norm(out_ch, cond_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = self.conv(x)
        return self.fuse(x, c) if self.fused else torch.relu(self.norm(x, c))


def _init_without_norm(fc: nn.Linear, convs: list[nn.ConvTranspose2d]) -> None:
    """He init for LeakyReLU(0.2) where no BatchNorm follows (``"affine"``): N(0, 0.02) would shrink the
    features at every layer. A ConvTranspose(4, 2, 1) output pixel sees 2x2 taps of each input channel."""
    gain = nn.init.calculate_gain("leaky_relu", 0.2)
    nn.init.normal_(fc.weight, 0.0, gain / math.sqrt(fc.in_features))
    for conv in convs:
        nn.init.normal_(conv.weight, 0.0, gain / math.sqrt(conv.in_channels * 4))


class DCGANGenerator(Generator):
    """Text-conditional DCGAN generator (GAN-INT-CLS); conditional BN or DF-GAN fusion blocks; optional CA.

    ``ca_stats``: ``(mu, logvar)``, each ``(B, ca_dim)``, of the last forward pass when ``ca_dim > 0``
    (with their graph in training, for the ``ca_kl`` term), else ``None``.
    """

    resolutions = (32, 64, 128)

    def __init__(
        self, cfg: DCGANGeneratorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or DCGANGeneratorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim, self.z_dim = cfg, resolution, text_dim, cfg.z_dim
        self.ca_stats: tuple[Tensor, Tensor] | None = None
        cond_dim = cfg.z_dim + (cfg.ca_dim or cfg.text_proj_dim)
        cbn = cond_dim if cfg.conditioning == "cbn" else None
        self.fused = cfg.conditioning == "affine"
        # the maps from 4x4 to R/2: 8, 4, 2, 1 x ngf at 64 px
        widths = [doubling_width(cfg.ngf, resolution, r) for r in map_sizes(resolution)[:-1]]

        # without CA, 'concat' and 'cbn' create (and so initialise) their modules in the original order
        if cfg.ca_dim:
            self.ca = nn.Linear(text_dim, 2 * cfg.ca_dim)  # -> (mu, logvar)
        else:
            self.text_proj = nn.Sequential(nn.Linear(text_dim, cfg.text_proj_dim), nn.LeakyReLU(0.2))
        self.fc = nn.Linear(cond_dim, widths[0] * 16, bias=False)
        if self.fused:
            self.fc_fuse = FusionBlock(widths[0], cond_dim)
        else:
            self.fc_norm = batch_norm(widths[0], cbn)
        self.blocks = nn.ModuleList(
            _UpBlock(i, o, cond_dim if self.fused else cbn, fuse=self.fused)
            for i, o in zip(widths[:-1], widths[1:])
        )
        self.to_rgb = nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1)
        self.apply(_init_dcgan)
        if self.fused:
            _init_without_norm(self.fc, [block.conv for block in self.blocks])

    def text_condition(self, text: Tensor) -> Tensor:
        """The text part of ``c``: the projected text, or with CA a sample of ``N(mu, exp(logvar))`` (``mu``
        in eval mode). ``eps`` comes from the global torch RNG, which the engine checkpoints."""
        if not self.cfg.ca_dim:
            return self.text_proj(text)
        mu, logvar = self.ca(text).chunk(2, dim=1)
        self.ca_stats = (mu, logvar)
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        c = torch.cat([z, self.text_condition(text)], dim=1)
        x = self.fc(c).view(c.shape[0], -1, 4, 4)
        x = self.fc_fuse(x, c) if self.fused else torch.relu(self.fc_norm(x, c))
        for block in self.blocks:
            x = block(x, c)
        return torch.tanh(self.to_rgb(x))

    def __getstate__(self) -> dict:
        """Copies and pickles leave ``ca_stats`` behind (tensors in a graph cannot be deep-copied)."""
        state = super().__getstate__()
        state["ca_stats"] = None
        return state


# --------------------------------------------------------------------------------------------------
# Discriminator


def _down(in_ch: int, out_ch: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers, nn.LeakyReLU(0.2))


class DCGANDiscriminator(Discriminator):
    """DCGAN discriminator with a GAN-INT-CLS concat head or a projection head (Miyato & Koyama 2018)."""

    resolutions = (32, 64, 128)

    def __init__(
        self, cfg: DCGANDiscriminatorConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or DCGANDiscriminatorConfig()
        check_context(type(self), resolution, text_dim)
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        # the maps from R/2 to 4x4: 1, 2, 4, 8 x ndf at 64 px
        widths = [doubling_width(cfg.ndf, resolution, r) for r in map_sizes(resolution)[-2::-1]]
        batch = cfg.norm == "batch"
        self.blocks = nn.ModuleList(
            _down(i, o, norm=batch and k > 0) for k, (i, o) in enumerate(zip([3] + widths[:-1], widths))
        )
        ch = widths[-1]
        self.concat = cfg.conditioning in ("concat", "hybrid")
        self.projection = cfg.conditioning in ("projection", "hybrid")
        if self.concat:
            self.text_proj = nn.Sequential(nn.Linear(text_dim, cfg.text_proj_dim), nn.LeakyReLU(0.2))
            self.joint = nn.Sequential(nn.Conv2d(ch + cfg.text_proj_dim, ch, 1), nn.LeakyReLU(0.2))
            self.out = nn.Conv2d(ch, 1, 4)
        else:
            self.out = nn.Linear(ch, 1)
        if self.projection:
            self.embed = nn.Linear(text_dim, ch, bias=False)
        self.apply(_init_dcgan)
        if cfg.spectral_norm:
            for m in [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                _spectral_norm(m)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return trunk_features(image, self.blocks)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        """``concat`` sees where things are (its last conv spans the 4x4 map); ``projection`` pools over
        positions, which suits global attributes; ``hybrid`` adds the two."""
        if self.concat:
            t = self.text_proj(text)[:, :, None, None].expand(-1, -1, *h.shape[2:])
            logits = self.out(self.joint(torch.cat([h, t], dim=1))).flatten()
        else:
            logits = self.out(h.sum(dim=(2, 3))).flatten()
        if self.projection:
            logits = logits + (self.embed(text) * h.sum(dim=(2, 3))).sum(dim=1)  # h is already LeakyReLU'd
        return logits
