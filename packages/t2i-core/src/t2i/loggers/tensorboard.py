"""TensorBoard, the built-in logger: ``<run>/tensorboard/``, read with ``tensorboard --logdir runs``.

- Scalars: every logged record and evaluation, under their keys (``d/total``, ``eval/diversity/...``).
- Images: the sample grids (``samples``).
- Text: ``summary.md`` (the TEXT tab renders its Markdown) and the health verdicts, one line each.
- HPARAMS: at the end, the run's config (flattened: ``train.lr_g``, ``generator.name``, ...) against its
  final numbers (``eval/...`` and the last losses), one row per run, so runs of a folder compare side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .base import Logger

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Logger):
    """Scalars, sample grids, summary, verdicts and the hparams view in ``<run>/tensorboard``."""

    def __init__(self) -> None:
        self._tb: Any = None
        self._params: dict[str, Any] = {}
        self._step = 0

    def start(self, run_dir: Path, params: Mapping[str, Any], name: str, *, resumed: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self._params = dict(params)

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self._tb.add_scalar(key, value, step)
        self._step = max(self._step, step)

    def log_image(self, step: int, name: str, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            self._tb.add_image(name, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def log_text(self, name: str, text: str) -> None:
        if name.endswith(".md"):
            self._tb.add_text(Path(name).stem, text, self._step)

    def log_verdicts(self, step: int, verdicts: Sequence[Any]) -> None:
        lines = [f"- {v.line(status=True)}" for v in verdicts] or ["- no problem found"]
        self._tb.add_text("health", "\n".join(lines), step)

    def finish(self, status: str, final: Mapping[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = dict(final)
        # the hparams summaries go into this run's own event file (add_hparams would open a second folder)
        for summary in hparams({**self._params, "status": status}, metrics):
            self._tb.file_writer.add_summary(summary, self._step)
        self._tb.close()
        self._tb = None
