"""``t2i damsm pretrain``: train DAMSM's text and image encoders on a data set (:mod:`t2i_attngan.pretrain`).

The command parses and validates; :func:`t2i_attngan.pretrain.pretrain_damsm` does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from t2i.errors import UsageError

damsm_app = typer.Typer(
    name="damsm",
    help="AttnGAN's DAMSM image/text encoders: pretrain them on a data set for the damsm term and text encoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@damsm_app.command("pretrain")
def pretrain(
    data: Annotated[str, typer.Option("--data", help="data set, NAME or NAME:PATH (e.g. shapes)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write text_encoder.pth, image_encoder.pth, "
                                                          "captions.pickle and damsm.json into")],
    data_opts: Annotated[Optional[list[str]], typer.Option("-d", help="data set option KEY=VALUE")] = None,
    resolution: Annotated[int, typer.Option("--resolution", help="image side in pixels the data set is loaded at")] = 64,
    trunk: Annotated[str, typer.Option("--trunk", help="image trunk: inception (the paper; ImageNet weights, "
                                                       "frozen) or small (a CNN trained whole; CPU)")] = "inception",
    inception_weights: Annotated[Optional[str], typer.Option("--inception-weights", help="torchvision's Inception-v3 "
                                                             "ImageNet file (else $T2I_INCEPTION_V3_WEIGHTS, the hub cache, a download)")] = None,
    steps: Annotated[int, typer.Option("--steps", help="training steps")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per step (DAMSM birds: 48)")] = 48,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (ENCODER_LR: 0.002)")] = 0.002,
    words: Annotated[int, typer.Option("--words", help="words kept per caption (WORDS_NUM: 18)")] = 18,
    nef: Annotated[int, typer.Option("--nef", help="feature size of words, sentences and regions (256)")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="seed of initialisation and batches")] = 0,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto")] = "cpu",
) -> None:
    """Train DAMSM (words_loss + sent_loss) on the data set's train split and write the encoders in the authors'
    formats: use them with --text-encoder damsm -T text_encoder=OUT/text_encoder.pth -T captions=OUT/captions.pickle
    and --term damsm=5 --set loss.term_options.damsm.image_encoder=OUT/image_encoder.pth (see the plugin's README)."""
    from t2i.device import pick_device
    from t2i.cli.data import open_dataset

    from .pretrain import pretrain_damsm

    if trunk not in ("inception", "small"):
        raise UsageError(f"--trunk must be inception or small, got {trunk!r}")
    _, dataset = open_dataset(data, data_opts)
    train = dataset.load("train", resolution)

    def log(message: str) -> None:
        typer.echo(f"t2i damsm: {message}", err=True)

    info = pretrain_damsm(train, out, trunk=trunk, inception_weights=inception_weights, steps=steps,  # type: ignore[arg-type]
                          batch_size=batch_size, lr=lr, words=words, nef=nef, seed=seed,
                          device=pick_device(device), log=log)
    typer.echo(f"DAMSM ({trunk} trunk) trained in {info['seconds']} s: loss {info['first_loss']} -> {info['last_loss']}")
    typer.echo(f"wrote {out}/text_encoder.pth, image_encoder.pth, captions.pickle, damsm.json")
