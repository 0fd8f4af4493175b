"""The core's evaluation metrics: numbers about a generator, each returned with the protocol that made it.

The metrics (registered in :mod:`t2i.builtins.metrics`):

- :mod:`.inception_metrics`: ``fid``, ``kid`` and ``is`` on the TF-compatible Inception (:mod:`.inception`);
- :mod:`.fd_dinov2`: ``fd_dinov2``, the Frechet distance in DINOv2 (or any timm model's) features
  (:mod:`.timm_features`);
- :mod:`.prc`: ``prc``, improved precision and recall;
- :mod:`.clip_score`: ``clip_score``, CLIP's image/caption agreement;
- :mod:`.r_precision`: ``r_precision``, caption retrieval (computed in :mod:`.retrieval`) with t2i's trained
  image/text evaluator (:mod:`.evaluator`) or CLIP;
- :mod:`.shapes_accuracy`: ``shapes_accuracy``, generated Shapes images read back against the attributes
  their captions asked for, by the attribute reader of :mod:`.shapes_reader`;
- :mod:`.diversity`: ``diversity``, mode collapse as a number (pixel distances within and between captions).

What they share: :mod:`.build` (building metrics from names and options; how their keys are logged),
:mod:`.keys` (what a key means: subsets, ceilings, spreads, which metric produced it and which value is
best), :mod:`.features` (feature extractors), :mod:`.image_sets` (image sets and the disk cache of their
features), :mod:`.frechet` (Gaussian statistics and the Frechet distance), :mod:`.reference_stats`
(``mu``/``sigma`` files in pytorch-fid's format) and :mod:`.compare` (metrics of two image folders,
``t2i eval FOLDER --reference ...``).

The helpers below are what every metric does the same way: choose reference images and captions from a
seed (any number of them: :func:`cycled_captions`), and call the engine's ``generate`` in chunks, checking
what comes back.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..interfaces import CaptionedImages

__all__ = ["seeded_order", "seeded_caption", "cycled_captions", "CYCLE_RULE", "generate_images"]

Generate = Callable[[list[str]], Tensor]


def seeded_order(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` from raw PCG64 outputs (no numpy sampler: version-proof)."""
    keys = np.random.Generator(np.random.PCG64([seed, 0])).bit_generator.random_raw(n)
    return np.argsort(keys, kind="stable")


def seeded_caption(reference: CaptionedImages, rows: Sequence[int], seed: int, cycle: int = 0) -> list[str]:
    """One caption of each image in ``rows``, chosen from a seed (uniformly among its captions).

    ``cycle``: which pass over the split this is (:func:`cycled_captions`); pass 0 is the historical choice.
    """
    rows = np.asarray(rows, np.int64)
    stream = [seed, 1] if cycle == 0 else [seed, 1, cycle]
    raw = np.random.Generator(np.random.PCG64(stream)).bit_generator.random_raw(len(reference))[rows]
    counts = reference.caption_counts.numpy()[rows].astype(np.uint64)
    picks = (raw % counts).astype(np.int64)
    return [reference.captions[int(reference.caption_ids[r, k])] for r, k in zip(rows, picks)]


CYCLE_RULE = (
    "image i uses row order[i mod R] of a seeded permutation (seeded_order(R, seed)) of the R reference images "
    "and one of that image's captions drawn uniformly from raw PCG64([seed, 1]) on the first pass over the split, "
    "PCG64([seed, 1, p]) on pass p = i div R >= 1"
)


def cycled_captions(reference: CaptionedImages, n: int, seed: int) -> list[str]:
    """``n`` captions, cycling through the reference split as many times as needed (:data:`CYCLE_RULE`).

    What DF-GAN's ``sample_times`` and AttnGAN's 30,000 samples do: every image of the split is visited in the
    same seeded order on each pass, and each pass draws a new caption of it. The first ``R`` captions are those
    of ``seeded_caption(reference, seeded_order(R, seed)[:n], seed)``: ``n <= R`` changes nothing.
    """
    size = len(reference)
    order = seeded_order(size, seed)
    captions: list[str] = []
    for cycle in range(-(-n // size)):
        rows = order[: min(size, n - cycle * size)]
        captions += seeded_caption(reference, rows, seed, cycle)
    return captions


def generate_images(generate: Generate, captions: Sequence[str], resolution: int, chunk: int = 250) -> Tensor:
    """``generate(captions)`` in chunks of ``chunk`` -> uint8 ``(len(captions), R, R, 3)`` on the CPU."""
    parts = []
    for start in range(0, len(captions), chunk):
        batch = list(captions[start : start + chunk])
        out: Any = generate(batch)
        want = (len(batch), resolution, resolution, 3)
        if not isinstance(out, Tensor) or out.dtype != torch.uint8 or tuple(out.shape) != want:
            got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"generate() must return a uint8 tensor of shape {want}, got {got}")
        parts.append(out.cpu())
    return torch.cat(parts) if parts else torch.empty((0, resolution, resolution, 3), dtype=torch.uint8)
