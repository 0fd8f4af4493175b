"""``mean_brightness``: a generator term that pulls the mean colour of generated images to that of real ones.

A toy, but an honest one: with weight ``w`` the generator's loss gains ``w * sum_c (mean_c(fake) -
mean_c(real))^2``, the squared gap between the batch's per-channel means (or only the overall
brightness with ``per_channel = false``). It declares no ``needs``: the engine always hands a G step
the real images of the batch. Use it with ``--term mean_brightness=1.0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from t2i.interfaces import LossTerm, StepOutputs
from t2i.options import require_choices
from torch import Tensor

__all__ = ["MeanBrightnessConfig", "MeanBrightness"]


@dataclass
class MeanBrightnessConfig:
    per_channel: bool = field(
        default=True,
        metadata={"help": "compare each colour channel's mean (else only the overall brightness)"},
    )

    def __post_init__(self) -> None:
        require_choices(self)  # per_channel is a bool: "yes" or 1 are refused, naming the field


class MeanBrightness(LossTerm):
    """G term: squared gap between the mean colour of the generated batch and of the real batch."""

    def __init__(self, cfg: MeanBrightnessConfig | None = None):
        super().__init__()
        self.cfg = cfg or MeanBrightnessConfig()

    def g_loss(self, out: StepOutputs) -> Tensor:
        dims = (0, 2, 3) if self.cfg.per_channel else (0, 1, 2, 3)
        fake = out.fake_images.float().mean(dim=dims)
        real = out.real_images.detach().float().mean(dim=dims)
        return (fake - real).pow(2).sum()
