"""Building registered metrics from their names and options, and naming the keys they return.

Shared by a run's evaluation, ``t2i eval`` on a checkpoint and ``t2i eval FOLDER --reference ...``:

    from t2i.metrics.build import build_metrics
    for name, metric, options in build_metrics(["fid", "kid"], {"kid": {"subsets": 10}}): ...
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..interfaces import Metric
from ..plugins import registry

__all__ = ["build_metrics", "flat_key"]


def flat_key(metric: str, key: str) -> str:
    """How a metric's result key is logged: as given when it has a ``/`` (``"shapes_accuracy/colour"``) or is
    the metric's own name (the headline figure: ``"fid"``), else ``"<metric>/<key>"`` (``"kid/std"``)."""
    return key if "/" in key or key == metric else f"{metric}/{key}"


def build_metrics(names: list[str], options: dict[str, dict[str, Any]]) -> list[tuple[str, Metric, dict[str, Any]]]:
    """Create each metric; return ``(name, metric, full options)``. Options for unused metrics are an error."""
    unused = set(options) - set(names)
    if unused:
        raise UsageError(f"eval.options has options for metrics that are not computed: {', '.join(sorted(unused))}")
    reg = registry("metrics")
    out = []
    for name in names:
        metric, full_options = reg.build(name, options.get(name, {}))
        if not isinstance(metric, Metric):
            raise UsageError(f"metric '{name}' built a {type(metric).__name__}, which is not a t2i Metric")
        out.append((name, metric, full_options))
    return out
