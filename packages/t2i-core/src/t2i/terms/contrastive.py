"""``contrastive``: a G term pulling each generated image toward its own caption in a frozen CLIP's space.

Sentence-level DAMSM (AttnGAN, Xu et al. 2018), with a frozen pretrained CLIP as the text-image
matcher instead of a DAMSM trained for the data set: for a batch of generated images ``x_i`` and their
captions ``c_i``, with ``s_ij = cos(CLIP_image(x_i), CLIP_text(c_j)) / temperature``, the term is InfoNCE

    image -> text:  -log( sum_{j: c_j = c_i} exp(s_ij) / sum_j exp(s_ij) )

averaged over the batch (and, with ``symmetric = true``, averaged with the text -> image direction, as
DAMSM's sentence loss). Several images of one batch can share a caption (the Shapes data has few
distinct captions): all of them count as positives, so no image is pushed away from its own caption.
DAMSM's gamma3 = 10 is ``temperature = 0.1``; CLIP was trained at 0.01.

The term is 0 only if every image is much closer to its caption than to the others; it falls as G's
images become recognisable as their captions to CLIP (``clip_score`` and ``r_precision`` measure the
same thing, so a run that trains with this term should not report them with the same CLIP as evidence).

CLIP comes from :func:`t2i.clip.load_clip` (``model`` = an open-clip name or a JSON config,
``weights=PATH`` -> ``$T2I_CLIP_WEIGHTS`` -> ``pretrained`` tag through open-clip's cache; OpenAI's
weights need a ``-quickgelu`` model or ``quick_gelu = true``). It is frozen; gradients reach G through
the image tower. Caption embeddings are computed once per distinct caption and kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..clip import load_clip
from ..errors import UsageError
from ..interfaces import LossTerm, StepOutputs

__all__ = ["ContrastiveConfig", "ContrastiveTerm", "info_nce"]


@dataclass
class ContrastiveConfig:
    model: str = field(default="ViT-B-32", metadata={"help": "open-clip model name or JSON config path"})
    pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag, used when no weights file is given"})
    weights: str = field(default="", metadata={"help": "CLIP weights file (else $T2I_CLIP_WEIGHTS, else the pretrained tag)"})
    quick_gelu: bool = field(default=False, metadata={"help": "QuickGELU activations (needed for OpenAI's weights unless the model name ends in -quickgelu)"})
    temperature: float = field(default=0.1, metadata={"help": "softmax temperature of the cosine similarities (DAMSM gamma3 = 1/temperature)"})
    symmetric: bool = field(default=True, metadata={"help": "average image->text and text->image InfoNCE (DAMSM); else image->text only"})

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def info_nce(image: Tensor, text: Tensor, captions: list[str], temperature: float, symmetric: bool = True) -> Tensor:
    """InfoNCE of L2-normalised ``image`` and ``text`` rows ``(B, E)``, pairs sharing a caption counted as positives."""
    logits = image.float() @ text.float().t() / temperature  # (B, B): image i against caption j
    index = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[c] for c in captions], device=logits.device)
    positive = ids[:, None] == ids[None, :]

    def direction(s: Tensor) -> Tensor:
        return (torch.logsumexp(s, dim=1) - torch.logsumexp(s.masked_fill(~positive, float("-inf")), dim=1)).mean()

    loss = direction(logits)
    return 0.5 * (loss + direction(logits.t())) if symmetric else loss


class ContrastiveTerm(LossTerm):
    """G term: CLIP InfoNCE between generated images and their captions (sentence-level DAMSM with a frozen CLIP)."""

    needs = frozenset({"captions"})

    def __init__(self, cfg: ContrastiveConfig | None = None):
        super().__init__()
        self.cfg = cfg or ContrastiveConfig()
        self.bundle = load_clip(self.cfg.model, weights=self.cfg.weights or None, pretrained=self.cfg.pretrained or None,
                                quick_gelu=self.cfg.quick_gelu)
        self.clip = self.bundle.model  # a submodule, so that .to(device) moves it
        self._text: dict[str, Tensor] = {}

    def train(self, mode: bool = True) -> "ContrastiveTerm":
        super().train(mode)
        self.clip.eval()  # frozen: always in eval mode
        return self

    def text_embeddings(self, captions: list[str]) -> Tensor:
        """CLIP's normalised embeddings of ``captions``, each distinct caption encoded once per term."""
        new = [c for c in dict.fromkeys(captions) if c not in self._text]
        if new:
            with torch.no_grad():
                for caption, row in zip(new, self.bundle.encode_text(new)):
                    self._text[caption] = row
        return torch.stack([self._text[c] for c in captions])

    def similarity(self, images: Tensor, captions: list[str]) -> Tensor:
        """Cosine similarity of each image with its own caption, ``(B,)`` (for tests and diagnostics)."""
        return (self._image_embeddings(images) * self.text_embeddings(captions).to(images.device)).sum(-1)

    def _image_embeddings(self, images: Tensor) -> Tensor:
        if next(self.clip.parameters()).device != images.device:  # the engine does not move terms
            self.clip.to(images.device)
            self._text.clear()
        return self.bundle.encode_image(images.float())

    def g_loss(self, out: StepOutputs) -> Tensor:
        if out.captions is None or len(out.captions) != out.fake_images.shape[0]:
            raise UsageError("loss term 'contrastive' needs the batch's caption strings (needs = {'captions'})")
        image = self._image_embeddings(out.fake_images)
        text = self.text_embeddings(list(out.captions)).to(image.device)
        return info_nce(image, text, list(out.captions), self.cfg.temperature, self.cfg.symmetric)
