"""Writing files so that a reader never sees half of one, and building caches once.

``atomic_path(path)`` yields a temporary name beside ``path`` (unique per writer: process id and random
suffix, so two processes writing the same file never share a temporary) and moves it into place with
``os.replace`` only when the block finishes without an exception; otherwise the temporary is removed and
``path`` keeps its old content. ``write_text`` / ``write_bytes`` are the one-line forms.

``cache_lock(path)`` serialises the build of one cache entry across processes (parallel study jobs, DDP
ranks, two terminals): the first holder builds, the others wait and then find the file built. The lock is a
``filelock.FileLock`` on ``path`` + ``.lock``; call sites re-check for the finished file after acquiring it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

__all__ = ["atomic_path", "write_text", "write_bytes", "cache_lock"]


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success it replaces ``path`` atomically.

    ``suffix`` is appended to the temporary name for writers that insist on an extension (``np.savez`` adds
    ``.npz`` unless the name already ends in it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def cache_lock(path: str | Path, *, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock for building the cache file ``path`` (waits forever by default)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock")), timeout=timeout):
        yield
