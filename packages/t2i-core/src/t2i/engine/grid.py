"""Sample grids: rows of images with word-wrapped captions (or one title), saved as PNG.

A generator's output (float, ``(N, 3, H, W)`` in ``[-1, 1]``) or ready pixels (uint8, ``(N, H, W, 3)``)
go in; a :class:`PIL.Image.Image` comes out. Small samples are enlarged by an integer factor with
nearest-neighbour, so every pixel of a 32-px sample stays a crisp square. The same inputs always give
the same image, and :func:`save_png` the same bytes.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..fileio import atomic_path

__all__ = ["to_uint8", "caption_grid", "image_grid", "save_png"]

GUTTER = 2  # white pixels between cells, and between a row's text band and the next row
PAD = 4  # white margin around the text inside a band
INK = (24, 24, 24)
PAPER = (255, 255, 255)
FONT_SIZE = 13

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images ``(B, 3, H, W)`` in ``[-1, 1]`` -> uint8 ``(B, H, W, 3)``: -1 -> 0, 1 -> 255.

    Values outside ``[-1, 1]`` are clamped and NaN becomes mid-grey, so a diverging run still draws.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    pixels = (torch.nan_to_num(images.detach().float()).clamp(-1, 1) + 1) * 127.5
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def caption_grid(
    images: torch.Tensor | np.ndarray,
    captions: Sequence[str],
    *,
    columns: int,
    scale: int = 1,
    min_cell: int = 64,
) -> Image.Image:
    """Rows of ``columns`` images, each followed by a band with its caption: ``N == len(captions) * columns``.

    Each image is enlarged by the smallest integer factor that makes it at least ``min_cell`` pixels wide,
    then by ``scale``. Every band is as tall as the longest wrapped caption, so rows line up.
    """
    cells = _cells(images, scale, min_cell)
    if columns < 1 or not captions or len(cells) != len(captions) * columns:
        raise ValueError(
            f"caption_grid needs len(captions) * columns images: {len(captions)} captions x {columns} "
            f"columns = {len(captions) * columns}, got {len(cells)} images"
        )
    font = _font()
    width = _row_width(cells, columns)
    lines = [_wrap(caption, font, width - 2 * PAD) for caption in captions]
    band = _band_height(max(len(ls) for ls in lines), font)
    cell_h = cells.shape[1]
    canvas = Image.new("RGB", (width, len(captions) * (cell_h + band + GUTTER) - GUTTER), PAPER)
    draw = ImageDraw.Draw(canvas)
    for row, row_lines in enumerate(lines):
        top = row * (cell_h + band + GUTTER)
        _paste_row(canvas, cells[row * columns : (row + 1) * columns], top)
        _draw_lines(draw, row_lines, top + cell_h, font)
    return canvas


def image_grid(
    images: torch.Tensor | np.ndarray,
    *,
    columns: int,
    title: str | None = None,
    scale: int = 1,
    min_cell: int = 64,
) -> Image.Image:
    """A plain grid, ``columns`` wide (the last row may be short), under an optional wrapped ``title``."""
    cells = _cells(images, scale, min_cell)
    if columns < 1 or len(cells) == 0:
        raise ValueError(f"image_grid needs an image and a column, got {len(cells)} and {columns}")
    columns = min(columns, len(cells))
    font = _font()
    width = _row_width(cells, columns)
    lines = _wrap(title, font, width - 2 * PAD) if title is not None else []
    top = _band_height(len(lines), font) + GUTTER if title is not None else 0
    rows = math.ceil(len(cells) / columns)
    cell_h = cells.shape[1]
    canvas = Image.new("RGB", (width, top + rows * (cell_h + GUTTER) - GUTTER), PAPER)
    _draw_lines(ImageDraw.Draw(canvas), lines, 0, font)
    for row in range(rows):
        _paste_row(canvas, cells[row * columns : (row + 1) * columns], top + row * (cell_h + GUTTER))
    return canvas


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG at ``path`` atomically (a temp file beside it, then ``os.replace``).

    Missing parent directories are created; on failure ``path`` is left as it was and no temp file remains.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        image.save(f, format="PNG")
    return path


def _cells(images: torch.Tensor | np.ndarray, scale: int, min_cell: int) -> np.ndarray:
    """uint8 ``(N, h, w, 3)``: images enlarged (nearest) to at least ``min_cell`` wide, times ``scale``."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape)
        raise ValueError(f"expected uint8 (N, H, W, 3) or float (N, 3, H, W) images, got {shape}")
    pixels = images.cpu().numpy()
    factor = max(1, math.ceil(min_cell / pixels.shape[2])) * scale
    return pixels.repeat(factor, axis=1).repeat(factor, axis=2)


def _row_width(cells: np.ndarray, columns: int) -> int:
    return columns * (cells.shape[2] + GUTTER) - GUTTER


def _paste_row(canvas: Image.Image, cells: np.ndarray, top: int) -> None:
    for col, cell in enumerate(cells):
        canvas.paste(Image.fromarray(cell), (col * (cell.shape[1] + GUTTER), top))


@lru_cache(maxsize=1)
def _font() -> Font:
    """Pillow's built-in font, at a readable size where this Pillow can scale it (>= 10.1 with FreeType)."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # older Pillow: the fixed 11-px bitmap font
        return ImageFont.load_default()


def _line_height(font: Font) -> int:
    return font.getbbox("Ag")[3] + 2


def _band_height(lines: int, font: Font) -> int:
    return 2 * PAD + max(1, lines) * _line_height(font)


def _wrap(text: str, font: Font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word wider than a line is split between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while font.getlength(word) > width and len(word) > 1:
            cut = next((i for i in range(len(word) - 1, 0, -1) if font.getlength(word[:i]) <= width), 1)
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{line} {word}" if line else word
        if line and font.getlength(candidate) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line] if line else lines


def _draw_lines(draw: ImageDraw.ImageDraw, lines: Sequence[str], top: int, font: Font) -> None:
    for i, line in enumerate(lines):
        draw.text((PAD, top + PAD + i * _line_height(font)), line, fill=INK, font=font)
