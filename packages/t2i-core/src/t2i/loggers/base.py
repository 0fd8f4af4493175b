"""The :class:`Logger` interface: where a run's numbers, sample grids, texts and verdicts go besides its folder.

A run always writes its own folder (``metrics.jsonl``, ``samples/``, ``summary.md``, ``health.json``,
``eval.json``); loggers are in addition. The engine calls a logger, on rank 0 only, in this order::

    start(run_dir, params, name, resumed=False)       # once, before the first step
    log_scalars(step, {"d/total": 0.7, ...})          # every logged record (and every evaluation)
    log_image(step, "samples", path)                  # every sample grid (a PNG in the run folder)
    log_evaluation(step, {"diversity/...": 0.1})      # every evaluation's table of metric values
    log_text("summary.md", text)                      # the run folder's text files as they are written
    log_verdicts(step, verdicts)                      # the health verdicts, at the end of the run
    finish(status, final)                             # once: "finished", "interrupted" or "diverged"

Every method but :meth:`start` defaults to doing nothing, so a logger implements what its tracker shows.
A logger that raises while the run trains is switched off with one warning; the run goes on (a tracker
that is down must not end a ten-hour run). :meth:`start` raising stops the run before its first step.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from ..engine.verdicts import Verdict

__all__ = ["Logger"]


class Logger(abc.ABC):
    """An experiment tracker a run reports to (TensorBoard, MLflow, W&B, ...); register one with the hook
    ``t2i_register_loggers``. Build it from its config dataclass; open nothing before :meth:`start`."""

    @abc.abstractmethod
    def start(self, run_dir: Path, params: Mapping[str, Any], name: str, *, resumed: bool = False) -> None:
        """Open the tracker's run. ``params``: the run's resolved config flattened to dotted keys
        (``{"train.lr_g": 0.0002, "generator.name": "dcgan", ...}``; lists as text); ``name``: the run
        folder's name; ``resumed``: the run continues from a checkpoint (continue the tracker's run if it can)."""

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Numbers at ``step``: losses, learning rates, throughput, ``health/...`` and ``eval/...`` values."""

    def log_image(self, step: int, name: str, path: Path) -> None:
        """An image (a PNG written in the run folder, e.g. the sample grid) at ``step``."""

    def log_text(self, name: str, text: str) -> None:
        """A text file of the run folder as it is written: ``summary.md`` (Markdown), ``health.json``,
        ``eval.json``. Written again, it replaces the previous version."""

    def log_evaluation(self, step: int, values: Mapping[str, float]) -> None:
        """The metric values of one evaluation at ``step`` (a table: metric key -> value)."""

    def log_verdicts(self, step: int, verdicts: Sequence[Verdict]) -> None:
        """The run's health verdicts (:class:`t2i.engine.verdicts.Verdict`), all of them, at the end."""

    def finish(self, status: str, final: Mapping[str, float]) -> None:
        """Close the tracker's run. ``status``: ``finished``, ``interrupted`` or ``diverged``; ``final``: the
        last logged record's numbers and the final evaluation (``eval/...``), e.g. for a hyperparameter view."""
