"""Self-attention GAN (SAGAN, Zhang et al. 2019) for t2i: a generator and a discriminator named ``sagan``.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it
_EXPORTS = {
    "SAGANGenerator": "models",
    "SAGANGeneratorConfig": "models",
    "SAGANDiscriminator": "models",
    "SAGANDiscriminatorConfig": "models",
    "SelfAttention": "models",
    "CondBatchNorm2d": "models",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
