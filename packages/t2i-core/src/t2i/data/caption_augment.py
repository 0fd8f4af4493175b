"""Caption augmentation: more wordings of each training caption, so the text path learns words, not templates.

Two options of the ``[data]`` config table, both off by default:

- ``data.caption_variants = V``: each distinct training caption gets ``V`` variants, added to the captions
  of every image that has it; the feed draws uniformly among an image's captions as before, so an
  original caption is drawn ``1 / (1 + V)`` of the time.
- ``data.word_dropout = p``: a variant drops each word of its caption with probability ``p`` (at least one
  word is always kept). ``data.word_shuffle = true``: a variant's words are also put in a random order
  (useful for order-sensitive encoders such as ``gru``; a bag of words does not see order).

The variants are made once, when the training split is loaded, from a seed (``train.seed``) and the
caption's text only, so the same caption gets the same variants in every run with that seed, whatever the
order of the split; a frozen encoder embeds them once with the other captions (its caption table grows
``1 + V`` times). Only the training split is augmented: sample grids and metrics see the data set's own
captions.

Why not synonym swaps: the only synonyms t2i could know without a thesaurus are those in the data set's
own captions, and for the Shapes data those are exactly the wordings its held-out phrasings test.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch

from ..interfaces import CaptionedImages

__all__ = ["augment_captions", "caption_variant"]


def caption_variant(caption: str, index: int, *, word_dropout: float, word_shuffle: bool, seed: int) -> str:
    """Variant ``index`` of ``caption``: words dropped with probability ``word_dropout`` (one is always
    kept) and, with ``word_shuffle``, put in a random order; seeded by ``seed``, ``index`` and the text."""
    digest = hashlib.sha256(caption.encode()).digest()
    rng = np.random.Generator(np.random.PCG64([seed, index, int.from_bytes(digest[:8], "little")]))
    words = caption.split()
    if not words:
        return caption
    keep = rng.random(len(words)) >= word_dropout
    if not keep.any():
        keep[rng.integers(len(words))] = True
    kept = [w for w, k in zip(words, keep) if k]
    if word_shuffle:
        kept = [kept[i] for i in rng.permutation(len(kept))]
    return " ".join(kept)


def augment_captions(
    data: CaptionedImages, *, variants: int, word_dropout: float, word_shuffle: bool, seed: int
) -> CaptionedImages:
    """``data`` with ``variants`` augmented wordings of each of its captions added to every image that
    has that caption; the original captions keep their ids (the variants are appended)."""
    if variants < 1:
        return data
    index = {c: i for i, c in enumerate(data.captions)}
    captions = list(data.captions)
    variant_ids = np.empty((len(data.captions), variants), np.int64)
    for i, text in enumerate(data.captions):
        for v in range(variants):
            new = caption_variant(text, v, word_dropout=word_dropout, word_shuffle=word_shuffle, seed=seed)
            if new not in index:
                index[new] = len(captions)
                captions.append(new)
            variant_ids[i, v] = index[new]
    ids, counts = data.caption_ids.numpy(), data.caption_counts.numpy()
    k = ids.shape[1]
    out = np.full((len(ids), k * (1 + variants)), -1, np.int64)
    for row in range(len(ids)):  # originals first, then each original's variants
        n = int(counts[row])
        own = ids[row, :n]
        out[row, :n] = own
        out[row, n : n * (1 + variants)] = variant_ids[own].reshape(-1)
    return dataclasses.replace(
        data,
        captions=captions,
        caption_ids=torch.from_numpy(out),
        caption_counts=data.caption_counts * (1 + variants),
        info={**data.info, "caption_augment": {"variants": variants, "word_dropout": word_dropout,
                                               "word_shuffle": word_shuffle, "seed": seed}},
    )
