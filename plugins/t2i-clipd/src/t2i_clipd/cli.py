"""``t2i clip pretrain``: train a CLIP contrastively on a data set (:mod:`t2i_clipd.pretrain`).

The command parses and validates; :func:`t2i_clipd.pretrain.pretrain_clip` does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from t2i.errors import UsageError

clip_app = typer.Typer(
    name="clip",
    help="CLIP models: pretrain one on a data set for clipd, galip, the clip text encoder and the clip_sim term.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@clip_app.command("pretrain")
def pretrain(
    data: Annotated[str, typer.Option("--data", help="data set, NAME or NAME:PATH (e.g. shapes)")],
    model: Annotated[str, typer.Option("--model", help="open-clip model name or JSON config, e.g. "
                                                       "plugins/t2i-clipd/recipes/shapes-clip-32.json")],
    out: Annotated[Path, typer.Option("--out", "-o", help="weights file to write (.pt); OUT.json beside it says "
                                                          "what was trained")],
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="start from this state-dict file (fine-tune) "
                                                                     "instead of random weights")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", help="image side the data set is loaded at "
                                                      "[default: the CLIP's input size]")] = None,
    steps: Annotated[int, typer.Option("--steps", help="training steps")] = 1500,
    batch_size: Annotated[int, typer.Option("--batch-size", help="image-caption pairs per step (the contrastive "
                                                                 "batch: each pair's negatives are the others)")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="AdamW peak learning rate (from scratch; fine-tuning a "
                                                   "pretrained CLIP wants far less, e.g. 1e-5)")] = 2e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (not on gains, biases, "
                                                                       "embeddings, temperature)")] = 0.1,
    warmup: Annotated[Optional[int], typer.Option("--warmup", help="steps of linear warmup before the cosine decay "
                                                  "[default: 100, or a tenth of --steps where that is fewer]")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of initialisation, batches and caption draws")] = 0,
    eval_size: Annotated[int, typer.Option("--eval-size", help="test images for the retrieval check before and after "
                                                               "training (0: no check, no test split)")] = 1000,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto")] = "cpu",
) -> None:
    """Train the CLIP's image and text towers with open-clip's contrastive loss on the data set's train split and
    write the weights: use them with --disc clipd -D model=MODEL -D weights=OUT, --text-encoder clip -T model=MODEL
    -T weights=OUT, or the clip_sim term (see the plugin's README). Prints held-out retrieval before and after."""
    from t2i.device import pick_device
    from t2i.cli.data import open_dataset

    from .pretrain import check_settings, clip_image_size, default_warmup, format_retrieval, pretrain_clip

    warmup = default_warmup(steps) if warmup is None else warmup
    check_settings(out, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                   eval_size=eval_size)
    resolution = resolution or clip_image_size(model)
    _, dataset = open_dataset(data, data_opts)
    train = dataset.load("train", resolution)
    test = None
    if eval_size:
        try:
            test = dataset.load("test", resolution)
        except UsageError as exc:
            raise UsageError(f"{exc} (the retrieval check reads the test split; --eval-size 0 skips it)") from None

    def log(message: str) -> None:
        typer.echo(f"t2i clip: {message}", err=True)

    info = pretrain_clip(train, out, model=model, weights=weights, steps=steps, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup=warmup, seed=seed, device=pick_device(device), log=log,
                         test=test, eval_size=eval_size)
    typer.echo(f"CLIP {info['model_name']} trained in {info['seconds']} s ({steps} steps of {info['batch_size']}): "
               f"loss {info['first_loss']} -> {info['last_loss']}")
    if info["retrieval"]:
        retrieval = info["retrieval"]
        typer.echo(f"held-out retrieval on {retrieval['images']} {retrieval['split']} images:")
        for when in ("before", "after"):
            typer.echo(f"  {when}: {format_retrieval(retrieval, when)}")
    typer.echo(f"wrote {out} and {out.name}.json")
    typer.echo(f"use it: --text-encoder clip -T model={model} -T weights={out}   (the clip text encoder)")
    if info["vit_blocks"]:
        blocks = f"-D layers: blocks 0..{info['vit_blocks'] - 1}"
        typer.echo(f"        --disc clipd -D model={model} -D weights={out}   ({blocks})")
    typer.echo(f"        --set loss.term_options.clip_sim.model={model} --set loss.term_options.clip_sim.weights={out}")
