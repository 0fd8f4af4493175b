"""Optuna, imported on first use (a study without ``[search]`` never loads it), and its database storage."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import UsageError

__all__ = ["HEARTBEAT_S", "GRACE_S", "optuna_module", "open_storage", "masked_url"]

HEARTBEAT_S = 60  # a running trial's process records a heartbeat this often ...
GRACE_S = 300  # ... and is taken for dead when it has not for this long


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency of t2i-core
        raise UsageError("a [search] study needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(url: str, *, heartbeat: bool = True) -> Any:
    optuna = optuna_module()
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    if heartbeat:
        kwargs.update(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot open the search storage {masked_url(url)}: {first}") from None


def masked_url(url: str) -> str:
    """A database URL without its password."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url
