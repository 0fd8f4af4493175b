"""An example t2i plugin: copy this package to start your own.

Registers (see :mod:`.plugin`): the generator ``tiny_mlp``, the loss term ``mean_brightness`` and the
metric ``pixel_mean``.
"""

from .losses import MeanBrightness, MeanBrightnessConfig
from .metrics import PixelMean, PixelMeanConfig
from .models import TinyMLPConfig, TinyMLPGenerator

__all__ = [
    "TinyMLPGenerator",
    "TinyMLPConfig",
    "MeanBrightness",
    "MeanBrightnessConfig",
    "PixelMean",
    "PixelMeanConfig",
]
