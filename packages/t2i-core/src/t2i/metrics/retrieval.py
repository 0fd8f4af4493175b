"""R-precision's computation, apart from the metric: rank each image's true caption among mismatched ones
by the cosine similarity of an encoder pair's embeddings (:mod:`t2i.metrics.r_precision` explains the
protocol). Used by the ``r_precision`` metric and to validate the evaluator it scores with
(:mod:`t2i.metrics.evaluator`).

Which captions count as mismatched is a partition of the captions into "scenes" (:func:`scene_classes`): a
negative is never drawn from the true caption's scene. By default a scene is one image and its paraphrases;
``image_groups`` widens it to whole groups of images, e.g. the bird species of CUB (:func:`image_classes`), as
DM-GAN's ``get_mis_caption`` draws its 99 mismatched captions from images of other classes only.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages
from . import Generate, cycled_captions, generated_rows, seeded_caption, seeded_order

__all__ = ["EncoderPair", "scene_classes", "image_classes", "mismatched_captions", "hit_rates", "fold_statistics",
           "r_precision_of"]


class EncoderPair(Protocol):
    """What R-precision needs: uint8 images and captions -> L2-normalised embeddings in one space (CPU)."""

    def encode_images(self, images: Tensor) -> Tensor: ...

    def encode_text(self, captions: Sequence[str]) -> Tensor: ...

    def protocol(self) -> dict[str, Any]: ...


# -- choosing the mismatched captions ----------------------------------------------------------------
def scene_classes(reference: CaptionedImages, image_groups: np.ndarray | None = None) -> np.ndarray:
    """``(C,)`` a scene label for every caption: captions of one image, of images sharing a caption, of
    images with equal attributes (when the data set has them), and of images with equal ``image_groups``
    (``(N,)`` labels, e.g. :func:`image_classes`; optional) get the same label. Captions no image lists in
    ``caption_ids`` (Shapes' held-out phrasings, reachable only through ``extra_caption_ids``) get ``-1``:
    never drawn as a negative."""
    parent = list(range(len(reference.captions)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    ids, counts = reference.caption_ids.numpy(), reference.caption_counts.numpy()
    first = ids[:, 0]
    for row in range(len(reference)):
        for k in range(1, int(counts[row])):
            union(int(first[row]), int(ids[row, k]))
    tables = [reference.attributes[name].numpy() for name in sorted(reference.attributes)]
    for table in ([np.stack(tables, axis=1)] if tables else []) + ([np.asarray(image_groups)[:, None]] if image_groups is not None else []):
        seen: dict[bytes, int] = {}
        for row in range(len(reference)):
            caption = seen.setdefault(table[row].tobytes(), int(first[row]))
            union(caption, int(first[row]))
    listed = np.zeros(len(parent), dtype=bool)
    listed[ids[ids >= 0]] = True
    return np.array([find(c) if listed[c] else -1 for c in range(len(parent))], dtype=np.int64)


def image_classes(reference: CaptionedImages) -> np.ndarray:
    """``(N,)`` a class label per image: the folder of its key (``info["keys"]``), as CUB's
    ``<class>/<name>`` keys carry the species. A split without folder keys is a UsageError."""
    keys = reference.info.get("keys")
    if not keys or len(keys) != len(reference) or not all("/" in str(k) for k in keys):
        what = reference.info.get("name", "this data set")
        raise UsageError(f"r_precision.mismatch=class needs image keys of the form <class>/<name> (CUB's layout); "
                         f"{what} has none: use r_precision.mismatch=scene")
    names: dict[str, int] = {}
    return np.array([names.setdefault(str(k).rsplit("/", 1)[0], len(names)) for k in keys], dtype=np.int64)


def mismatched_captions(classes: np.ndarray, true_ids: np.ndarray, negatives: int, seed: int) -> np.ndarray:
    """``(N, negatives)`` distinct caption ids per query, none of the true caption's scene nor labelled ``-1``;
    seeded (raw PCG64)."""
    bits = np.random.Generator(np.random.PCG64([seed, 2])).bit_generator
    n_captions = len(classes)
    out = np.empty((len(true_ids), negatives), dtype=np.int64)
    for i, true in enumerate(true_ids):
        eligible = int(((classes != classes[true]) & (classes >= 0)).sum())
        if eligible < negatives:
            raise UsageError(f"r_precision needs {negatives} captions that do not describe the scene of each image; the "
                             f"reference split has {eligible} for caption {int(true)}; lower r_precision.negatives or use more images")
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < negatives:
            for c in (bits.random_raw(2 * negatives) % np.uint64(n_captions)).astype(np.int64):
                if classes[c] != classes[true] and classes[c] >= 0 and c not in taken:
                    taken.add(int(c))
                    chosen.append(int(c))
                    if len(chosen) == negatives:
                        break
        out[i] = chosen
    return out


# -- scoring -----------------------------------------------------------------------------------------
def hit_rates(image_embeddings: Tensor, text_embeddings: Tensor, candidates: np.ndarray, block: int = 1000) -> Tensor:
    """Per query ``i``: 1 if ``text_embeddings[candidates[i, 0]]`` (the true caption) is the most similar to
    image ``i`` among ``candidates[i]``, ``1 / k`` when ``k`` candidates tie for first with it, else 0."""
    cand = torch.from_numpy(np.asarray(candidates, dtype=np.int64))
    img = image_embeddings.double()
    txt = text_embeddings.double()
    hits = []
    for s in range(0, len(img), block):
        scores = torch.einsum("bd,bkd->bk", img[s : s + block], txt[cand[s : s + block]])
        true, rest = scores[:, 0], scores[:, 1:]
        best = rest.max(1).values
        tied = (rest == true[:, None]).sum(1)
        hits.append(torch.where(true > best, 1.0, torch.where(true == best, 1.0 / (1 + tied), 0.0)).double())
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.float64)


def fold_statistics(hits: Tensor, folds: int) -> tuple[float, float]:
    """Mean hit rate of each of ``folds`` contiguous folds -> (mean, population std) over folds."""
    values = np.array([part.mean() for part in np.array_split(hits.numpy(), folds)], dtype=np.float64)
    return float(values.mean()), float(values.std())


def r_precision_of(
    pair: EncoderPair,
    reference: CaptionedImages,
    *,
    n: int,
    negatives: int = 99,
    folds: int = 10,
    seed: int = 0,
    generate: Generate | None = None,
    chunk: int = 250,
    n_generated: int = 0,
    image_groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """R-precision of real images (``real``, ``real_std``) and, given ``generate``, of generated ones (``mean``, ``std``).

    Queries: the first ``n`` images of a seeded permutation of the split, one seeded caption each; or, with
    ``n_generated = N``, exactly ``N`` queries cycling the split (:func:`t2i.metrics.cycled_captions`: image ``i``
    is row ``order[i mod R]`` with a new caption on each pass), the real side repeating its rows likewise.
    Negatives avoid the true caption's scene (:func:`scene_classes` with ``image_groups``). Images are generated
    and encoded ``chunk`` at a time, so ``N = 30,000`` never holds more than a chunk of pixels.
    """
    order = seeded_order(len(reference), seed)
    if n_generated:
        rows = order[np.arange(n_generated) % len(reference)]
        captions = cycled_captions(reference, n_generated, seed)
    else:
        rows = order[:n]
        captions = seeded_caption(reference, rows, seed)
    if len(rows) < folds:
        raise UsageError(f"r_precision with {folds} folds needs at least {folds} images; the reference split has {len(rows)}")
    index = {c: i for i, c in enumerate(reference.captions)}
    true_ids = np.array([index[c] for c in captions], dtype=np.int64)
    classes = scene_classes(reference, image_groups)
    candidates = np.concatenate([true_ids[:, None], mismatched_captions(classes, true_ids, negatives, seed)], 1)
    used, local = np.unique(candidates, return_inverse=True)  # embed each caption once
    text = pair.encode_text([reference.captions[int(c)] for c in used])
    local = local.reshape(candidates.shape)
    distinct = order[: min(len(rows), len(reference))]  # the real images, each encoded once
    real_codes = torch.cat([pair.encode_images(reference.images[torch.from_numpy(distinct[s : s + chunk])])
                            for s in range(0, len(distinct), chunk)])  # fmt: skip
    position = np.empty(len(reference), dtype=np.int64)
    position[distinct] = np.arange(len(distinct))
    real = hit_rates(real_codes[torch.from_numpy(position[rows])], text, local)
    out: dict[str, Any] = {"n": len(rows)}
    out["real"], out["real_std"] = fold_statistics(real, folds)
    if generate is not None:
        def encode(images: Tensor) -> Tensor:  # chunk by chunk, as the images come from generate()
            return torch.cat([pair.encode_images(images[s : s + chunk]) for s in range(0, len(images), chunk)])

        fake_codes = generated_rows(generate, captions, reference.resolution, encode, chunk=chunk, align=chunk)
        fake = hit_rates(fake_codes, text, local)
        out["mean"], out["std"] = fold_statistics(fake, folds)
    return out
