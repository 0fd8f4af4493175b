"""``clip_score``: how well generated images match their captions, as CLIP sees it (Hessel et al. 2021, in the
``100 * max(cos, 0)`` form of torchmetrics' ``CLIPScore``).

For each (caption, generated image) pair: ``100 * max(cos(E_img(image), E_txt(caption)), 0)`` with a frozen
open-clip model (:func:`t2i.clip.load_clip`); reported are the mean over pairs (``clip_score``), their
standard deviation (``clip_score/std``), and the same mean for the real reference images with the same
captions (``clip_score/real``: what real data scores; generated images rarely beat it).

Protocol. From the reference split, take the first ``n`` images of a seeded permutation (all, if fewer) and
one seeded caption of each; generate one image per caption. Images reach CLIP at its input size (bicubic,
antialiased) with its normalisation (:meth:`t2i.clip.ClipBundle.preprocess`). The default model is
OpenAI's ViT-B/32 (``ViT-B-32-quickgelu`` / ``openai``), the one Hessel et al. used. Weights: ``weights=PATH``
-> ``$T2I_CLIP_WEIGHTS`` -> the ``pretrained`` tag through open-clip's cache (downloading when online). The
protocol records the model, the tag or the file with its sha256.

CLIP scores depend heavily on the model and on the image size; compare them only under the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..clip import ClipBundle, load_clip
from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric
from . import Generate, generated_rows, seeded_caption, seeded_order

__all__ = ["ClipScoreConfig", "ClipScore", "clip_scores", "encode_in_batches", "load_clip_for_metric"]


@dataclass
class ClipScoreConfig:
    """Options of the ``clip_score`` metric."""

    n: int = field(default=5000, metadata={"help": "(caption, generated image) pairs"})
    model: str = field(default="ViT-B-32-quickgelu", metadata={"help": "open-clip model name, or a model-config JSON file"})
    pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag (used when no weights file is given)"})
    weights: str = field(default="", metadata={"help": "CLIP weights file ('' = $T2I_CLIP_WEIGHTS, else the pretrained tag)"})
    seed: int = field(default=0, metadata={"help": "seed of the choice of reference images and captions"})
    batch_size: int = field(default=100, metadata={"help": "images and captions per CLIP forward pass"})
    device: str = field(default="auto", metadata={"help": "where CLIP runs: auto | cpu | cuda"})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def clip_scores(image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
    """Per pair ``100 * max(cos, 0)`` of row ``i`` of both (L2-normalised here, float64): ``(N,)``."""
    a = torch.nn.functional.normalize(image_embeddings.double(), dim=-1)
    b = torch.nn.functional.normalize(text_embeddings.double(), dim=-1)
    return 100 * (a * b).sum(-1).clamp(min=0)


@torch.no_grad()
def encode_in_batches(clip: ClipBundle, images: Tensor | None, captions: list[str] | None, batch_size: int) -> Tensor:
    """CLIP embeddings of uint8 ``images`` or of ``captions`` (one of them), in batches, float32 on the CPU."""
    items: Any = images if images is not None else captions
    encode = clip.encode_image if images is not None else clip.encode_text
    parts = [encode(items[i : i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, clip.embed_dim)


def load_clip_for_metric(model: str, pretrained: str, weights: str, device: str) -> ClipBundle:
    """:func:`t2i.clip.load_clip` with a metric's options ('' means unset)."""
    from ..device import pick_device

    return load_clip(model, weights=weights or None, pretrained=pretrained or None, device=pick_device(device))


class ClipScore(Metric):
    """CLIP similarity of each generated image to its caption: 100 * max(cos, 0), averaged."""

    chunk = 250  # captions per generate() call
    splits_across_ranks = True  # per-image CLIP embeddings (t2i.metrics.generated_rows)

    def __init__(self, cfg: ClipScoreConfig | None = None):
        self.cfg = cfg or ClipScoreConfig()
        self._clip: ClipBundle | None = None

    @property
    def clip(self) -> ClipBundle:
        """The frozen CLIP (loaded on first use)."""
        if self._clip is None:
            self._clip = load_clip_for_metric(self.cfg.model, self.cfg.pretrained, self.cfg.weights, self.cfg.device)
        return self._clip

    def evaluate(self, generate: Generate, reference: CaptionedImages) -> dict[str, Any]:
        cfg = self.cfg
        if len(reference) == 0:
            raise UsageError("clip_score: the reference split is empty")
        rows = seeded_order(len(reference), cfg.seed)[: cfg.n]
        captions = seeded_caption(reference, rows, cfg.seed)
        fake = generated_rows(generate, captions, reference.resolution,
                              lambda images: encode_in_batches(self.clip, images, None, cfg.batch_size),
                              chunk=self.chunk, align=cfg.batch_size)
        text = encode_in_batches(self.clip, None, captions, cfg.batch_size)
        scores = clip_scores(fake, text)
        real = clip_scores(encode_in_batches(self.clip, reference.images[torch.from_numpy(rows)], None, cfg.batch_size), text)
        return {
            "clip_score": scores.mean().item(),
            "clip_score/std": scores.std(unbiased=False).item() if len(scores) > 1 else 0.0,
            "clip_score/real": real.mean().item(),
            "protocol": {
                "metric": "clip_score: mean over pairs of 100 * max(cos(image, caption), 0)",
                "n": len(rows),
                "seed": cfg.seed,
                "selection": "first n of a seeded permutation of the reference split; one seeded caption each",
                "reference": {"size": len(reference), **{k: reference.info[k] for k in ("name", "split") if k in reference.info}},
                "resolution": reference.resolution,
                "pretrained": "" if self.clip.weights_sha256 else cfg.pretrained,
                "clip_image_size": self.clip.image_size,
                "resize": "bicubic, antialiased, to CLIP's input size; CLIP's mean/std",
                **self.clip.protocol(),
            },
        }
