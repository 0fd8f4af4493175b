"""An example t2i plugin: copy this package to start your own.

Registers (see :mod:`.plugin`): the generator ``tiny_mlp``, the loss term ``mean_brightness`` and the
metric ``pixel_mean``.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it; imported on first use, so loading the plugin loads no network
_EXPORTS = {
    "TinyMLPGenerator": "models",
    "TinyMLPConfig": "models",
    "MeanBrightness": "losses",
    "MeanBrightnessConfig": "losses",
    "PixelMean": "metrics",
    "PixelMeanConfig": "metrics",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
