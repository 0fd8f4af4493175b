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

Several processes (torchrun): a metric that computes its figure from per-image values (features, predicted
attributes, pixels) gets them from :func:`generated_rows` and sets ``splits_across_ranks = True``. When the
engine's ``generate`` carries a ``split`` (:class:`t2i.engine.evaluate.RankShare`), each rank generates and
maps one contiguous share of the images, in blocks that start where a single process's chunks and batches
start, and the rows are gathered in image order: every rank then holds exactly the rows one process computes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..interfaces import CaptionedImages

__all__ = ["seeded_order", "seeded_caption", "cycled_captions", "CYCLE_RULE", "generate_images", "generated_rows"]

Generate = Callable[[list[str]], Tensor]
Rows = TypeVar("Rows", Tensor, dict[str, Tensor])


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


def generated_rows(generate: Generate, captions: Sequence[str], resolution: int, rows_of: Callable[[Tensor], Rows], *,
                   chunk: int = 250, align: int = 1) -> Rows:
    """``rows_of(images)`` for the images of ``captions``: one row per image (a tensor, or a dict of tensors).

    ``rows_of`` maps uint8 ``(B, R, R, 3)`` to rows, in its own batches of ``align`` images from the start of what
    it is given (an extractor's ``batch_size``). It is applied block by block (about 2,000 images), each block
    and each rank's share starting at a multiple of ``lcm(chunk, align)`` images, so its batches are those of
    one call on every image and only a block of images is held at once. When ``generate`` has a ``split``
    (``share(n, unit) -> (start, stop)``, ``gather(obj) -> [obj of each rank]``) and ``skip(n)`` (advance its
    noise as ``generate`` of ``n`` captions would), this process maps only its share and the rows of every
    rank are gathered in image order.
    """
    unit = math.lcm(chunk, align)  # shares and blocks start where a chunk and a batch start
    block = unit * max(1, 2000 // unit)  # about 2,000 images at a time
    split = getattr(generate, "split", None)
    start, stop = split.share(len(captions), unit) if split is not None else (0, len(captions))
    for s in range(0, start, chunk):  # the noise of the images before this share
        generate.skip(min(chunk, start - s))  # type: ignore[attr-defined]
    parts = [rows_of(generate_images(generate, captions[s : min(s + block, stop)], resolution, chunk))
             for s in range(start, stop, block)]
    for s in range(stop, len(captions), chunk):  # ... and after it: later calls continue where one process would
        generate.skip(min(chunk, len(captions) - s))  # type: ignore[attr-defined]
    if split is not None:
        parts = [p for rank_parts in split.gather([_to_cpu(p) for p in parts]) for p in rank_parts]
    if not parts:
        raise ValueError("generated_rows needs at least one caption")
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # type: ignore[return-value]
    return torch.cat(parts)  # type: ignore[return-value]


def _to_cpu(rows: Any) -> Any:
    return {k: v.cpu() for k, v in rows.items()} if isinstance(rows, dict) else rows.cpu()
