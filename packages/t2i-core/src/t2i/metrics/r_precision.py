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
- ``clip``: a frozen open-clip model (``clip_model``, ``clip_pretrained``, ``clip_weights``);
- ``damsm``: AttnGAN/DM-GAN's released DAMSM encoders (:mod:`t2i.metrics.damsm`), the pair the papers' R-precision
  figures come from: ``damsm_text_encoder=text_encoder200.pth``, ``damsm_image_encoder=image_encoder200.pth``,
  ``damsm_captions=captions.pickle`` (the vocabulary), ``damsm_words`` (words kept per caption: 18 as AttnGAN
  trained them; DM-GAN's evaluation uses 25 for CUB, 20 for COCO).

Protocol: the first ``n`` images of a seeded permutation of the reference split, one seeded caption each; or
exactly ``n_generated`` images cycling the split (DM-GAN: 30,000 on CUB's 2,933 test images, a new caption of
each image on each pass). ``mismatch=class`` draws the negatives from images of other classes only (the folder
of the image key, CUB's species), as DM-GAN's ``get_mis_caption`` does; the default ``scene`` only avoids
paraphrases of the true caption. DM-GAN's own code counts a tie for first as a hit (``argmax == 0``) and
averages 2,999 of each fold's 3,000 queries; t2i counts ties as ``1 / k`` and uses every query (both differ
from DM-GAN's figure by far less than its fold std).

Reproducing DM-GAN's CUB figure::

    -M r_precision.encoder=damsm -M r_precision.damsm_text_encoder=DAMSMencoders/bird/text_encoder200.pth
    -M r_precision.damsm_image_encoder=DAMSMencoders/bird/image_encoder200.pth
    -M r_precision.damsm_captions=data/birds/captions.pickle -M r_precision.damsm_words=25
    -M r_precision.n_generated=30000 -M r_precision.mismatch=class
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric
from . import CYCLE_RULE, Generate
from .evaluator import default_evaluator_path, load_evaluator, shapes_evaluator
from .retrieval import (EncoderPair, fold_statistics, hit_rates, image_classes, mismatched_captions, r_precision_of,
                        scene_classes)

__all__ = ["RPrecisionConfig", "RPrecision", "EncoderPair", "ClipPair", "scene_classes", "image_classes",
           "mismatched_captions", "hit_rates", "fold_statistics", "r_precision_of"]


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
    n_generated: int = field(default=0, metadata={"help": "exactly this many queries, cycling the split's captions "
                                                         "(DM-GAN: 30000); 0: n, capped at the split"})
    mismatch: Literal["scene", "class"] = field(default="scene", metadata={
        "help": "negatives avoid the true caption's scene, or (DM-GAN) its image class: the key's folder, CUB's species"})
    encoder: Literal["evaluator", "clip", "damsm"] = field(default="evaluator", metadata={"help": "encoder pair: evaluator | clip | damsm"})
    evaluator: str = field(default="", metadata={"help": "evaluator file ('' = the cached one of the reference data set)"})
    clip_model: str = field(default="ViT-B-32-quickgelu", metadata={"help": "open-clip model (encoder=clip)"})
    clip_pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag (encoder=clip)"})
    clip_weights: str = field(default="", metadata={"help": "CLIP weights file (encoder=clip; '' = $T2I_CLIP_WEIGHTS or the tag)"})
    damsm_text_encoder: str = field(default="", metadata={"help": "AttnGAN/DM-GAN text_encoder*.pth (encoder=damsm)"})
    damsm_image_encoder: str = field(default="", metadata={"help": "AttnGAN/DM-GAN image_encoder*.pth (encoder=damsm)"})
    damsm_captions: str = field(default="", metadata={"help": "AttnGAN's captions.pickle: the encoders' vocabulary (encoder=damsm)"})
    damsm_words: int = field(default=18, metadata={"help": "words kept per caption (encoder=damsm; AttnGAN 18, DM-GAN eval 25 CUB / 20 COCO)"})
    seed: int = field(default=0, metadata={"help": "seed of the queries, their captions and the negatives"})
    device: str = field(default="auto", metadata={"help": "where the encoders run: auto | cpu | cuda"})
    cache_dir: str = field(default="", metadata={"help": "evaluator cache ('' = $T2I_CACHE_DIR, else ~/.cache/t2i)"})

    def __post_init__(self) -> None:
        for name in ("n", "negatives", "folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folds > (self.n_generated or self.n):
            raise ValueError(f"folds ({self.folds}) must not exceed the number of queries ({self.n_generated or self.n})")
        if self.n_generated < 0 or self.damsm_words < 1:
            raise ValueError(f"n_generated must be >= 0 and damsm_words >= 1, got {self.n_generated} and {self.damsm_words}")
        damsm = {"damsm_text_encoder": self.damsm_text_encoder, "damsm_image_encoder": self.damsm_image_encoder,
                 "damsm_captions": self.damsm_captions}  # fmt: skip
        if self.encoder == "damsm" and not all(damsm.values()):
            missing = ", ".join(f"r_precision.{k}=FILE" for k, v in damsm.items() if not v)
            raise ValueError(f"encoder=damsm needs the authors' files: pass {missing}")
        if self.encoder != "damsm" and any(damsm.values()):
            raise ValueError(f"damsm_* files are used by encoder=damsm only, but encoder={self.encoder}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


class RPrecision(Metric):
    """Top-1 retrieval of each generated image's caption among 1 + 99 candidates, over folds; real ceiling too."""

    splits_across_ranks = True  # per-image codes (t2i.metrics.generated_rows, in retrieval.r_precision_of)

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
        if cfg.encoder == "damsm":
            if "damsm" not in self._pairs:
                from ..device import pick_device
                from .damsm import load_damsm_pair

                self._pairs["damsm"] = load_damsm_pair(cfg.damsm_text_encoder, cfg.damsm_image_encoder, cfg.damsm_captions,
                                                       words=cfg.damsm_words, seed=cfg.seed, device=pick_device(cfg.device))
            return self._pairs["damsm"]
        key = (reference.info.get("name"), reference.resolution)
        if key not in self._pairs:
            self._pairs[key] = _evaluator_for(reference, cfg)
        return self._pairs[key]

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        cfg = self.cfg
        pair = self.pair(reference)
        groups = image_classes(reference) if cfg.mismatch == "class" else None
        result = r_precision_of(pair, reference, n=cfg.n, negatives=cfg.negatives, folds=cfg.folds, seed=cfg.seed,
                                generate=generate, n_generated=cfg.n_generated, image_groups=groups)
        return {
            "r_precision": result["mean"],
            "r_precision/std": result["std"],
            "r_precision/real": result["real"],
            "r_precision/real_std": result["real_std"],
            "protocol": {
                "metric": "r_precision: top-1 of the true caption among 1 + negatives by cosine similarity (R = 1)",
                "n": result["n"],
                "n_generated": cfg.n_generated,
                "candidates": cfg.negatives + 1,
                "negatives": cfg.negatives,
                "folds": cfg.folds,
                "chance": 1 / (cfg.negatives + 1),
                "seed": cfg.seed,
                "selection": (f"n_generated = {cfg.n_generated}: {CYCLE_RULE}" if cfg.n_generated else
                              "first n of a seeded permutation of the reference split; one seeded caption each")
                             + "; negatives: seeded, distinct, none describing the true caption's scene"
                             + (" nor any image of its class (the image key's folder)" if cfg.mismatch == "class" else ""),
                "mismatch": cfg.mismatch,
                "folds_rule": "contiguous folds of the queries in their seeded order; mean and population std over folds",
                "ties": "a tie for first with k candidates counts 1/k",
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
