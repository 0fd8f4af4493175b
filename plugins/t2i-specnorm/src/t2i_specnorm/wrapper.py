"""Spectral norm as a modifier: :func:`apply_spectral_norm` and the ``sn`` discriminator wrapper.

``sn`` builds another registered discriminator through the registry and spectrally normalises each of its
Conv/ConvTranspose/Linear/Embedding weights that is not normalised already::

    t2i run --disc sn -D base=dcgan -D base_options="ndf=32,norm=none,conditioning=projection"

Everything else is the base's: forward, trunk and head, resolutions, ``progressive``,
``provides_features`` and the training hooks are delegated to it unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm

from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, Discriminator
from t2i.options import config_to_dict, parse_option_string, require_positive
from t2i.plugins import registry

__all__ = [
    "apply_spectral_norm",
    "is_spectrally_normalised",
    "SNWrapperConfig",
    "SNDiscriminator",
]

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)  # _ConvNd: Conv1-3d and ConvTranspose1-3d


def is_spectrally_normalised(module: nn.Module) -> bool:
    """True if ``module.weight`` already has spectral norm (the parametrization, or the older hook)."""
    if hasattr(module, "weight_orig"):  # torch.nn.utils.spectral_norm (hook-based, deprecated)
        return True
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, _SpectralNorm) for p in module.parametrizations.weight
    )


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> list[str]:
    """Spectrally normalise each Conv/ConvTranspose/Linear/Embedding weight in ``module`` not normalised yet.

    Returns the names of the layers it normalised. An all-zero weight (a zero-initialised modulation layer)
    has no direction to normalise, so it raises :class:`ValueError` naming the layer instead of producing NaN.
    """
    todo = [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, _LAYERS)
        and isinstance(getattr(m, "weight", None), Tensor)
        and not is_spectrally_normalised(m)
    ]
    for name, m in todo:
        if not m.weight.detach().any():
            raise ValueError(f"layer '{name}' has an all-zero weight; spectral norm would divide by zero")
        spectral_norm(m, n_power_iterations=n_power_iterations)
    return [name for name, _ in todo]


@dataclass
class SNWrapperConfig:
    base: str = field(
        default="dcgan", metadata={"help": "the registered discriminator to spectrally normalise"}
    )
    base_options: dict[str, Any] | str = field(
        default_factory=dict,
        metadata={"help": "the base's options: a TOML table, or 'key=value,key=value' on the command line"},
    )
    n_power_iterations: int = field(
        default=1, metadata={"help": "power iterations per training forward pass of each added spectral norm"}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.base, str) or not self.base:
            raise ValueError(f"base must name a registered discriminator, got {self.base!r}")
        if self.base == "sn":
            raise ValueError("base: 'sn' cannot wrap itself; name the discriminator to normalise")
        if isinstance(self.base_options, str):
            self.base_options = parse_option_string(self.base_options)
        require_positive(self, "n_power_iterations")


class SNDiscriminator(Discriminator):
    """Another registered discriminator with spectral norm on each Conv/Linear/Embedding weight.

    Its resolutions, ``progressive`` and ``provides_features`` are the base's; the class-level
    ``resolutions`` only lets the engine's early check pass, and the base refuses what it cannot build.
    """

    resolutions = (8, 16, 32, 64, 128, 256)

    def __init__(
        self, cfg: SNWrapperConfig | None = None, *, resolution: int = 64, text_dim: int = 128
    ) -> None:
        super().__init__()
        cfg = cfg or SNWrapperConfig()
        discriminators = registry("discriminators")
        try:
            base_cfg = discriminators.make_config(cfg.base, cfg.base_options)
        except UsageError as exc:  # unknown base, or options the base rejects
            raise ValueError(f"base: {exc}") from None
        base = discriminators.create(cfg.base, base_cfg, resolution=resolution, text_dim=text_dim)
        if not isinstance(base, Discriminator):
            raise ValueError(f"base '{cfg.base}' built a {type(base).__name__}, not a t2i Discriminator")
        # Written back so that the run's config.toml records the base's defaults as well.
        cfg.base_options = config_to_dict(base_cfg) if dataclasses.is_dataclass(base_cfg) else {}
        self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
        self.resolutions = base.resolutions
        self.progressive = base.progressive
        self.provides_features = base.provides_features
        self.base = base
        self.normalised = apply_spectral_norm(base, cfg.n_power_iterations)

    def on_train_step(self, step: int, images_seen: int) -> None:
        self.base.on_train_step(step, images_seen)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.base.image_features(image)

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        return self.base.condition(h, text)

    def forward(self, image: Tensor, text: Tensor, mismatched_text: Tensor | None = None) -> DiscOutput:
        return self.base(image, text, mismatched_text)
