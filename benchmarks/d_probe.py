"""How fast can a discriminator's image trunk learn to read a Shapes attribute? A supervised probe.

A GAN's discriminator can only teach the generator what its image trunk (``image_features``, the text-free half
of t2i's ``Discriminator``) can tell apart. This script measures that directly, without a generator: it builds
the discriminator of a recipe (or of ``--disc`` with ``-D`` options), puts a small classifier on its trunk's map
(conv over the whole map -> LeakyReLU(0.2) -> one logit per value of the attribute) and trains both, with the
recipe's D learning rate and betas, on real Shapes images: every distinct image at the run's resolution
(``t2i.metrics.shapes_reader.universe``, 2,232), 80% to train on, 20% held out. It prints the held-out
accuracy every ``--every`` steps. Frozen parts (``clipd``'s ViT) stay frozen, as in a run.

A supervised signal is far stronger than a GAN's, so a trunk that needs thousands of steps here is unlikely to
teach the attribute to G in a 15-minute run; a fast one is necessary, not sufficient (plugins/t2i-clipd/README.md:
clipd's trunk against t2i's default D, and what G then learns).

Run: ``.venv/bin/python benchmarks/d_probe.py --config plugins/t2i-clipd/recipes/shapes-32.toml``
(``--help``; ``--disc dcgan -D ndf=32 -D spectral_norm=true`` without a recipe).
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

import t2i
from t2i.errors import UsageError
from t2i.metrics.shapes_reader import universe
from t2i.options import parse_assignments

ATTRIBUTES = ("shape", "colour", "background", "size", "position")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="a recipe (TOML): its discriminator, resolution, lr_d and betas")
    p.add_argument("--disc", help="discriminator name (overrides the recipe's)")
    p.add_argument("-D", dest="options", action="append", default=[], help="discriminator option KEY=VALUE")
    p.add_argument("--attribute", choices=ATTRIBUTES, default="shape")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=200, help="print held-out accuracy every N steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's lr_d, else 2e-4)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _fail(message: str) -> NoReturn:
    """A user mistake: one line on stderr, exit code 2 (as t2i's CLI)."""
    print(f"d_probe: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        recipe = tomllib.loads(Path(args.config).read_text()) if args.config else {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        _fail(f"cannot read the recipe {args.config}: {e}")
    section = recipe.get("discriminator", {})
    name = args.disc or section.get("name", "dcgan")
    recipe_options = section.get("options", {}) if name == section.get("name") else {}
    options = recipe_options | parse_assignments(args.options, "-D")
    train = recipe.get("train", {})
    lr, betas = args.lr or train.get("lr_d", 2e-4), tuple(train.get("betas", (0.0, 0.9)))
    resolution = recipe.get("data", {}).get("resolution", 32)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    images, codes = universe(resolution)
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    y = codes[args.attribute]
    classes = int(y.max()) + 1
    order = torch.randperm(len(x))
    held_out, train_rows = order[: len(x) // 5], order[len(x) // 5:]

    try:
        d = t2i.registry("discriminators").create(name, options, resolution=resolution, text_dim=16)
    except (UsageError, ValueError, TypeError) as e:
        _fail(f"cannot build discriminator {name!r} with {options}: {e}")
    with torch.no_grad():
        channels, height, width = d.image_features(x[:2])[0].shape[1:]
    classifier = nn.Sequential(nn.Conv2d(channels, 32, (height, width)), nn.LeakyReLU(0.2),
                               nn.Conv2d(32, classes, 1), nn.Flatten())
    params = [p for p in d.parameters() if p.requires_grad] + list(classifier.parameters())
    opt = torch.optim.Adam(params, lr, betas=betas)
    print(f"{name} {options} | {args.attribute} ({classes} values, chance {1 / classes:.3f}) | {resolution} px, "
          f"{len(train_rows)} images to train on, {len(held_out)} held out | lr {lr:g} betas {betas} | "
          f"trunk map {channels} x {height} x {width} | "
          f"{sum(p.numel() for p in params):,} trainable parameters")

    def accuracy(rows: torch.Tensor) -> float:
        with torch.no_grad():
            return (classifier(d.image_features(x[rows])[0]).argmax(1) == y[rows]).float().mean().item()

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        rows = train_rows[torch.randint(len(train_rows), (args.batch_size,))]
        loss = nn.functional.cross_entropy(classifier(d.image_features(x[rows])[0]), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            print(f"step {step:5d} | loss {loss.item():.3f} | train {accuracy(train_rows[:400]):.3f} | "
                  f"held out {accuracy(held_out):.3f} | {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
