"""What a run shows while it trains: a rich progress bar on a terminal, plain log lines otherwise.

Each update shows throughput, the main losses and, when the health monitor has found a problem, its code
(``health: d_loss_stuck``); the full verdicts are in the run's summary.md and health.json.

``quiet=True`` (``t2i run --quiet``), or output that is not a terminal, prints one line per logging step.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

__all__ = ["Progress", "Silent", "format_record"]

_SHOWN = ("d/total", "g/total", "d/real_logit", "d/fake_logit")


def format_record(record: dict[str, Any]) -> str:
    """``"512 img/s | d/total 1.234 | ... | health: d_wins, g_chaotic"``: throughput, the main losses, and the
    codes of the health verdicts that hold now (see :mod:`t2i.engine.health`; details in summary.md)."""
    parts = [f"{record['img_per_s']:.0f} img/s"] if "img_per_s" in record else []
    parts += [f"{k} {record[k]:.3f}" for k in _SHOWN if isinstance(record.get(k), (int, float))]
    if record.get("health"):
        parts.append("health: " + ", ".join(record["health"]))
    return " | ".join(parts)


class Progress:
    def __init__(self, total_steps: int | None, minutes: float | None, start_step: int, quiet: bool = False):
        self.total_steps = total_steps
        self.minutes = minutes
        self.quiet = quiet or not sys.stderr.isatty()
        self._bar: RichProgress | None = None
        self._task: Any = None
        self._start = start_step

    def __enter__(self) -> "Progress":
        if not self.quiet:
            by_time = self.total_steps is None
            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.fields[unit]}") if by_time else MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=False,
            )
            total = self.minutes * 60 if by_time else self.total_steps
            self._task = self._bar.add_task("train", total=total, completed=0 if by_time else self._start, info="", unit="")
            self._bar.__enter__()
        return self

    def update(self, step: int, elapsed: float, record: dict[str, float] | None) -> None:
        if self.quiet:
            if record is not None:
                total = f"/{self.total_steps}" if self.total_steps else ""
                print(f"step {step}{total} | {elapsed / 60:.1f} min | {format_record(record)}", file=sys.stderr, flush=True)
            return
        assert self._bar is not None
        fields: dict[str, Any] = {}
        if record is not None:
            fields["info"] = format_record(record)
        if self.total_steps is None:
            self._bar.update(self._task, completed=elapsed, unit=f"step {step}", **fields)
        else:
            self._bar.update(self._task, completed=step, **fields)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class Silent:
    """The progress display of ranks other than 0: nothing (rank 0 speaks for the job)."""

    def __enter__(self) -> "Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None
