"""Lazy re-exports for a plugin package's ``__init__`` (PEP 562), so loading the plugin imports no network.

::

    # my_gans/__init__.py
    from t2i.lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"TinyGenerator": "models", "TinyConfig": "models"})

``from my_gans import TinyGenerator`` imports ``my_gans.models`` on that first use; ``t2i --help`` and
``t2i list``, which only import the plugin's registration module, never do.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose names ``exports`` maps to the submodule
    (relative to ``package``) that defines each."""
    names = list(exports)

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__, names
