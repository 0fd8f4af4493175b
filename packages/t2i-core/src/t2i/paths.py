"""Where t2i keeps what it computes once and reuses: ``$T2I_CACHE_DIR``, else ``~/.cache/t2i``.

Under it: ``embeddings/`` (frozen text encoders' caption embeddings), ``images/`` (decoded image caches of
on-disk data sets), ``metrics/`` (real-data features and statistics), and the trained evaluators
(attribute reader, R-precision evaluator). Each component also takes its own ``cache_dir`` option.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$T2I_CACHE_DIR``, else ``~/.cache/t2i``."""
    return Path(os.environ.get("T2I_CACHE_DIR") or Path.home() / ".cache" / "t2i")
