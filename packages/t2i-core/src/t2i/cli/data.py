"""``t2i data inspect`` and ``t2i data prepare``: look at a data set, and build its image caches ahead of time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from ..options import parse_assignments
from . import tables
from .tables import print_table

if TYPE_CHECKING:  # torch loads when a command runs, not when the CLI starts
    from ..interfaces import CaptionedImages, Dataset

__all__ = ["data_app", "open_dataset", "caption_length_histogram"]

data_app = typer.Typer(
    name="data",
    help="Inspect a data set (counts, caption lengths, problems, a grid) and build its image caches.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
out = Console(soft_wrap=False)

SPEC_HELP = "data set as KIND:PATH (e.g. cub:data/birds, folder:my_images, hf:saved_dataset) or a registered NAME"
HISTOGRAM_BINS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 50), (51, 100), (101, None))


def _table(*columns: str) -> Table:
    """A table whose cells wrap (full paths stay readable) instead of being cut off; the first column (the
    split) is never split."""
    return tables.table(*columns, names=1)


def open_dataset(spec: str, options: list[str] | None = None) -> tuple[str, Dataset]:
    """``"cub:data/birds"`` (+ ``-d KEY=VALUE`` options) -> (name, the registered data set, built)."""
    from ..plugins import registry

    name, _, path = spec.partition(":")
    if not name:
        raise UsageError("--data: expected NAME or NAME:PATH")
    raw: dict[str, Any] = dict(parse_assignments(options, "-d"))
    if path:
        raw["root"] = path
    dataset, _ = registry("datasets").build(name, raw)
    return name, dataset


def caption_length_histogram(captions: list[str]) -> list[tuple[str, int]]:
    """(bin label, number of captions) by words per caption."""
    lengths = [len(c.split()) for c in captions]
    rows = []
    for low, high in HISTOGRAM_BINS:
        n = sum(1 for n in lengths if n >= low and (high is None or n <= high))
        rows.append((f"{low}-{high}" if high else f"{low}+", n))
    return rows


def _problems_of(data: CaptionedImages) -> list[dict[str, str]]:
    """Every problem in the split's report (listing and decoding), or none for data sets without one."""
    report = data.info.get("report")
    if not report:
        return []
    try:
        found = json.loads(Path(report).read_text())
    except (OSError, ValueError):
        return []
    return list(found.get("index_problems", [])) + list(found.get("image_problems", []))


@data_app.command()
def inspect(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    resolution: Annotated[int, typer.Option("--resolution", "-r", help="resolution of the image cache it reads (built if missing)")] = 64,
    options: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE")] = None,
    grid: Annotated[Optional[Path], typer.Option("--grid", help="PNG of images with their first caption (default: <kind>-inspect.png)")] = None,
    rows: Annotated[int, typer.Option("--rows", help="images in the grid")] = 8,
    show: Annotated[int, typer.Option("--show", help="problems listed per kind (0: all)")] = 5,
) -> None:
    """Counts per split, a caption length histogram, every problem found, and a grid of captioned images."""
    from ..engine.grid import caption_grid, save_png

    if rows < 1:
        raise UsageError(f"--rows must be >= 1, got {rows}")
    name, dataset = open_dataset(spec, options)
    out.print(f"[bold]{escape(dataset.describe())}[/bold]")
    splits = {split: dataset.load(split, resolution) for split in dataset.splits}

    table = _table("split", "images", "skipped", "distinct captions", "captions / image", "image cache")
    for split, data in splits.items():
        per_image = float(data.caption_counts.float().mean()) if len(data) else 0.0
        table.add_row(split, str(len(data)), str(data.info.get("skipped", 0)), str(len(data.captions)),
                      f"{per_image:.1f}", escape(str(data.info.get("cache", "(in memory)"))))
    print_table(out, table)

    captions = [c for data in splits.values() for c in data.captions]
    histogram = caption_length_histogram(captions)
    widest = max(n for _, n in histogram) or 1
    out.print(f"caption length (words), {len(captions)} distinct captions:")
    for label, n in histogram:
        out.print(f"  {label:>7} {n:>8}  {'#' * round(40 * n / widest)}")

    problems: list[dict[str, str]] = []
    for split, data in splits.items():
        problems += [{**p, "split": split} for p in _problems_of(data)]
    unique = {(p["kind"], p["where"], p.get("detail", "")): p for p in problems}  # listing problems can be shared
    if not unique:
        out.print("problems: none")
    else:
        by_kind: dict[str, list[dict[str, str]]] = {}
        for p in unique.values():
            by_kind.setdefault(p["kind"], []).append(p)
        out.print(f"problems: {len(unique)} (bad items were skipped)")
        ptable = _table("kind", "count", "where", "detail")
        for kind, found in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
            for i, p in enumerate(found if show == 0 else found[:show]):
                ptable.add_row(escape(kind) if i == 0 else "", str(len(found)) if i == 0 else "",
                               escape(p["where"]), escape(p.get("detail", "")))
        print_table(out, ptable)

    first = next(iter(splits.values()))
    n = min(rows, len(first))
    picks = [int(i * len(first) / n) for i in range(n)]
    images = first.images[picks]
    image = caption_grid(images, [first.captions_of(i)[0] for i in picks], columns=1, min_cell=160)
    path = save_png(image, grid or Path(f"{name}-inspect.png"))
    out.print(f"grid of {n} {next(iter(splits))} images: {path}")


@data_app.command()
def prepare(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    resolution: Annotated[int, typer.Option("--resolution", "-r", help="training resolution")] = 64,
    random_crop: Annotated[bool, typer.Option("--random-crop", help="also cache the train split at ceil(R*76/64) for data.random_crop")] = False,
    options: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="decode again even if the cache is up to date")] = False,
) -> None:
    """Build the image caches (every split at the resolution) before training, so the run starts at once."""
    from ..data.augment import load_resolution
    from ..data.source import DiskDataset
    from ..data.stackgan import StackGANLayout

    name, dataset = open_dataset(spec, options)
    jobs = [(split, resolution) for split in dataset.splits]
    if random_crop:
        jobs.append(("train", load_resolution(resolution, True)))
    table = _table("split", "resolution", "images", "skipped", "problems", "cache")
    for split, r in jobs:
        if isinstance(dataset, DiskDataset):
            cache = dataset.cache(split, r, rebuild=rebuild)
            index = dataset.index(split)
            problems = dataset.problems(split, r)
            table.add_row(split, str(r), str(cache.count), str(index.listed - cache.count),
                          escape(problems.summary() or "none"), escape(str(cache.images_path)))
        else:  # data sets with their own storage (shapes): loading is preparing
            data = dataset.load(split, r)
            table.add_row(split, str(r), str(len(data)), "0", "none", escape(str(data.info.get("cache", "(in memory)"))))
    print_table(out, table)
    if isinstance(dataset, StackGANLayout):
        from ..paths import default_cache_dir

        cache_dir = Path(dataset.cfg.cache_dir) if dataset.cfg.cache_dir else default_cache_dir()
        target = cache_dir / "embeddings" / f"{name}-char-CNN-RNN.npz"
        written = dataset.export_embeddings(target)
        if written is not None:
            out.print(f"char-CNN-RNN embeddings: {written} (use them with --text-encoder precomputed -T path={written})")
