"""Stopping a search's trial early: the checks a trial's training loop asks after every step.

A check is a callable returning a reason (the run stops, saves and is recorded ``pruned`` with that reason)
or ``None``; the trainer asks its :attr:`t2i.engine.stopping.Stopping.checks` after each step. Two kinds:

- :class:`HealthCheck`: an error-level verdict of the run's own health monitor (``non_finite``,
  ``loss_explosion``, ``d_loss_stuck``, ``d_not_learning``, ``g_not_learning``, ``mode_collapse``) that still
  holds. The monitor judges each logged record as it is written, so the run stops at the step after the
  record that raised the verdict: within one log window. It runs in the training process itself (every
  rank, each with the same records), so it works alike in-process, in ``--jobs`` workers and under torchrun.
- :class:`StopFile`: a file whose appearance stops the run, its text the reason. The search process writes
  it when Optuna's pruner (median or successive halving) judges the run's intermediate evaluations
  (``eval.every``) worse than the other trials' at the same step: the decision needs the search's storage,
  which the training processes never open.

A diverged run (non-finite losses) stops by itself, as every run does; the search records it as pruned
by ``non_finite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.health import HealthMonitor, Verdict

__all__ = ["HealthCheck", "StopFile", "PRUNING_CODES", "error_verdict", "verdict_reason"]

# the error-level verdicts that doom a trial (metric_stalled is info-level; warnings are not pruned)
PRUNING_CODES = ("non_finite", "loss_explosion", "d_loss_stuck", "d_not_learning", "g_not_learning", "mode_collapse")


def error_verdict(verdicts: list[Verdict]) -> Verdict | None:
    """The first error-level verdict that still holds (not cleared), or ``None``."""
    for verdict in verdicts:
        if verdict.severity == "error" and verdict.cleared_at is None and verdict.code in PRUNING_CODES:
            return verdict
    return None


def verdict_reason(verdict: Verdict) -> str:
    """``d_loss_stuck (steps 40-90): <message>``: how a pruned trial's reason reads."""
    steps = f"step {verdict.first_step}" if verdict.first_step == verdict.last_step else \
        f"steps {verdict.first_step}-{verdict.last_step}"
    return f"{verdict.code} ({steps}): {verdict.message}"


class HealthCheck:
    """Stops the run at its first error-level verdict that still holds; ``verdict`` keeps it."""

    def __init__(self, monitor: HealthMonitor):
        self.monitor = monitor
        self.verdict: Verdict | None = None

    def __call__(self) -> str | None:
        found = error_verdict(self.monitor.current())
        if found is None:
            return None
        self.verdict = found
        return verdict_reason(found)

    def describe(self) -> dict[str, Any] | None:
        return None if self.verdict is None else {"by": "health", "verdict": self.verdict.to_dict()}


class StopFile:
    """Stops the run once ``path`` exists; its first line is the reason."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reason: str | None = None

    def __call__(self) -> str | None:
        if not self.path.exists():
            return None
        try:
            text = self.path.read_text().strip()
        except OSError:  # being written: the next step reads it
            return None
        self.reason = text.splitlines()[0] if text else f"stop file {self.path.name}"
        return self.reason

    def describe(self) -> dict[str, Any] | None:
        return None if self.reason is None else {"by": "pruner", "message": self.reason}
