"""The run's training log: per-step losses summed on the device, averaged and written every ``log_every`` steps.

Summing stays on the device, so a step does not wait for the GPU; the one device sync is the finiteness
check of the window's averages (:meth:`TrainingLog.non_finite`), at logging and checkpoint steps. Each
written record goes to ``metrics.jsonl`` and the run's loggers (:class:`~t2i.engine.writer.RunWriter`) and
through the health monitor, whose verdict codes are added to the record.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from . import distributed
from .health import HealthMonitor
from .writer import RunWriter

__all__ = ["TrainingLog"]


class TrainingLog:
    """``every``: steps between records. ``images_per_step``: real images through D per step, over all
    processes (for ``img_per_s``)."""

    def __init__(self, writer: RunWriter, health: HealthMonitor, *, every: int, images_per_step: int,
                 world_size: int = 1):
        self.writer, self.health = writer, health
        self.every, self.images_per_step, self.world_size = every, images_per_step, world_size
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0
        self._window_start = time.perf_counter()
        self._averaged: dict[str, torch.Tensor] | None = None

    def start(self) -> None:
        """Open the first window (at the top of the training loop)."""
        self._sums, self._steps, self._window_start = {}, 0, time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        """Add one step's losses to the window (tensors, no sync)."""
        for k, v in losses.items():
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._steps += 1
        self._averaged = None

    @property
    def pending(self) -> bool:
        """Steps were added since the last record."""
        return self._steps > 0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def averaged(self) -> dict[str, torch.Tensor]:
        """The window's sums averaged over processes (one all-reduce; computed once per window state)."""
        if self._averaged is None:
            self._averaged = _mean_over_ranks(self._sums, self.world_size)
        return self._averaged

    def non_finite(self) -> list[str]:
        """The keys whose window sum is NaN or infinite on any rank (one device sync). Every rank gets the
        same answer, so every rank stops at the same step."""
        averaged = self.averaged()
        if not averaged or bool(torch.stack(list(averaged.values())).isfinite().all()):
            return []
        return sorted(k for k, v in averaged.items() if not torch.isfinite(v))

    def write(self, step: int, lr: dict[str, float], epoch: float, elapsed: float) -> dict[str, Any]:
        """Write the window's record (losses averaged per step, the learning rates, throughput, the health
        monitor's findings), start a new window and return the record."""
        now = time.perf_counter()
        record: dict[str, Any] = {k: float(v) / self._steps for k, v in self.averaged().items()}
        record.update(lr)
        record["img_per_s"] = self._steps * self.images_per_step / max(now - self._window_start, 1e-9)
        record["epoch"] = epoch
        record["elapsed_s"] = elapsed
        record.update(self.health.network_health(step))  # health/g_update, health/d_update
        verdicts = self.health.observe(step, record)
        if verdicts:  # the codes of the problems that hold now, for metrics.jsonl and the progress display
            record["health"] = sorted({v.code for v in verdicts})
        self.writer.log(step, record)
        self._sums, self._steps, self._window_start, self._averaged = {}, 0, now, None
        return record

    def evaluation(self, step: int, values: dict[str, float]) -> None:
        """Log the metric values of an evaluation as ``eval/...`` (with mode-collapse / stall verdicts), and send
        them to the loggers as one evaluation table."""
        record: dict[str, Any] = {f"eval/{k}": v for k, v in values.items()}
        verdicts = self.health.observe_eval(step, values)
        if verdicts:
            record["health"] = sorted({v.code for v in verdicts})
        self.writer.log(step, record)
        self.writer.evaluation(step, values)


def _mean_over_ranks(sums: dict[str, torch.Tensor], world_size: int) -> dict[str, torch.Tensor]:
    """The summed losses averaged over processes (one all-reduce); unchanged in a single process."""
    if world_size == 1 or not sums:
        return sums
    keys = sorted(sums)
    mean = distributed.all_reduce_mean(torch.stack([sums[k].float() for k in keys]))
    return dict(zip(keys, mean.unbind()))
