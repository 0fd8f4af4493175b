"""What a metric key means, in one place for the run summary, study reports and comparisons.

A metric returns a dict of figures keyed ``name`` or ``name/part``. Keys ending in one of
:data:`SUBSETS` are columns of their base key: ``/seen`` and ``/unseen`` are the figure on test captions
whose attribute combination was seen in training or held out, ``/rephrased`` the figure on captions
in phrasings that never occur in training, ``/real`` is the same figure computed on
the real test images: the ceiling the generator is measured against (identical for every run, so never a
"best"; so are other figures of the real images, ``r_precision/real_std``,
``diversity/real_between_captions``). Keys ending in one of :data:`SPREADS` (``kid/std``) are the spread
of their base key, not a figure to rank.

Which metric produced a logged key (:func:`producer`): the registered metric whose name is the key or the
key's first part (``kid/std`` -> ``kid``). Which value of a key is best (:func:`goal`): what that metric
declares (:attr:`t2i.interfaces.Metric.higher_is_better` and :attr:`~t2i.interfaces.Metric.goals`).
"""

from __future__ import annotations

from typing import Iterable

from ..errors import UsageError
from ..interfaces import GOALS, Metric

__all__ = ["SUBSETS", "SUBSET_HEADERS", "SPREADS", "split_key", "is_ceiling", "is_spread", "producer", "goal",
           "evaluation_table"]

SUBSETS = ("seen", "unseen", "rephrased", "real")
SUBSET_HEADERS = {"all": "value", "seen": "seen combinations", "unseen": "held-out combinations",
                  "rephrased": "held-out phrasings", "real": "real images (ceiling)"}
SPREADS = ("std",)


def split_key(key: str) -> tuple[str, str]:
    """``("shapes/shape", "seen")`` for ``"shapes/shape/seen"``; ``(key, "all")`` when no subset ends it."""
    base, _, last = key.rpartition("/")
    return (base, last) if base and last in SUBSETS else (key, "all")


def is_ceiling(key: str) -> bool:
    """A figure of the real images (``.../real``, ``.../real_std``): a reference, the same in every run."""
    last = key.rpartition("/")[2]
    return bool(key.rpartition("/")[0]) and (last == "real" or last.startswith("real_"))


def is_spread(key: str) -> bool:
    """A standard deviation reported beside its mean (``kid/std``, ``r_precision/real_std``)."""
    last = key.rpartition("/")[2]
    return last in SPREADS or any(last.endswith(f"_{s}") for s in SPREADS)


def producer(key: str, metric_names: Iterable[str]) -> str | None:
    """The metric (of ``metric_names``) that logged ``key``: the name equal to the key or to its first part,
    the longest such name when several fit; ``None`` when none does."""
    fits = [n for n in metric_names if key == n or key.startswith(f"{n}/")]
    return max(fits, key=len) if fits else None


def goal(key: str, metric: Metric | type[Metric] | None) -> str:
    """``"max"``, ``"min"``, ``"one"`` or ``"none"`` (:data:`t2i.interfaces.GOALS`) for a key that ``metric``
    (a :class:`~t2i.interfaces.Metric` class or instance) logged. Spreads and ceilings are ``"none"``, and so
    is every key of an unknown metric (``None``): a direction nobody declared is not guessed."""
    if metric is None or is_spread(key) or is_ceiling(key):
        return "none"
    wanted = metric.goals.get(split_key(key)[0])
    if wanted is None:
        return "max" if metric.higher_is_better else "min"
    if wanted not in GOALS:
        name = metric.__name__ if isinstance(metric, type) else type(metric).__name__
        raise UsageError(f"metric {name} declares goal {wanted!r} for '{key}'; use one of {', '.join(GOALS)}")
    return wanted


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
