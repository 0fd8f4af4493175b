"""The kit's toy networks: the smallest valid generator and discriminator, the partners a loss or a single
network is checked with, registered as ``testing-toy`` only while a check needs them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..hookspecs import hookimpl
from ..interfaces import Discriminator, Generator
from ..nn import check_context
from ..options import require_positive
from ..plugins import get_plugin_manager, register_plugin, unregister_plugin

TOY = "testing-toy"  # the name the toy networks are registered under, only while a check needs them
_TOY_PLUGIN = "t2i.testing"


@dataclass
class ToyConfig:
    width: int = field(default=8, metadata={"help": "channels of every layer"})
    z_dim: int = field(default=8, metadata={"help": "size of the noise vector (generator)"})

    def __post_init__(self) -> None:
        require_positive(self, "width", "z_dim")


class ToyGenerator(Generator):
    """[z; text] -> a 4x4 map -> (nearest x2 + conv3x3 + LeakyReLU) per doubling -> conv3x3 to RGB -> tanh."""

    resolutions = (8, 16, 32, 64, 128, 256)

    def __init__(self, cfg: ToyConfig | None = None, *, resolution: int = 32, text_dim: int = 16):
        super().__init__()
        cfg = cfg or ToyConfig()
        n_up = check_context(type(self), resolution, text_dim)
        self.resolution, self.text_dim, self.z_dim, w = resolution, text_dim, cfg.z_dim, cfg.width
        self.fc = nn.Linear(cfg.z_dim + text_dim, w * 16)
        self.blocks = nn.ModuleList(nn.Conv2d(w, w, 3, 1, 1) for _ in range(n_up))
        self.to_rgb = nn.Conv2d(w, 3, 3, 1, 1)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        x = nn.functional.leaky_relu(self.fc(torch.cat([z, text], 1)), 0.2).view(z.shape[0], -1, 4, 4)
        for conv in self.blocks:
            x = nn.functional.leaky_relu(
                conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")), 0.2
            )
        return torch.tanh(self.to_rgb(x))


class ToyDiscriminator(Discriminator):
    """conv4x4 stride 2 + LeakyReLU down to 4x4 (the features), then a projection head on the pooled map."""

    resolutions = (8, 16, 32, 64, 128, 256)

    def __init__(self, cfg: ToyConfig | None = None, *, resolution: int = 32, text_dim: int = 16):
        super().__init__()
        cfg = cfg or ToyConfig()
        n_down = check_context(type(self), resolution, text_dim)
        self.resolution, self.text_dim, w = resolution, text_dim, cfg.width
        self.blocks = nn.ModuleList(nn.Conv2d(3 if i == 0 else w, w, 4, 2, 1) for i in range(n_down))
        self.out = nn.Linear(w, 1)
        self.embed = nn.Linear(text_dim, w, bias=False)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        features, h = [], image
        for conv in self.blocks:
            h = nn.functional.leaky_relu(conv(h), 0.2)
            features.append(h)
        return h, features

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        pooled = h.mean(dim=(2, 3))
        return self.out(pooled).flatten() + (self.embed(text) * pooled).sum(dim=1)


class _ToyPlugin:
    """Registers the toy networks as ``testing-toy`` while a check needs them."""

    @hookimpl
    def t2i_register_generators(self, register: Callable[..., Any]) -> None:
        register(TOY, ToyGenerator, config=ToyConfig, help="The conformance kit's toy generator (tests only)")

    @hookimpl
    def t2i_register_discriminators(self, register: Callable[..., Any]) -> None:
        register(
            TOY,
            ToyDiscriminator,
            config=ToyConfig,
            help="The conformance kit's toy discriminator (tests only)",
        )


@contextlib.contextmanager
def _toys_registered() -> Iterator[None]:
    if get_plugin_manager().get_plugin(_TOY_PLUGIN) is not None:  # a check inside a check
        yield
        return
    register_plugin(_ToyPlugin(), name=_TOY_PLUGIN, distribution="t2i-core (t2i.testing)")
    try:
        yield
    finally:
        unregister_plugin(_TOY_PLUGIN)
