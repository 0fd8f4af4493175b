"""``t2i sample``: images from a trained model, as a grid, as a folder of PNGs with their captions (for scoring
by ``t2i eval FOLDER --captions`` or any outside tool), or as an animated GIF between two captions or two
noise vectors. It parses and checks the request; :class:`t2i.runs.Sampler` draws the images."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config_tree import slug
from ..errors import UsageError

__all__ = ["sample_cmd", "read_captions_file"]

GRID_PER_CAPTION = 16  # -n's default in a grid; a folder gets one image per caption unless told
FRAMES = 24  # --interpolate's default


def read_captions_file(path: Path) -> list[str]:
    """Captions from a text file (one per non-blank line) or, for ``.jsonl``, one JSON object per line with a
    ``"caption"`` (or the Hub's ``"text"``) string; a bad line is a one-line :class:`UsageError`."""
    if not path.is_file():
        raise UsageError(f"captions file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"captions file {path} is not UTF-8 text") from None
    captions: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            captions.append(line.strip())
            continue
        where = f"{path.name} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not JSON ({exc.msg})") from None
        caption = entry.get("caption", entry.get("text")) if isinstance(entry, dict) else None
        if not isinstance(caption, str) or not caption.strip():
            raise UsageError(f'{where}: expected {{"caption": TEXT}} with a non-empty caption')
        captions.append(caption.strip())
    if not captions:
        raise UsageError(f"captions file {path} holds no captions")
    return captions


def sample_cmd(
    source: Annotated[str, typer.Argument(help="a run folder (its latest checkpoint), a checkpoints/step_* folder, an exported model folder, or hf://ORG/NAME (Hugging Face Hub; HF_HUB_OFFLINE=1: from the HF cache only)")],
    captions: Annotated[Optional[list[str]], typer.Argument(help="one or more captions (and/or --captions-file)")] = None,
    n: Annotated[Optional[int], typer.Option("-n", "--per-caption", help=f"images per caption (default: {GRID_PER_CAPTION} in a grid, 1 with --outdir)")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="PNG grid to write (default: <run>/samples/sample-<caption>.png, or ./ outside a run); with --interpolate a .gif")] = None,
    outdir: Annotated[Optional[Path], typer.Option("--outdir", help="write one PNG per image and captions.jsonl (image, caption, seed) into this new folder instead of a grid")] = None,
    captions_file: Annotated[Optional[Path], typer.Option("--captions-file", help="captions, one per line, or .jsonl with a \"caption\" field per line")] = None,
    seed: Annotated[int, typer.Option("--seed", help="noise seed: image j of the request uses seed + j")] = 0,
    truncation: Annotated[Optional[float], typer.Option("--truncation", help="truncation psi in (0, 1], for generators that support it")] = None,
    interpolate: Annotated[bool, typer.Option("--interpolate", help="an animated GIF between two captions (fixed noise) or, for one caption, two noise vectors (seeds S and S+1)")] = False,
    frames: Annotated[Optional[int], typer.Option("--frames", help=f"with --interpolate: frames from one end to the other (default {FRAMES})")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="images generated at once")] = 64,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="use the raw generator weights, not their EMA")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps")] = "auto",
) -> None:
    """Generate images for captions from a trained model: a grid (default), a folder of PNGs with
    captions.jsonl ([bold]--outdir[/bold]), or a GIF ([bold]--interpolate[/bold])."""
    from ..engine.grid import save_png
    from ..hub import HUB_SCHEME, check_new_folder
    from ..runs import Sampler, save_gif

    texts = list(captions or []) + (read_captions_file(captions_file) if captions_file is not None else [])
    if not texts:
        raise UsageError("give captions after SOURCE or --captions-file FILE")
    if outdir is not None and output is not None:
        raise UsageError("-o writes a grid and --outdir a folder of images; give one of them")
    if interpolate and (outdir is not None or n is not None):
        raise UsageError("--interpolate writes one GIF; it does not take --outdir or -n")
    wanted = ".gif" if interpolate else ".png"
    if output is not None and output.suffix.lower() != wanted:
        raise UsageError(f"-o {output}: {'the interpolation is written as GIF' if interpolate else 'the grid is written as PNG'}; "
                         f"use a {wanted} file name")
    if frames is not None and not interpolate:
        raise UsageError("--frames goes with --interpolate")
    if interpolate and len(texts) not in (1, 2):
        raise UsageError(f"--interpolate goes between two captions, or two noise vectors of one caption; got {len(texts)} captions")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if outdir is not None:  # refused before the model is loaded
        check_new_folder(outdir, what="images")

    if source.startswith(HUB_SCHEME):
        sampler = Sampler.from_pretrained(source, device=device, ema=not no_ema)
    else:
        sampler = Sampler.load(Path(source), device=device, ema=not no_ema)
    options = {"batch_size": batch_size, "truncation": truncation}

    if outdir is not None:
        per_caption = 1 if n is None else n
        print(_write_folder(sampler, outdir, texts, per_caption, seed, options))
        return
    stem = f"{'interpolate' if interpolate else 'sample'}-{slug(texts[0], limit=48, fallback='sample')}"
    if output is None:
        folder = sampler.run_dir / "samples" if sampler.run_dir is not None else Path(".")
        output = folder / f"{stem}{wanted}"
    if interpolate:
        print(save_gif(sampler.interpolate(texts, FRAMES if frames is None else frames, seed, **options), output))
    else:
        print(save_png(sampler.grid(texts, n=GRID_PER_CAPTION if n is None else n, seed=seed, **options), output))


def _write_folder(sampler, outdir: Path, captions: list[str], n: int, seed: int, options: dict) -> Path:  # noqa: ANN001
    """``Sampler.write_images`` with a progress bar on a terminal when the job takes more than one batch."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total = len(captions) * n
    shown = total > options["batch_size"] and sys.stderr.isatty()
    with Progress(TextColumn("[bold]sample"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), disable=not shown) as bar:
        task = bar.add_task("sample", total=total)
        return sampler.write_images(outdir, captions, n, seed, on_batch=lambda done, _: bar.update(task, completed=done),
                                    **options)
