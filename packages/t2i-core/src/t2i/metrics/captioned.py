"""Scoring images that were generated elsewhere: ``t2i eval FOLDER --captions captions.jsonl --reference NAME``.

:mod:`t2i.metrics.compare` scores a folder with the metrics that compare image sets (``fid``, ``kid``, ``is``,
``prc``, ``fd_dinov2``). This module adds the metrics that score each image against the caption it was
generated from, so DF-GAN's or anyone's released samples can be scored with the same protocol as a t2i run:

- ``r_precision``: each image's caption ranked among ``negatives`` mismatched captions (default 99) by the
  metric's encoder pair (``r_precision.encoder``: t2i's evaluator, CLIP, ...). The mismatched captions are drawn,
  seeded, from the reference split's captions, leaving out every caption of the true caption's scene (as the
  metric does for a generator: :mod:`t2i.metrics.r_precision`; with ``mismatch=class``, every caption of the
  true caption's image class, as DM-GAN does); a caption the split does not contain excludes only itself.
  Hits are shuffled with a seeded permutation before the ``folds`` folds (a folder is often sorted by class).
  ``r_precision/real`` is the metric's own ceiling on the reference split's real images.
- ``clip_score``: ``100 * max(cos, 0)`` of each image and its caption; ``clip_score/real`` (the real images
  of the reference split with their seeded captions) when the reference is a data set.

Captions come from :func:`t2i.metrics.image_sets.folder_captions`: a ``captions.jsonl`` or a ``.txt`` beside each
image, matched by file stem. Every image of the folder is scored (the ``n`` options do not apply); images are
read and encoded batch by batch, so a folder of 30,000 images is never held in memory at once.

    from t2i.metrics.captioned import evaluate_captioned_folder
    report = evaluate_captioned_folder("samples/", "shapes:test", captions="samples/captions.jsonl",
                                       metrics=["fid", "r_precision"])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, ImageSet
from ..plugins import registry
from . import seeded_caption, seeded_order
from .build import build_metrics
from .image_sets import folder_captions, folder_images
from .reference_stats import is_stats_file

__all__ = ["evaluate_captioned_folder", "caption_metric_names", "needs_captions", "mismatched_reference_captions"]


def _scorers() -> dict[type, Any]:
    from .clip_score import ClipScore
    from .r_precision import RPrecision

    return {RPrecision: _score_r_precision, ClipScore: _score_clip}


_CAPTION_METRIC_CLASSES = ("t2i.metrics.r_precision.RPrecision", "t2i.metrics.clip_score.ClipScore")


def needs_captions(name: str) -> bool:
    """Whether the registered metric ``name`` scores images against their captions (and so can score a captioned
    folder here): ``r_precision``, ``clip_score`` and their subclasses. Checked by class name, so asking about
    ``fid`` does not import CLIP."""
    factory = registry("metrics").get(name).factory
    mro = getattr(factory, "__mro__", ()) if isinstance(factory, type) else ()
    return any(f"{c.__module__}.{c.__qualname__}" in _CAPTION_METRIC_CLASSES for c in mro)


def caption_metric_names() -> list[str]:
    """Installed metrics that :func:`evaluate_captioned_folder` scores with captions."""
    return [n for n in registry("metrics").names() if needs_captions(n)]


def evaluate_captioned_folder(
    images: str | Path,
    reference: str | Path | None,
    *,
    captions: str | Path | None = None,
    metrics: list[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
    data_options: Mapping[str, Any] | None = None,
    save_stats: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of the folder ``images``: image-set metrics through :func:`t2i.metrics.compare.evaluate_images`,
    caption metrics here (module docstring). Returns the same report, with ``"captions"`` saying where the
    captions came from. ``captions``: a ``.jsonl`` file (``None``: a ``.txt`` beside each image)."""
    from .compare import _compares_image_sets, evaluate_images

    reg = registry("metrics")
    names = list(metrics or (["fid"] if reference is not None else ["is"]))
    by_caption = [n for n in names if needs_captions(n)]
    image_set = [n for n in names if n not in by_caption]
    for name in image_set:
        if not _compares_image_sets(reg.get(name).factory):
            able = [n for n in reg.names() if _compares_image_sets(reg.get(n).factory)] + caption_metric_names()
            raise UsageError(f"metric '{name}' needs a generator, not image folders; folder evaluation supports: "
                             f"{', '.join(sorted(able))}")  # fmt: skip
    texts = folder_captions(images, captions)  # read (and checked) before any network is loaded
    opts = {n: dict(o) for n, o in (options or {}).items()}
    unused = set(opts) - set(names)
    if unused:
        raise UsageError(f"-M options for metrics that are not computed: {', '.join(sorted(unused))}")
    fake = folder_images(images)
    width, height = fake.identity["size"]
    split = _reference_split(reference, width, height, data_options) if by_caption else None
    if image_set:
        report = evaluate_images(images, reference, metrics=image_set, options={n: opts[n] for n in image_set if n in opts},
                                 device=device, data_options=data_options, save_stats=save_stats)  # fmt: skip
    else:
        report = _bare_report(fake, reference, split, device, data_options, save_stats)
    merged = {n: dict(opts.get(n, {})) for n in by_caption}
    for name in by_caption:
        cfg_type = reg.get(name).config
        if device and cfg_type is not None and "device" in {f.name for f in dataclasses.fields(cfg_type)}:
            merged[name].setdefault("device", device)
    scorers = _scorers()
    for name, metric, full in build_metrics(by_caption, {n: o for n, o in merged.items() if o}):
        score = next(f for cls, f in scorers.items() if isinstance(metric, cls))
        result = dict(score(name, metric, fake, texts, split))
        report["protocol"][name] = {"options": full, **result.pop("protocol")}
        report["values"].update({k: float(v) for k, v in result.items()})
    report["captions"] = {"file": str(captions)} if captions is not None else {"file": "one .txt beside each image"}
    return report


def _bare_report(fake: ImageSet, reference: str | Path | None, split: CaptionedImages | None, device: str | None,
                 data_options: Mapping[str, Any] | None, save_stats: str | Path | None) -> dict[str, Any]:
    """What :func:`~t2i.metrics.compare.evaluate_images` returns, for caption metrics only (``split``: the
    reference data set split, already loaded)."""
    from .. import __version__
    from .compare import resolve_reference, save_stats as write_stats
    from .image_sets import split_images

    out: dict[str, Any] = {"images": fake.describe(), "reference": None, "values": {}, "protocol": {},
                           "versions": {"t2i": __version__, "torch": torch.__version__}}  # fmt: skip
    if reference is not None and is_stats_file(reference):
        out["reference"] = {"stats": str(reference)}
    elif reference is not None:
        real = split_images(split) if split is not None else resolve_reference(reference, fake.identity["size"][0], data_options)
        out["reference"] = real.describe()
        if save_stats is not None:
            out = {"saved_stats": str(write_stats(real, save_stats, device=device)), **out}
    if save_stats is not None and "saved_stats" not in out:
        raise UsageError("--save-stats writes the statistics of the reference images: pass --reference FOLDER or a data set")
    return out


def _reference_split(reference: str | Path | None, width: int, height: int,
                     data_options: Mapping[str, Any] | None) -> CaptionedImages | None:
    """The reference data set split (with its captions) at the folder's image size; ``None`` when the reference
    is not a data set (a folder, a statistics file, or none)."""
    if reference is None or Path(reference).expanduser().is_dir() or is_stats_file(reference):
        return None
    if width != height:
        raise UsageError(f"images are {width}x{height}; a data set reference needs square images")
    from .compare import reference_split

    return reference_split(reference, data_options, width)


def _encode_folder(encode: Any, images: ImageSet, batch_size: int) -> Tensor:
    parts = [encode(batch) for batch in images.batches(batch_size)]
    return torch.cat(parts)


def _reference_info(split: CaptionedImages) -> dict[str, Any]:
    return {"size": len(split), **{k: split.info[k] for k in ("name", "split") if k in split.info}}


# -- r_precision -------------------------------------------------------------------------------------
def mismatched_reference_captions(classes: np.ndarray, true_classes: np.ndarray, negatives: int, seed: int) -> np.ndarray:
    """``(N, negatives)`` distinct ids into the reference captions per query, none of class ``true_classes[i]``
    (``-1``: a caption outside the split, which excludes nothing); reference captions of class ``-1`` (that no
    image lists as its own, such as Shapes' held-out phrasings) are never drawn; seeded with raw PCG64
    (stream ``[seed, 3]``)."""
    bits = np.random.Generator(np.random.PCG64([seed, 3])).bit_generator
    n_captions = len(classes)
    labels, counts = np.unique(classes, return_counts=True)
    size = dict(zip(labels.tolist(), counts.tolist()))
    out = np.empty((len(true_classes), negatives), dtype=np.int64)
    for i, cls in enumerate(true_classes.tolist()):
        eligible = n_captions - size.get(cls, 0) - (size.get(-1, 0) if cls != -1 else 0)
        if eligible < negatives:
            raise UsageError(f"r_precision needs {negatives} mismatched captions per image; the reference split has "
                             f"{eligible}; lower r_precision.negatives or use a larger split")  # fmt: skip
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < negatives:
            for c in (bits.random_raw(2 * negatives) % np.uint64(n_captions)).astype(np.int64).tolist():
                if classes[c] != cls and classes[c] >= 0 and c not in taken:
                    taken.add(c)
                    chosen.append(c)
                    if len(chosen) == negatives:
                        break
        out[i] = chosen
    return out


def _score_r_precision(name: str, metric: Any, fake: ImageSet, captions: list[str], split: CaptionedImages | None) -> dict[str, Any]:
    from .retrieval import fold_statistics, hit_rates, image_classes, r_precision_of, scene_classes

    cfg = metric.cfg
    if split is None:
        raise UsageError(f"metric '{name}' draws its mismatched captions from a data set split: pass --reference NAME[:SPLIT]")
    if fake.count < cfg.folds:
        raise UsageError(f"r_precision with {cfg.folds} folds needs at least {cfg.folds} images; the folder has {fake.count}")
    pair = metric.pair(split)
    mismatch = getattr(cfg, "mismatch", "scene")  # "class": DM-GAN's negatives from images of other classes only
    groups = image_classes(split) if mismatch == "class" else None
    classes = scene_classes(split, groups) if groups is not None else scene_classes(split)
    index = {c: i for i, c in enumerate(split.captions)}
    true_classes = np.array([classes[index[c]] if c in index else -1 for c in captions], dtype=np.int64)
    negatives = mismatched_reference_captions(classes, true_classes, cfg.negatives, cfg.seed)
    texts = list(dict.fromkeys([*captions, *(split.captions[int(c)] for c in np.unique(negatives))]))
    row = {t: i for i, t in enumerate(texts)}
    candidates = np.empty((len(captions), cfg.negatives + 1), dtype=np.int64)
    candidates[:, 0] = [row[c] for c in captions]
    lookup = np.array([row.get(c, -1) for c in split.captions], dtype=np.int64)
    candidates[:, 1:] = lookup[negatives]
    hits = hit_rates(_encode_folder(pair.encode_images, fake, 250), pair.encode_text(texts), candidates)
    hits = hits[torch.from_numpy(seeded_order(len(hits), cfg.seed))]
    mean, std = fold_statistics(hits, cfg.folds)
    n_real = min(cfg.n, len(split))
    real = r_precision_of(pair, split, n=n_real, negatives=cfg.negatives, folds=min(cfg.folds, n_real), seed=cfg.seed,
                          **({"image_groups": groups} if groups is not None else {}))
    return {
        "r_precision": mean, "r_precision/std": std, "r_precision/real": real["real"], "r_precision/real_std": real["real_std"],
        "protocol": {
            "metric": "r_precision: top-1 of the true caption among 1 + negatives by cosine similarity (R = 1)",
            "n": fake.count, "negatives": cfg.negatives, "folds": cfg.folds, "chance": 1 / (cfg.negatives + 1),
            "seed": cfg.seed,
            "selection": "every image of the folder with its own caption; negatives: seeded, distinct captions of the "
                         "reference split, none of the true caption's scene" + (" nor of its image class" if groups is not None
                         else "") + "; hits shuffled (seeded) into the folds",
            "mismatch": mismatch,
            "captions_in_reference": int((true_classes >= 0).sum()),
            "reference": _reference_info(split), "resolution": split.resolution, "real_n": real["n"], **pair.protocol(),
        },
    }  # fmt: skip


# -- clip_score --------------------------------------------------------------------------------------
def _score_clip(name: str, metric: Any, fake: ImageSet, captions: list[str], split: CaptionedImages | None) -> dict[str, Any]:
    from .clip_score import clip_scores, encode_in_batches

    cfg = metric.cfg
    clip = metric.clip
    text = encode_in_batches(clip, None, captions, cfg.batch_size)
    scores = clip_scores(_encode_folder(lambda b: encode_in_batches(clip, b, None, cfg.batch_size), fake, cfg.batch_size), text)
    out: dict[str, Any] = {
        "clip_score": scores.mean().item(),
        "clip_score/std": scores.std(unbiased=False).item() if len(scores) > 1 else 0.0,
    }
    protocol: dict[str, Any] = {
        "metric": "clip_score: mean over pairs of 100 * max(cos(image, caption), 0)",
        "n": fake.count,
        "selection": "every image of the folder with its own caption",
        "resize": "bicubic, antialiased, to CLIP's input size; CLIP's mean/std",
        "clip_image_size": clip.image_size,
        **clip.protocol(),
    }
    if split is not None:
        rows = seeded_order(len(split), cfg.seed)[: cfg.n]
        real_text = encode_in_batches(clip, None, seeded_caption(split, rows, cfg.seed), cfg.batch_size)
        real_images = encode_in_batches(clip, split.images[torch.from_numpy(rows)], None, cfg.batch_size)
        out["clip_score/real"] = clip_scores(real_images, real_text).mean().item()
        protocol.update(real_n=len(rows), seed=cfg.seed, reference=_reference_info(split), resolution=split.resolution)
    return {**out, "protocol": protocol}
