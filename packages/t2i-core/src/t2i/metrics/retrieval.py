"""R-precision's computation, apart from the metric: rank each image's true caption among mismatched ones
by the cosine similarity of an encoder pair's embeddings (:mod:`t2i.metrics.r_precision` explains the
protocol). Used by the ``r_precision`` metric and to validate the evaluator it scores with
(:mod:`t2i.metrics.evaluator`).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages
from . import Generate, generate_images, seeded_caption, seeded_order

__all__ = ["EncoderPair", "scene_classes", "mismatched_captions", "hit_rates", "fold_statistics", "r_precision_of"]


class EncoderPair(Protocol):
    """What R-precision needs: uint8 images and captions -> L2-normalised embeddings in one space (CPU)."""

    def encode_images(self, images: Tensor) -> Tensor: ...

    def encode_text(self, captions: Sequence[str]) -> Tensor: ...

    def protocol(self) -> dict[str, Any]: ...


# -- choosing the mismatched captions ----------------------------------------------------------------
def scene_classes(reference: CaptionedImages) -> np.ndarray:
    """``(C,)`` a scene label for every caption: captions of one image, of images sharing a caption, or of
    images with equal attributes (when the data set has them) get the same label."""
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
    if reference.attributes:
        table = np.stack([reference.attributes[name].numpy() for name in sorted(reference.attributes)], axis=1)
        seen: dict[bytes, int] = {}
        for row in range(len(reference)):
            caption = seen.setdefault(table[row].tobytes(), int(first[row]))
            union(caption, int(first[row]))
    return np.array([find(c) for c in range(len(parent))], dtype=np.int64)


def mismatched_captions(classes: np.ndarray, true_ids: np.ndarray, negatives: int, seed: int) -> np.ndarray:
    """``(N, negatives)`` distinct caption ids per query, none of the true caption's scene; seeded (raw PCG64)."""
    bits = np.random.Generator(np.random.PCG64([seed, 2])).bit_generator
    n_captions = len(classes)
    out = np.empty((len(true_ids), negatives), dtype=np.int64)
    for i, true in enumerate(true_ids):
        eligible = n_captions - int((classes == classes[true]).sum())
        if eligible < negatives:
            raise UsageError(f"r_precision needs {negatives} captions that do not describe the scene of each image; the "
                             f"reference split has {eligible} for caption {int(true)}; lower r_precision.negatives or use more images")
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < negatives:
            for c in (bits.random_raw(2 * negatives) % np.uint64(n_captions)).astype(np.int64):
                if classes[c] != classes[true] and c not in taken:
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
) -> dict[str, Any]:
    """R-precision of real images (``real``, ``real_std``) and, given ``generate``, of generated ones (``mean``, ``std``)."""
    rows = seeded_order(len(reference), seed)[:n]
    if len(rows) < folds:
        raise UsageError(f"r_precision with {folds} folds needs at least {folds} images; the reference split has {len(rows)}")
    captions = seeded_caption(reference, rows, seed)
    index = {c: i for i, c in enumerate(reference.captions)}
    true_ids = np.array([index[c] for c in captions], dtype=np.int64)
    candidates = np.concatenate([true_ids[:, None], mismatched_captions(scene_classes(reference), true_ids, negatives, seed)], 1)
    used, local = np.unique(candidates, return_inverse=True)  # embed each caption once
    text = pair.encode_text([reference.captions[int(c)] for c in used])
    local = local.reshape(candidates.shape)
    real = hit_rates(pair.encode_images(reference.images[torch.from_numpy(rows)]), text, local)
    out: dict[str, Any] = {"n": len(rows)}
    out["real"], out["real_std"] = fold_statistics(real, folds)
    if generate is not None:
        fake = hit_rates(pair.encode_images(generate_images(generate, captions, reference.resolution, chunk)), text, local)
        out["mean"], out["std"] = fold_statistics(fake, folds)
    return out
