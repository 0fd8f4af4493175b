"""Which value of a metric key is best in a study: the study's ``lower_is_better`` patterns, else what the
metric that logged the key declares (:func:`t2i.metrics.keys.goal`). Used by the report (ranking) and by the
study file's checks (a search objective's direction)."""

from __future__ import annotations

import fnmatch

from ..errors import UsageError
from ..interfaces import Metric
from ..metrics.keys import goal as declared_goal
from ..metrics.keys import producer
from ..plugins import registry

__all__ = ["goal"]


def goal(key: str, lower_is_better: list[str] | tuple[str, ...] = ()) -> str:
    """``"max"``, ``"min"``, ``"one"`` (closest to 1) or ``"none"`` (descriptive, not ranked) for a metric key:
    ``"min"`` when it matches a ``lower_is_better`` pattern, else what the installed metric that logged it
    declares."""
    if any(fnmatch.fnmatch(key, p) for p in lower_is_better):
        return "min"
    metrics = registry("metrics")
    name = producer(key, metrics.names())
    return declared_goal(key, _declared(name) if name is not None else None)


def _declared(name: str) -> Metric | type[Metric] | None:
    """Metric ``name``'s class, where it declares its facts; a factory function's metric is built (default
    options) to read them, and one that cannot be built declares nothing."""
    factory = registry("metrics").get(name).factory
    if isinstance(factory, type) and issubclass(factory, Metric):
        return factory
    try:
        metric, _ = registry("metrics").build(name)
    except UsageError:
        return None
    return metric if isinstance(metric, Metric) else None
