"""What a metric key's last part means, in one place for the run summary, study reports and comparisons.

A metric returns a dict of figures keyed ``name`` or ``name/part``. Keys ending in one of
:data:`SUBSETS` are columns of their base key: ``/seen`` and ``/unseen`` are the figure on test captions
whose attribute combination was seen in training or held out, ``/real`` is the same figure computed on
the real test images: the ceiling the generator is measured against (identical for every run, so never a
"best"). Keys ending in one of :data:`SPREADS` (``kid/std``) are the spread of their base key, not a figure
to rank.
"""

from __future__ import annotations

__all__ = ["SUBSETS", "SUBSET_HEADERS", "SPREADS", "split_key", "is_ceiling", "is_spread", "evaluation_table"]

SUBSETS = ("seen", "unseen", "real")
SUBSET_HEADERS = {"all": "value", "seen": "seen combinations", "unseen": "held-out combinations",
                  "real": "real images (ceiling)"}
SPREADS = ("std",)


def split_key(key: str) -> tuple[str, str]:
    """``("shapes/shape", "seen")`` for ``"shapes/shape/seen"``; ``(key, "all")`` when no subset ends it."""
    base, _, last = key.rpartition("/")
    return (base, last) if base and last in SUBSETS else (key, "all")


def is_ceiling(key: str) -> bool:
    """A figure of the real images (``.../real``): a reference, the same in every run."""
    return split_key(key)[1] == "real"


def is_spread(key: str) -> bool:
    """A standard deviation reported beside its mean (``kid/std``)."""
    return key.rpartition("/")[2] in SPREADS


def evaluation_table(values: dict[str, float]) -> list[str]:
    """Markdown rows: one per metric key, with ``/seen``, ``/unseen`` and ``/real`` (the ceiling) as columns."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        base, column = split_key(key)
        rows.setdefault(base, {})[column] = value
    columns = [c for c in ("all", *SUBSETS) if any(c in r for r in rows.values())]
    out = ["| metric | " + " | ".join(SUBSET_HEADERS[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, row in rows.items():
        out.append(f"| {key} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in columns) + " |")
    return out
