"""``t2i evaluator``: train (or reuse) the image/text evaluator that the ``r_precision`` metric scores with.

The command parses and validates; :func:`t2i.metrics.evaluator.ensure_evaluator` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..options import parse_assignments

evaluator_app = typer.Typer(
    name="evaluator",
    help="The DAMSM-style image/text evaluator behind r_precision: train it on a data set, saved and reused.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@evaluator_app.command("train")
def train(
    data: Annotated[str, typer.Option("--data", help="data set, NAME or NAME:PATH (e.g. shapes)")],
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE")] = None,
    resolution: Annotated[int, typer.Option("--resolution", help="image side in pixels (the resolution it will score)")] = 32,
    steps: Annotated[Optional[int], typer.Option("--steps", help="training steps (default: the recipe's)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="images per step (default: the recipe's)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of initialisation, batches and noise")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="file to write (default: the cache file that r_precision looks up)")] = None,
    force: Annotated[bool, typer.Option("--force", help="train again even if --out holds a matching or another evaluator")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu (deterministic, the reference) or cuda")] = "cpu",
) -> None:
    """Train the evaluator on the data set's train split, report its R-precision on real test images, save it.

    Reuses the file when it already holds an evaluator for the same data, resolution and recipe.
    """
    from ..device import pick_device
    from ..metrics.evaluator import EvaluatorRecipe, ensure_evaluator
    from ..plugins import registry

    name, _, path = data.partition(":")
    if not name:
        raise UsageError("--data: expected NAME or NAME:PATH")
    options: dict[str, Any] = dict(parse_assignments(data_opts, "-d"))
    if path:
        options["root"] = path
    dataset, full_options = registry("datasets").build(name, options)
    recipe_args: dict[str, Any] = {"seed": seed}
    if steps is not None:
        recipe_args["steps"] = steps
    if batch_size is not None:
        recipe_args["batch_size"] = batch_size
    recipe = EvaluatorRecipe(**recipe_args)

    def log(message: str) -> None:
        typer.echo(f"t2i evaluator: {message}", err=True)

    model, trained = ensure_evaluator(dataset, data_name=name, data_options=full_options, resolution=resolution,
                                      recipe=recipe, out=out, force=force, device=pick_device(device), log=log)
    info = model.info
    verb = "trained" if trained else "up to date, reused"
    typer.echo(f"evaluator {verb}: {info.get('file')}")
    if "real_r_precision" in info:
        typer.echo(f"R-precision on {info['val_size']} real test images (1 + {info['val_negatives']} captions): "
                   f"{info['real_r_precision']:.4f} +/- {info['real_r_precision_std']:.4f}")
    elif "validation" in info:
        typer.echo(f"validation {info['validation']}")
    if trained:
        typer.echo(f"training: {info.get('train_seconds')} s, {model.recipe.steps} steps, vocabulary {info.get('vocabulary_size')} words")
