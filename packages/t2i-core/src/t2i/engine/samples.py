"""Sample grids during training: the fixed captions (rows) x the fixed noise (columns), every N steps.

The same captions and noise all run long (the data feed's sample sheet), so grids of different steps show
the same cells, and a resumed run draws exactly the grids an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..interfaces import TextEncoder
from .generate import encode_captions, generate_images, uses_words
from .grid import caption_grid
from .writer import RunWriter

__all__ = ["SampleGrids"]


class SampleGrids:
    """Writes ``samples/step_XXXXXXXX.png`` (and ``latest.png``) every ``every`` steps (0: only at the end)."""

    def __init__(self, writer: RunWriter, captions: list[str], noise: torch.Tensor, *, every: int):
        self.writer, self.captions, self.noise, self.every = writer, captions, noise, every
        self.last: Path | None = None  # the latest grid written
        self.last_step: int | None = None

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    @torch.no_grad()
    def write(self, step: int, generator: torch.nn.Module, encoder: TextEncoder, device: torch.device,
              autocast: Callable[[], Any]) -> Path | None:
        """Draw the grid with ``generator`` (in eval mode) and save it; ``None`` where nothing is written (rank > 0)."""
        if not self.writer.enabled:
            return None
        was_training = generator.training
        generator.eval()
        try:
            text, words = encode_captions(encoder, self.captions, device, words=uses_words(generator))
            rows, cols = len(self.captions), len(self.noise)
            z = self.noise.to(device).repeat(rows, 1)
            each = torch.arange(rows, device=device).repeat_interleave(cols)  # row r: caption r, every noise column
            with autocast():
                images = generate_images(generator, z, text[each], None if words is None else words[each]).float()
        finally:
            generator.train(was_training)
        self.last = self.writer.samples(step, caption_grid(images.cpu(), self.captions, columns=cols))
        self.last_step = step
        return self.last
