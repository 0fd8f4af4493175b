"""The study report's pictures: loss curves, metric curves (or bars), and the final sample grids side by side.

matplotlib with the Agg backend (no display needed); every function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..engine.grid import FONT_SIZE, INK, PAPER, save_png
from ..fileio import atomic_path

__all__ = ["curve_plot", "metric_plot", "samples_side_by_side"]

Series = list[tuple[int, float]]  # (step, value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(runs: Sequence[Series]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Every step some run logged; at each, the mean, min and max over the runs that logged it."""
    by_step: dict[int, list[float]] = {}
    for series in runs:
        for step, value in series:
            if value is not None and math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, then free it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def curve_plot(curves: dict[str, Sequence[Series]], title: str, ylabel: str, path: Path, *, symlog: bool = False) -> Path:
    """One line per trial (mean over its seeds, shaded between the lowest and highest seed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, runs in curves.items():
        steps, mean, low, high = _mean_curve(runs)
        if not steps:
            continue
        (line,) = ax.plot(steps, mean, label=label, linewidth=1.4, marker="o" if len(steps) < 3 else None)
        if len(runs) > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    if symlog:
        ax.set_yscale("symlog")
    ax.set_title(title)
    ax.set_xlabel("generator step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(plt, fig, path)


def metric_plot(values: dict[str, Sequence[Series]], title: str, path: Path) -> Path:
    """Metric curves when some trial was evaluated more than once (``eval.every``); else one bar per trial
    (mean over seeds, error bar = std)."""
    if any(len(series) > 1 for runs in values.values() for series in runs):
        return curve_plot(values, title, title.split("/")[-1], path)
    plt = _pyplot()
    labels, means, stds = [], [], []
    for label, runs in values.items():
        finals = [series[-1][1] for series in runs if series]
        if not finals:
            continue
        mean = sum(finals) / len(finals)
        std = math.sqrt(sum((v - mean) ** 2 for v in finals) / (len(finals) - 1)) if len(finals) > 1 else 0.0
        labels.append(label)
        means.append(mean)
        stds.append(std)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 4), dpi=100)
    ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_title(f"{title} (final evaluation)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path)


def samples_side_by_side(grids: dict[str, Path], path: Path, *, per_row: int = 4, height: int = 360) -> Path | None:
    """Each trial's final sample grid, scaled to one height, labelled, ``per_row`` to a row."""
    images = []
    for label, grid in grids.items():
        if grid.is_file():
            with Image.open(grid) as im:
                im = im.convert("RGB")
                scale = height / im.height
                images.append((label, im.resize((max(1, round(im.width * scale)), height), Image.Resampling.LANCZOS)))
    if not images:
        return None
    try:
        font = ImageFont.load_default(size=FONT_SIZE + 3)
    except TypeError:  # older Pillow: the fixed bitmap font
        font = ImageFont.load_default()
    band, gap = font.getbbox("Ag")[3] + 10, 8
    rows = [images[i : i + per_row] for i in range(0, len(images), per_row)]
    width = max(sum(im.width for _, im in row) + gap * (len(row) - 1) for row in rows)
    canvas = Image.new("RGB", (width, len(rows) * (band + height) + gap * (len(rows) - 1)), PAPER)
    draw = ImageDraw.Draw(canvas)
    top = 0
    for row in rows:
        left = 0
        for label, im in row:
            text = label
            while len(text) > 3 and font.getlength(text) > im.width - 8:
                text = text[:-4] + "..."
            draw.text((left + 4, top + 4), text, fill=INK, font=font)
            canvas.paste(im, (left, top + band))
            left += im.width + gap
        top += band + height + gap
    return save_png(canvas, path)
