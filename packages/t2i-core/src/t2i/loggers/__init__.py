"""Experiment trackers: the :class:`Logger` interface, and choosing and building a run's loggers.

A run's loggers are named in its config (``[log] loggers = ["tensorboard", "mlflow"]``, or ``t2i run
--logger mlflow --logger tensorboard``; ``--logger none`` for none) with options per logger in
``[log.options.NAME]`` (``t2i describe logger mlflow``). TensorBoard is the default and a built-in; more
come from plugins through the hook ``t2i_register_loggers``::

    @t2i.hookimpl
    def t2i_register_loggers(register):
        register("mlflow", "t2i_mlflow.logger:MLflowLogger", config="t2i_mlflow.logger:MLflowConfig",
                 help="MLflow tracking (local SQLite store by default)")
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..config_tree import flatten
from ..errors import UsageError
from .base import Logger

__all__ = ["Logger", "NONE", "check_loggers", "build_loggers", "run_params", "scalars"]

NONE = "none"  # --logger none: no logger at all


def check_loggers(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The logger names to use, checked: each installed (else a one-line :class:`UsageError` listing the known
    ones), named once, and options only for loggers in use, valid for each. ``["none"]`` means none."""
    from ..plugins import registry

    names = list(names)
    if NONE in names:
        if len(names) > 1:
            raise UsageError(f"logger 'none' means no logger; it cannot go with {', '.join(n for n in names if n != NONE)}")
        names = []
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise UsageError(f"logger '{doubled[0]}' is named twice")
    loggers = registry("loggers")
    for name in names:
        loggers.get(name)  # unknown name: "unknown logger 'x'; did you mean ...? installed: ..."
    unused = sorted(set(options or {}) - set(names))
    if unused:
        raise UsageError(f"options given for logger '{unused[0]}', which is not among the loggers used "
                         f"({', '.join(names) or 'none'})")
    for name in names:
        loggers.make_config(name, (options or {}).get(name))
    return names


def build_loggers(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Logger]:
    """``{name: logger}``, each built from its options (not started)."""
    from ..plugins import registry

    loggers = registry("loggers")
    built = {}
    for name in check_loggers(names, options):
        logger = loggers.create(name, (options or {}).get(name))
        if not isinstance(logger, Logger):
            raise UsageError(f"logger '{name}' ({loggers.owner(name)}) built a {type(logger).__name__}, "
                             f"not a t2i.loggers.Logger")
        built[name] = logger
    return built


def run_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config tree as a tracker's parameters: dotted keys, values that are numbers, booleans or text
    (lists and empty tables as their text), sorted by key."""
    out = {}
    for key, value in sorted(flatten(config).items()):
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a logged record (booleans, text and lists such as ``health`` left out)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
