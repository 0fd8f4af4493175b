"""GALIP's two loss terms beyond DF-GAN's objective: ``clip_sim`` for G, ``clip_ma_gp`` for D.

``clip_sim``: the text-image similarity term for the generator, ``-cos(CLIP_image(fake), CLIP_text(caption))``.

GALIP's generator loss (tobran/GALIP, ``code/lib/modules.py``, ``train``) is ``-D(fake).mean() - sim_w *
cos(fake_emb, sent_emb).mean()`` with ``sim_w = 4``: the adversarial term plus the cosine similarity of the
generated image's CLIP embedding with its caption's CLIP embedding. Here that is ``--term clip_sim=4``:
the term's value is ``-mean cos``, so its weight is GALIP's ``sim_w``. It is the core's ``contrastive`` term
without the other captions of the batch (no InfoNCE, no temperature).

CLIP is frozen and loaded like the discriminator's (:func:`t2i_clipd.vit.load_vit`, so ``random:SEED`` works
in tests); gradients reach G through the image tower. Caption embeddings are computed once per distinct
caption. A run that trains with this term should not report ``clip_score`` with the same CLIP as evidence.

``clip_ma_gp``: GALIP's matching-aware gradient penalty, ``k * E ||grad_(grids, sentence) D(real, text)||^p``
(k = 2, p = 6; their ``MA_GP_FP32``), where ``grids`` are the frozen CLIP's token grids of the real images,
not their pixels: the gradient stops at CLIP's features, so the penalty needs no double backward through the
ViT. It works with ``--disc clipd`` only: it re-runs D's trainable trunk and head on the grids (one more ViT
forward without gradients). The sentence embeddings are detached (a trainable text encoder gets no gradient
from the penalty; GALIP's CLIP text encoder is frozen anyway).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from t2i.errors import UsageError
from t2i.interfaces import LossTerm, StepOutputs

from .vit import load_vit

__all__ = ["ClipSimConfig", "ClipSimTerm", "ClipMAGPConfig", "ClipMAGPTerm"]


@dataclass
class ClipSimConfig:
    model: str = field(default="ViT-B-32-quickgelu", metadata={
        "help": "open-clip model name or JSON config path (GALIP: OpenAI's ViT-B/32, the same CLIP as its D's)"})
    pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag, used when no weights file is given"})
    weights: str = field(default="", metadata={
        "help": "CLIP weights file (else $T2I_CLIP_WEIGHTS, else the pretrained tag); random:SEED for tests"})
    quick_gelu: bool = field(default=False, metadata={
        "help": "QuickGELU activations (needed for OpenAI's weights unless the model name ends in -quickgelu)"})


class ClipSimTerm(LossTerm):
    """G term: minus the mean CLIP cosine similarity of each generated image with its own caption (GALIP)."""

    needs = frozenset({"captions"})

    def __init__(self, cfg: ClipSimConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClipSimConfig()
        self.bundle = load_vit(self.cfg.model, weights=self.cfg.weights, pretrained=self.cfg.pretrained,
                               quick_gelu=self.cfg.quick_gelu)
        self.clip = self.bundle.model  # a submodule, so that .to(device) moves it; frozen by load_vit
        self._text: dict[str, Tensor] = {}

    def train(self, mode: bool = True) -> "ClipSimTerm":
        super().train(mode)
        self.clip.eval()  # frozen: always in eval mode
        return self

    def similarity(self, images: Tensor, captions: list[str]) -> Tensor:
        """Cosine similarity of each image with its own caption, ``(B,)``."""
        if next(self.clip.parameters()).device != images.device:  # the engine does not move terms
            self.clip.to(images.device)
            self._text.clear()
        new = [c for c in dict.fromkeys(captions) if c not in self._text]
        if new:
            with torch.no_grad():
                self._text.update(zip(new, self.bundle.encode_text(new)))
        text = torch.stack([self._text[c] for c in captions])
        return (self.bundle.encode_image(images.float()) * text).sum(-1)

    def g_loss(self, out: StepOutputs) -> Tensor:
        if out.captions is None or len(out.captions) != out.fake_images.shape[0]:
            raise UsageError("loss term 'clip_sim' needs the batch's caption strings (needs = {'captions'})")
        return -self.similarity(out.fake_images, list(out.captions)).mean()


@dataclass
class ClipMAGPConfig:
    k: float = field(default=2.0, metadata={"help": "the penalty's scale (GALIP: 2)"})
    p: float = field(default=6.0, metadata={"help": "the power of the gradient norm (GALIP: 6)"})

    def __post_init__(self) -> None:
        if self.k <= 0 or self.p <= 0:
            raise ValueError(f"k and p must be > 0, got k={self.k}, p={self.p}")


class ClipMAGPTerm(LossTerm):
    """D term: GALIP's MA-GP, the gradient taken with respect to the frozen CLIP's grids of the real images and
    the sentence (not the pixels). Needs the ``clipd`` discriminator."""

    tuned_for = frozenset({"clipd"})

    def __init__(self, cfg: ClipMAGPConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClipMAGPConfig()

    def d_loss(self, out: StepOutputs) -> Tensor:
        from .models import ClipDiscriminator

        d = out.discriminator
        if not isinstance(d, ClipDiscriminator):
            raise UsageError(f"loss term 'clip_ma_gp' needs the clipd discriminator (got {type(d).__name__}); "
                             f"use ma_gp with other discriminators")
        with torch.no_grad():
            grids = d.vit(out.real_images.detach())
        grids = [g.detach().requires_grad_(True) for g in grids]
        text = out.text.detach().requires_grad_(True)
        logits = d.condition(d.trunk(grids)[0], text)
        grads = torch.autograd.grad(logits.sum(), [*grids, text], create_graph=True)
        norm = torch.cat([g.flatten(1).float() for g in grads], dim=1).norm(dim=1)
        return self.cfg.k * norm.pow(self.cfg.p).mean()
