"""``shapes_accuracy``: does the generator draw what the caption asked for? (built-in Shapes data only)

Protocol. From the reference split (the Shapes ``test`` split: seen and held-out (shape, colour) pairs),
take the first ``n`` images of a seeded permutation (all of them, if fewer) and one caption of each (a
seeded choice among its captions); generate one image per caption; read shape, colour, background, size
and position from every generated image with t2i's attribute reader (:mod:`t2i.metrics.shapes_reader`)
and compare them with the attributes of the reference image that the caption describes.

Reported, as fractions of images read correctly:

- ``shapes_accuracy/<attribute>``: all ``n`` images; ``/seen`` and ``/unseen``: the images whose
  (shape, colour) pair occurs in ``train`` or is held out (a key is left out when its subset is empty;
  the counts are in the protocol);
- ``shapes_accuracy/<attribute>/rephrased``: the same ``n`` reference images, each generated again from
  one of its captions in a **held-out phrasing** (Shapes spec v2: wordings that never occur in training,
  a seeded choice among them), with the same noise: robustness to how the user words a caption;
- ``shapes_accuracy/<attribute>/real``: the same reader on the ``n`` real reference images, the ceiling
  that a perfect generator would reach;
- ``shapes_accuracy/mean`` (and ``/seen``, ``/unseen``, ``/real``): the mean over the five attributes.

Chance, for a generator that ignores the caption: shape 0.25, colour ~0.125, background 0.25, size 0.5,
position ~0.11. The ``"protocol"`` entry names the sample, the seed, and the reader's file, weights
(sha256) and validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.shapes import HELD_OUT_PHRASINGS, SPEC_VERSION
from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric
from . import Generate, generated_rows, seeded_caption, seeded_order
from .shapes_reader import ATTRIBUTES, ShapesReader, load_reader

__all__ = ["ShapesAccuracyConfig", "ShapesAccuracy"]


@dataclass
class ShapesAccuracyConfig:
    """Options of the ``shapes_accuracy`` metric."""

    n: int = field(default=1000, metadata={"help": "images to generate, one per reference image"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of reference images and captions"})
    cache_dir: str = field(
        default="", metadata={"help": "attribute reader cache ('' = $T2I_CACHE_DIR, else ~/.cache/t2i)"}
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


READER_BATCH = 500  # images per pass of ShapesReader.predict (its default batch_size)


class ShapesAccuracy(Metric):
    """Attribute accuracy of generated Shapes images, per attribute, for seen and held-out combinations."""

    chunk = 250  # captions per generate() call
    splits_across_ranks = True  # per-image predictions (t2i.metrics.generated_rows)

    def __init__(self, cfg: ShapesAccuracyConfig | None = None):
        self.cfg = cfg or ShapesAccuracyConfig()
        self._readers: dict[int, ShapesReader] = {}

    def reader(self, resolution: int) -> ShapesReader:
        """The attribute reader for ``resolution`` (loaded, or trained and cached, on first use)."""
        if resolution not in self._readers:
            self._readers[resolution] = load_reader(resolution, self.cfg.cache_dir or None)
        return self._readers[resolution]

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        _check_reference(reference)
        resolution = reference.resolution
        reader = self.reader(resolution)
        rows = torch.from_numpy(seeded_order(len(reference), self.cfg.seed)[: self.cfg.n])
        captions = seeded_caption(reference, rows.tolist(), self.cfg.seed)
        fake = generated_rows(generate, captions, resolution, reader.predict, chunk=self.chunk, align=READER_BATCH)
        rephrased = _held_out_captions(reference, rows.tolist(), self.cfg.seed)
        if rephrased:
            fake_rephrased = generated_rows(generate, rephrased, resolution, reader.predict, chunk=self.chunk,
                                            align=READER_BATCH)
        real = reader.predict(reference.images[rows])
        truth = {name: reference.attributes[name][rows] for name in ATTRIBUTES}
        seen = reference.attributes["seen"][rows].bool()
        subsets = {"": torch.ones_like(seen), "/seen": seen, "/unseen": ~seen}

        results: dict[str, Any] = {}
        for name in ATTRIBUTES:
            hit = fake[name] == truth[name]
            for suffix, mask in subsets.items():
                if mask.any():
                    results[f"shapes_accuracy/{name}{suffix}"] = hit[mask].double().mean().item()
            if rephrased:
                hit = fake_rephrased[name] == truth[name]
                results[f"shapes_accuracy/{name}/rephrased"] = hit.double().mean().item()
            results[f"shapes_accuracy/{name}/real"] = (real[name] == truth[name]).double().mean().item()
        for suffix in (*subsets, "/rephrased", "/real"):
            parts = [results.get(f"shapes_accuracy/{name}{suffix}") for name in ATTRIBUTES]
            if None not in parts:
                results[f"shapes_accuracy/mean{suffix}"] = sum(parts) / len(parts)
        results["protocol"] = self._protocol(
            reference, reader, n_seen=int(seen.sum()), n=len(rows), rephrased=bool(rephrased)
        )
        return results

    def _protocol(
        self, reference: CaptionedImages, reader: ShapesReader, *, n_seen: int, n: int, rephrased: bool
    ) -> dict:
        info, keys = reader.info, ("name", "split", "seed", "spec_version")
        return {
            "metric": "shapes_accuracy",
            "n": n,
            "n_seen": n_seen,
            "n_unseen": n - n_seen,
            "seed": self.cfg.seed,
            "selection": "first n of a seeded permutation of the reference split; one seeded caption each",
            "rephrased": (
                f"the same n images again, each from one of its {HELD_OUT_PHRASINGS} captions (a seeded choice)"
                if rephrased else "not measured: the reference split has no held-out phrasings"
            ),
            "reference": {
                "size": len(reference),
                **{k: reference.info[k] for k in keys if k in reference.info},
            },
            "resolution": reference.resolution,
            "reader": {
                "file": info.get("file", ""),
                "sha256": info.get("sha256", ""),
                "recipe_hash": info.get("recipe_hash", ""),
                "val_accuracy": info.get("val_accuracy", {}),
                "val_accuracy_augmented": info.get("val_accuracy_augmented", {}),
                "val_size": info.get("val_size", 0),
                "shapes_spec_version": SPEC_VERSION,
            },
        }


def _held_out_captions(reference: CaptionedImages, rows: list[int], seed: int) -> list[str]:
    """One held-out-phrasing caption of each image in ``rows`` (uniform, from raw PCG64([seed, 2])), or
    ``[]`` when the split has none (a spec v1 cache, another data set)."""
    ids = reference.extra_caption_ids.get(HELD_OUT_PHRASINGS)
    if ids is None or ids.shape[1] == 0:
        return []
    raw = np.random.Generator(np.random.PCG64([seed, 2])).bit_generator.random_raw(len(reference))[rows]
    picks = (raw % np.uint64(ids.shape[1])).astype(np.int64)
    return [reference.captions[int(ids[r, k])] for r, k in zip(rows, picks)]


def _check_reference(reference: CaptionedImages) -> None:
    expected = {name: tuple(values) for name, values in ATTRIBUTES.items()}
    have = {name: tuple(reference.attribute_values.get(name, ())) for name in ATTRIBUTES}
    if have != expected or any(name not in reference.attributes for name in (*ATTRIBUTES, "seen")):
        what = reference.info.get("name", "this data set")
        raise UsageError(
            f"shapes_accuracy needs the built-in shapes data set; the reference split of {what!r} has no "
            f"Shapes attributes (shape, colour, background, size, position, seen); try 'diversity' instead"
        )
    if len(reference) == 0:
        raise UsageError("shapes_accuracy: the reference split is empty")
    r = reference.resolution
    if r < 16 or r & (r - 1):
        raise UsageError(f"shapes_accuracy reads images of a power-of-two resolution >= 16, got {r} px")
