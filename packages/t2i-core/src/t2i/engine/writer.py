"""Everything a run writes into its folder: metrics.jsonl, TensorBoard events, sample grids, summary.md.

Only rank 0 writes (``enabled=False`` elsewhere), so the engine never has to ask which process it is.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from PIL import Image

from ..fileio import write_text
from .grid import save_png

__all__ = ["RunWriter"]


class RunWriter:
    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        self._metrics = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def log(self, step: int, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl and the same scalars in TensorBoard."""
        if not self.enabled:
            return
        line = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}}
        assert self._metrics is not None
        self._metrics.write(json.dumps(line) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

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
        """Save ``samples/step_XXXXXXXX.png`` and ``samples/latest.png``; return the step's path."""
        if not self.enabled:
            return None
        path = save_png(grid, self.run_dir / "samples" / f"step_{step:08d}.png")
        save_png(grid, self.run_dir / "samples" / "latest.png")
        if self._tb is not None:
            import numpy as np

            self._tb.add_image("samples", np.asarray(grid), step, dataformats="HWC")
        return path

    def text(self, name: str, content: str) -> Path | None:
        """Write a text file in the run folder atomically."""
        if not self.enabled:
            return None
        return write_text(self.run_dir / name, content)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
