"""``r_precision``: can an image/text encoder pair tell each generated image's caption from 99 others?
(AttnGAN's R-precision, Xu et al. 2018, with R = 1.)

For each generated image: its caption and ``negatives`` (99) mismatched captions are ranked by the cosine
similarity of their embeddings to the image's; a hit when the true caption ranks first (a tie for first
counts as ``1 / (number tied)``, the expected hit rate of a random tie-break). The queries are split into
``folds`` folds; reported are the mean hit rate over folds (``r_precision``), its standard deviation
across folds (``r_precision/std``), and both again for the real reference images with the same captions and
the same negatives (``r_precision/real``, ``r_precision/real_std``): the ceiling, what this encoder pair
achieves on real data. Chance is ``1 / (negatives + 1)``.

Mismatched captions. Drawn (seeded, distinct) from the reference split's captions, leaving out every caption
that describes the same scene as the true one: the captions of the image itself, of every image that shares
one of its captions, and, when the data set carries structured attributes (Shapes does), of every image
with the same attributes. Otherwise a paraphrase of the true caption could be drawn as a "mismatch".

Encoder pairs (``encoder``):

- ``evaluator`` (default): t2i's DAMSM-style pair trained on the data set
  (:mod:`t2i.metrics.evaluator`; ``t2i evaluator train --data NAME``), read from ``evaluator=FILE`` or from
  the default cache file of the reference data set and resolution; for the built-in Shapes data it is
  trained on first use;
- ``clip``: a frozen open-clip model (``clip_model``, ``clip_pretrained``, ``clip_weights``).

Protocol: the first ``n`` images of a seeded permutation of the reference split, one seeded caption each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric
from . import Generate, generate_images, seeded_caption, seeded_order

__all__ = ["RPrecisionConfig", "RPrecision", "EncoderPair", "ClipPair", "scene_classes", "mismatched_captions",
           "hit_rates", "fold_statistics", "r_precision_of"]


class EncoderPair(Protocol):
    """What R-precision needs: uint8 images and captions -> L2-normalised embeddings in one space (CPU)."""

    def encode_images(self, images: Tensor) -> Tensor: ...

    def encode_text(self, captions: Sequence[str]) -> Tensor: ...

    def protocol(self) -> dict[str, Any]: ...


class ClipPair:
    """A :class:`t2i.clip.ClipBundle` as an :class:`EncoderPair`, in batches."""

    def __init__(self, clip: Any, batch_size: int = 100):
        self.clip, self.batch_size = clip, batch_size

    def encode_images(self, images: Tensor) -> Tensor:
        from .clip_score import encode_in_batches

        return encode_in_batches(self.clip, images, None, self.batch_size)

    def encode_text(self, captions: Sequence[str]) -> Tensor:
        from .clip_score import encode_in_batches

        return encode_in_batches(self.clip, None, list(captions), self.batch_size)

    def protocol(self) -> dict[str, Any]:
        return {"encoder": "clip", **self.clip.protocol()}


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


# -- the metric --------------------------------------------------------------------------------------
@dataclass
class RPrecisionConfig:
    """Options of the ``r_precision`` metric."""

    n: int = field(default=5000, metadata={"help": "generated images (queries), one per reference image"})
    negatives: int = field(default=99, metadata={"help": "mismatched captions ranked against the true one"})
    folds: int = field(default=10, metadata={"help": "folds for the mean and std"})
    encoder: Literal["evaluator", "clip"] = field(default="evaluator", metadata={"help": "encoder pair: evaluator | clip"})
    evaluator: str = field(default="", metadata={"help": "evaluator file ('' = the cached one of the reference data set)"})
    clip_model: str = field(default="ViT-B-32-quickgelu", metadata={"help": "open-clip model (encoder=clip)"})
    clip_pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag (encoder=clip)"})
    clip_weights: str = field(default="", metadata={"help": "CLIP weights file (encoder=clip; '' = $T2I_CLIP_WEIGHTS or the tag)"})
    seed: int = field(default=0, metadata={"help": "seed of the queries, their captions and the negatives"})
    device: str = field(default="auto", metadata={"help": "where the encoders run: auto | cpu | cuda"})
    cache_dir: str = field(default="", metadata={"help": "evaluator cache ('' = $T2I_CACHE_DIR, else ~/.cache/t2i)"})

    def __post_init__(self) -> None:
        for name in ("n", "negatives", "folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folds > self.n:
            raise ValueError(f"folds ({self.folds}) must not exceed n ({self.n})")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


class RPrecision(Metric):
    """Top-1 retrieval of each generated image's caption among 1 + 99 candidates, over folds; real ceiling too."""

    def __init__(self, cfg: RPrecisionConfig | None = None):
        self.cfg = cfg or RPrecisionConfig()
        self._pairs: dict[Any, EncoderPair] = {}

    def pair(self, reference: CaptionedImages) -> EncoderPair:
        """The encoder pair for this reference split (loaded, or for Shapes trained, on first use)."""
        cfg = self.cfg
        if cfg.encoder == "clip":
            if "clip" not in self._pairs:
                from .clip_score import load_clip_for_metric

                self._pairs["clip"] = ClipPair(load_clip_for_metric(cfg.clip_model, cfg.clip_pretrained,
                                                                    cfg.clip_weights, cfg.device))
            return self._pairs["clip"]
        key = (reference.info.get("name"), reference.resolution)
        if key not in self._pairs:
            self._pairs[key] = _evaluator_for(reference, cfg)
        return self._pairs[key]

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        cfg = self.cfg
        pair = self.pair(reference)
        result = r_precision_of(pair, reference, n=cfg.n, negatives=cfg.negatives, folds=cfg.folds, seed=cfg.seed,
                                generate=generate)
        return {
            "r_precision": result["mean"],
            "r_precision/std": result["std"],
            "r_precision/real": result["real"],
            "r_precision/real_std": result["real_std"],
            "protocol": {
                "metric": "r_precision: top-1 of the true caption among 1 + negatives by cosine similarity (R = 1)",
                "n": result["n"],
                "negatives": cfg.negatives,
                "folds": cfg.folds,
                "chance": 1 / (cfg.negatives + 1),
                "seed": cfg.seed,
                "selection": "first n of a seeded permutation of the reference split; one seeded caption each; "
                             "negatives: seeded, distinct, none describing the true caption's scene",
                "reference": {"size": len(reference), **{k: reference.info[k] for k in ("name", "split") if k in reference.info}},
                "resolution": reference.resolution,
                **pair.protocol(),
            },
        }


def _evaluator_for(reference: CaptionedImages, cfg: RPrecisionConfig) -> EncoderPair:
    from ..device import pick_device
    from .evaluator import default_evaluator_path, load_evaluator, shapes_evaluator

    name, resolution = reference.info.get("name"), reference.resolution
    if cfg.evaluator:
        model = load_evaluator(cfg.evaluator)
    elif name == "shapes":
        model = shapes_evaluator(resolution, cfg.cache_dir or None)
    else:
        what = name or "this data set"
        path = default_evaluator_path(str(name), resolution, cfg.cache_dir or None) if name else None
        if path is None or not path.is_file():
            raise UsageError(f"r_precision: no evaluator for {what} at {resolution} px; train one with "
                             f"'t2i evaluator train --data {name or 'NAME'} --resolution {resolution}', pass "
                             f"r_precision.evaluator=FILE, or use r_precision.encoder=clip")
        model = load_evaluator(path)
    data = model.key["data"]
    if (name is not None and data["name"] != name) or data["resolution"] != resolution:
        raise UsageError(f"r_precision: evaluator {model.info.get('file', '')} was trained on {data['name']} at "
                         f"{data['resolution']} px, the reference split is {name or 'unnamed'} at {resolution} px")
    model.to(pick_device(cfg.device))
    return model
