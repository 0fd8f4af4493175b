"""An example t2i plugin: copy this package to start your own.

Registers (see :mod:`.plugin`): the generator ``tiny_mlp``, the loss term ``mean_brightness`` and the
metric ``pixel_mean``.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it; imported on first use, so loading the plugin loads no network
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "TinyMLPGenerator": "models",
    "TinyMLPConfig": "models",
    "MeanBrightness": "losses",
    "MeanBrightnessConfig": "losses",
    "PixelMean": "metrics",
    "PixelMeanConfig": "metrics",
})
