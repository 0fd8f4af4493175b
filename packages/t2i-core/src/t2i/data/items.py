"""The records a data set on disk is listed as: an :class:`Item` per image, and the :class:`Problems` met.

They are shared by the listing stage (:mod:`t2i.data.source` and the formats) and the image cache
(:mod:`t2i.data.image_cache`), which reports the images it could not decode in the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["Item", "Problem", "Problems"]


@dataclass
class Item:
    """One image of a split: ``key`` is unique in the data set (a relative path without suffix, an id)."""

    key: str
    path: Path
    captions: list[str]
    box: tuple[float, float, float, float] | None = None  # (x, y, width, height) in source pixels
    size: int = -1  # bytes and modification time of the image file (they key the image cache)
    mtime_ns: int = -1
    # the image's bytes when it is not a file of its own (a row of an Arrow table: ``hf``); ``path`` then only
    # names it in reports. It raises image_cache.BadImage when the bytes cannot be had.
    read: Callable[[], bytes] | None = None


@dataclass(frozen=True)
class Problem:
    kind: str  # "unreadable image", "missing caption file", ...
    where: str  # the file or key concerned
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


class Problems:
    """Problems found in a source, in the order met; counted by kind."""

    def __init__(self, items: list[Problem] | None = None):
        self.items: list[Problem] = list(items or [])

    def add(self, kind: str, where: str | Path, detail: str = "") -> None:
        self.items.append(Problem(kind, str(where), detail))

    def extend(self, other: "Problems") -> None:
        self.items.extend(other.items)

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.items))

    def summary(self) -> str:
        """``"2 unreadable image, 1 missing caption file"`` (most frequent first)."""
        return ", ".join(f"{n} {kind}" for kind, n in Counter(p.kind for p in self.items).most_common())

    def to_list(self) -> list[dict[str, str]]:
        return [p.to_dict() for p in self.items]

    @classmethod
    def from_list(cls, rows: list[dict[str, str]]) -> "Problems":
        return cls([Problem(r["kind"], r["where"], r.get("detail", "")) for r in rows])

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items)
