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
from typing import Any, Literal, Sequence

from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric
from . import Generate
from .evaluator import default_evaluator_path, load_evaluator, shapes_evaluator
from .retrieval import EncoderPair, fold_statistics, hit_rates, mismatched_captions, r_precision_of, scene_classes

__all__ = ["RPrecisionConfig", "RPrecision", "EncoderPair", "ClipPair", "scene_classes", "mismatched_captions",
           "hit_rates", "fold_statistics", "r_precision_of"]


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
