"""``t2i export`` and ``t2i push``: a trained model as a self-contained folder with a model card, and that
folder on the Hugging Face Hub. The work is :mod:`t2i.hub`'s; these parse and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["export_cmd", "push_cmd"]

_LICENSE_HELP = ("Hub licence id written in the model card (mit, apache-2.0, cc-by-4.0, ...); the default "
                 "'other' says no licence was chosen")


def export_cmd(
    run: Annotated[Path, typer.Argument(help="a run folder (its latest checkpoint) or a checkpoints/step_* folder")],
    dest: Annotated[Path, typer.Argument(help="the model folder to write (new or empty)")],
    no_ema: Annotated[bool, typer.Option("--no-ema", help="export the raw generator weights, not their EMA")] = False,
    license: Annotated[str, typer.Option("--license", help=_LICENSE_HELP)] = "other",
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="the Hub repo ORG/NAME the card's usage lines name (default: the folder)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a previous export in DEST")] = False,
) -> None:
    """Write a self-contained model folder: generator and text encoder weights (safetensors), config, a model
    card README.md (components and plugin distributions, training, evaluation with its protocol, health,
    licence, how to reproduce), the final sample grid. Load it with [bold]t2i sample DEST CAPTION[/bold]."""
    from ..hub import export_model

    print(export_model(run, dest, ema=not no_ema, license=license, repo_id=repo_id, replace=overwrite))


def push_cmd(
    run: Annotated[Path, typer.Argument(help="a run folder, a checkpoints/step_* folder (exported first) or an exported model folder")],
    repo_id: Annotated[str, typer.Argument(help="the Hub model repo, ORG/NAME (created when missing)")],
    private: Annotated[bool, typer.Option("--private", help="create the repo private")] = False,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="export the raw generator weights, not their EMA")] = False,
    license: Annotated[str, typer.Option("--license", help=_LICENSE_HELP)] = "other",
) -> None:
    """Upload a model to the Hugging Face Hub (huggingface_hub; token from HF_TOKEN or [bold]hf auth login[/bold]).
    Load it anywhere with [bold]t2i sample hf://ORG/NAME "caption"[/bold]."""
    from ..hub import push_model

    print(push_model(run, repo_id, private=private, ema=not no_ema, license=license))
