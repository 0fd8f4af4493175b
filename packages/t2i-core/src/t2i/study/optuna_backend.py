"""Optuna, imported on first use (a study without ``[search]`` never loads it), and its database storage."""

from __future__ import annotations

import time
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
    for attempt in range(_CREATE_TRIES):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:  # a bad URL, an unreachable server, a missing driver
            if _lost_creation_race(exc) and attempt + 1 < _CREATE_TRIES:
                time.sleep(0.2 * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"cannot open the search storage {masked_url(url)}: {first}") from None
    raise AssertionError("unreachable")


_CREATE_TRIES = 5


def _lost_creation_race(exc: Exception) -> bool:
    """Workers started together all try to create the empty database's tables; all but one lose (a unique
    constraint on Alembic's version row, or a table that already exists) and succeed when they open it again."""
    text = str(exc).lower()
    return type(exc).__name__ == "IntegrityError" or "already exists" in text or "database is locked" in text


def masked_url(url: str) -> str:
    """A database URL without its password."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url
