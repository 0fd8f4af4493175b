"""How far apart does a frozen CLIP ViT put Shapes' four background colours? A distance table.

``clipd``'s head reads the ViT's token grids, and G learns only what the head can tell apart there. For a flat
image of each Shapes background colour (``t2i.data.shapes.BACKGROUNDS``) at the ViT's input size, this prints
the Euclidean distance between the grids after each tapped block, for every pair of colours. Pairs that sit
close together are the ones a generator can swap cheaply: with GALIP's MA-GP at these features, the Shapes
recipes painted gray backgrounds white and brown ones black, the two nearest pairs of the random tiny ViT
(plugins/t2i-clipd/README.md, "Why the backgrounds collapsed").

Run: ``.venv/bin/python benchmarks/clipd_colours.py`` (the random ViT of the 32 px recipe), or
``--model plugins/t2i-clipd/recipes/shapes-clip-32.json --weights shapes-clip-32.pt`` for a trained one.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from t2i.data.shapes import BACKGROUNDS
from t2i.errors import UsageError
from t2i_clipd.vit import TappedViT, load_vit


def flat_images(size: int) -> torch.Tensor:
    """One flat ``size`` x ``size`` image per background colour, in ``[-1, 1]``, in ``BACKGROUNDS`` order."""
    colours = torch.tensor(list(BACKGROUNDS.values()), dtype=torch.float32) / 127.5 - 1
    return colours[:, :, None, None].expand(-1, -1, size, size).contiguous()


def grid_distances(vit: TappedViT, images: torch.Tensor) -> list[torch.Tensor]:
    """For each tapped block, the (n, n) Euclidean distances between the images' token grids."""
    with torch.no_grad():
        return [torch.cdist(g.flatten(1), g.flatten(1)) for g in vit(images)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="plugins/t2i-clipd/recipes/tiny-vit.json", help="open-clip name or JSON config")
    parser.add_argument("--weights", default="random:0", help="a state-dict file, or random:SEED")
    parser.add_argument("--layers", default="0,1", help="the blocks to tap, as clipd's layers option")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        layers = tuple(int(n) for n in args.layers.split(","))
        bundle = load_vit(args.model, weights=args.weights)
        vit = TappedViT(bundle, layers)
    except (UsageError, ValueError) as e:  # a user mistake: one line, exit code 2 (as t2i's CLI)
        print(f"clipd_colours: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    names = list(BACKGROUNDS)
    print(f"{args.model} ({args.weights}), flat {bundle.image_size} px images; distance between token grids")
    for layer, dist in zip(vit.layers, grid_distances(vit, flat_images(bundle.image_size))):
        pairs = sorted(itertools.combinations(range(len(names)), 2), key=lambda ij: float(dist[ij]))
        print(f"after block {layer}: " + ", ".join(f"{names[i]}-{names[j]} {float(dist[i, j]):.0f}" for i, j in pairs))


if __name__ == "__main__":
    main()
