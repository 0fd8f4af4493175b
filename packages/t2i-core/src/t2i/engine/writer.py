"""Everything a run writes: its folder (metrics.jsonl, sample grids, summary.md, ...) and its loggers.

The run folder's files are always written; the loggers (:mod:`t2i.loggers`: TensorBoard by default,
MLflow, W&B ... from plugins) get the same records, grids, texts and verdicts in addition. Only rank 0
writes (``enabled=False`` elsewhere: no folder, no logger), so the engine never has to ask which process
it is. A logger that fails while the run trains is switched off with one warning; the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from ..fileio import write_text
from ..loggers import Logger, build_loggers, run_params, scalars
from .grid import save_png

__all__ = ["RunWriter"]


class RunWriter:
    """``loggers``: the names of the loggers to report to (checked before anything is written), with their
    ``options`` (name -> options); ``config``: the run's resolved config (a tree), the loggers' parameters;
    ``resumed``: the run continues from a checkpoint."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, *, loggers: Sequence[str] = ("tensorboard",),
                 options: Mapping[str, Mapping[str, Any]] | None = None, config: Mapping[str, Any] | None = None,
                 resumed: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._metrics = None
        self.loggers: dict[str, Logger] = {}
        if enabled:
            built = build_loggers(loggers, options)  # an unknown name or option fails before the folder exists
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
            params = run_params(config or {})
            for name, logger in built.items():
                logger.start(self.run_dir, params, self.run_dir.resolve().name, resumed=resumed)
                self.loggers[name] = logger

    def _report(self, method: str, *args: Any) -> None:
        """Call ``method`` of every logger; one that raises is warned about once and switched off."""
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # a tracker's failure must not end the training run
                del self.loggers[name]
                print(f"t2i: warning: logger '{name}' failed in {method} ({type(exc).__name__}: {exc}); it is off "
                      f"for the rest of the run", file=sys.stderr, flush=True)

    def log(self, step: int, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl, and the record's numbers to every logger."""
        if not self.enabled:
            return
        line = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}}
        assert self._metrics is not None
        self._metrics.write(json.dumps(line) + "\n")
        self._report("log_scalars", step, scalars(record))

    def evaluation(self, step: int, values: Mapping[str, float]) -> None:
        """An evaluation's table of metric values, to every logger (the values are also :meth:`log` ged)."""
        if self.enabled:
            self._report("log_evaluation", step, dict(values))

    def verdicts(self, step: int, verdicts: Sequence[Any]) -> None:
        """The run's health verdicts, to every logger."""
        if self.enabled:
            self._report("log_verdicts", step, list(verdicts))

    def forget_after(self, step: int) -> None:
        """Drop metrics.jsonl lines logged after ``step`` (a resumed run will log those steps again)."""
        if not self.enabled or self._metrics is None:
            return
        self._metrics.close()
        path = self.run_dir / "metrics.jsonl"
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        write_text(path, "".join(line + "\n" for line in kept))
        self._metrics = open(path, "a", buffering=1)

    def samples(self, step: int, grid: Image.Image) -> Path | None:
        """Save ``samples/step_XXXXXXXX.png`` and ``samples/latest.png``, send the grid to every logger;
        return the step's path."""
        if not self.enabled:
            return None
        path = save_png(grid, self.run_dir / "samples" / f"step_{step:08d}.png")
        save_png(grid, self.run_dir / "samples" / "latest.png")
        self._report("log_image", step, "samples", path)
        return path

    def text(self, name: str, content: str) -> Path | None:
        """Write a text file in the run folder atomically, and send it to every logger."""
        if not self.enabled:
            return None
        path = write_text(self.run_dir / name, content)
        self._report("log_text", name, content)
        return path

    def close(self, status: str = "finished", final: Mapping[str, Any] | None = None) -> None:
        """Finish every logger (``status`` and the run's ``final`` numbers) and close metrics.jsonl."""
        self._report("finish", status, scalars(final or {}))
        self.loggers = {}
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
