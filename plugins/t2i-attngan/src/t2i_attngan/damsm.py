"""DAMSM (Xu et al. 2018): the word- and sentence-level image-text matching loss, as a term and a text encoder.

DAMSM scores how well an image matches its caption with two encoders trained together
(:mod:`t2i.metrics.damsm` rebuilds the authors' networks and reads their files):

- the image encoder maps an image to ``N`` region features (Inception-v3's 17x17 ``Mixed_6e`` map projected to
  ``nef``: ``N = 289``) and a global code (``nef``);
- the text encoder maps a caption to word features (``nef`` per word) and a sentence embedding (``nef``).

:func:`words_loss` (the authors' ``words_loss`` with ``func_attention``): for caption ``j`` and image ``i``, each
word attends over the image's regions (dot products ``e_l . v_n``, first normalised by a softmax over the caption's
words at each region, then by a softmax over the regions sharpened by ``gamma1``), which gives a region context
``c_l`` per word; the relevance of the pair is ``R(i, j) = log sum_l exp(gamma2 cos(e_l, c_l))`` over the
caption's real words. :func:`sent_loss`: ``cos(image code_i, sentence_j)``. Either score, times ``gamma3``, is a
``B x B`` matrix whose diagonal holds the matching pairs; the loss is the cross-entropy of picking the right
caption for each image plus the right image for each caption (the authors' ``loss0 + loss1``). Pairs that must
not count as negatives get ``-inf``: the authors mask images of the same CUB class; here, by default, two images
of a batch whose captions are identical (``mask="captions"``), which is what identifies them on Shapes and any
data set without classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.errors import UsageError
from t2i.interfaces import LossTerm, StepOutputs, TextEncoder, WordFeatures, final_image
from t2i.options import require_choices

__all__ = [
    "words_loss", "sent_loss", "same_caption_mask", "image_input", "DamsmTermConfig", "DamsmTerm",
    "DamsmTextConfig", "DamsmText", "attngan_vocabulary",
]  # fmt: skip

EPS = 1e-8  # the authors' cosine_similarity clamp


def _matching_ce(scores: Tensor, exclude: Tensor | None) -> Tensor:
    """Cross-entropy of the diagonal along both axes of ``scores`` (images x captions), ``exclude`` set to -inf."""
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    target = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, target) + F.cross_entropy(scores.T, target)


def same_caption_mask(captions: Sequence[Any], device: torch.device | str = "cpu") -> Tensor:
    """``(B, B)`` bool, True where items ``i != j`` have the same caption (string or id): never each other's negative."""
    keys = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([keys[c] for c in captions], device=device)
    same = ids[:, None] == ids[None, :]
    return same & ~torch.eye(len(captions), dtype=torch.bool, device=device)


def words_loss(regions: Tensor, words: WordFeatures, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0,
               exclude: Tensor | None = None) -> Tensor:
    """DAMSM's word-level loss. ``regions`` ``(B, nef, H, W)`` of the images, ``words`` ``(B, L, nef)`` of their
    captions (row ``i`` describes image ``i``); ``exclude`` ``(B, B)`` pairs that are not negatives."""
    v = regions.float().flatten(2)  # (Bi, D, N)
    e, mask = words.features.float(), words.mask.to(torch.bool)  # (Bc, L, D), (Bc, L)
    scores = torch.einsum("cld,idn->icln", e, v)  # (Bi, Bc, L, N)
    attention = scores.masked_fill(~mask[None, :, :, None], float("-inf")).softmax(dim=2)  # over words (Eq. 8)
    attention = (gamma1 * attention).softmax(dim=3)  # over regions (Eq. 9)
    context = torch.einsum("icln,idn->icld", attention, v)  # (Bi, Bc, L, D)
    cosine = (e[None] * context).sum(-1) / (e.norm(dim=-1)[None] * context.norm(dim=-1)).clamp(min=EPS)
    relevance = ((gamma2 * cosine).exp() * mask[None]).sum(dim=2).log()  # (Bi, Bc), Eq. 10
    return _matching_ce(gamma3 * relevance, exclude)


def sent_loss(codes: Tensor, sentences: Tensor, gamma3: float = 10.0, exclude: Tensor | None = None) -> Tensor:
    """DAMSM's sentence-level loss: ``gamma3 * cos(code_i, sentence_j)``, cross-entropy both ways."""
    codes, sentences = codes.float(), sentences.float()
    cosine = codes @ sentences.T / (codes.norm(dim=1)[:, None] * sentences.norm(dim=1)[None, :]).clamp(min=EPS)
    return _matching_ce(gamma3 * cosine, exclude)


def image_input(encoder: nn.Module, images: Tensor) -> Tensor:
    """Images in ``[-1, 1]`` -> the encoder's input: 299x299 (bilinear, ``align_corners=True``, as
    :class:`t2i.metrics.damsm.DamsmPair`) for Inception; a small encoder resizes for itself."""
    from t2i.metrics.damsm import DamsmImageEncoder

    images = images.float()
    if isinstance(encoder, DamsmImageEncoder) and images.shape[-1] != 299:
        images = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=True)
    return images


# --------------------------------------------------------------------------------------------------
# The term


@dataclass
class DamsmTermConfig:
    image_encoder: str = field(default="", metadata={
        "help": "DAMSM image encoder file: the authors' image_encoder*.pth, or one t2i damsm pretrain wrote"})
    gamma1: float = field(default=4.0, metadata={"help": "sharpness of the attention over regions (TRAIN.SMOOTH.GAMMA1: 4 birds, 4 COCO)"})
    gamma2: float = field(default=5.0, metadata={"help": "weight of the best-matching words in R(image, caption) (GAMMA2: 5)"})
    gamma3: float = field(default=10.0, metadata={"help": "inverse temperature of the matching softmax (GAMMA3: 10)"})
    mask: Literal["captions", "none"] = field(default="captions", metadata={
        "help": "captions: two images of a batch with identical captions are not each other's negatives (the "
                "authors mask same-class images); none: every other pair is a negative"})

    def __post_init__(self) -> None:
        require_choices(self, "mask")
        for name in ("gamma1", "gamma2", "gamma3"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class DamsmTerm(LossTerm):
    """G term: DAMSM's ``words_loss + sent_loss`` of the generator's final image against the batch's captions.

    The image encoder (``image_encoder=FILE``) is frozen and in eval mode; the word features and sentence
    embeddings are the run's (``StepOutputs.words`` / ``.text``), so the run's text encoder should be the
    ``damsm`` one built from the matching text-encoder file (their sizes must equal the image encoder's ``nef``;
    another encoder of that size is accepted but was not trained with this image encoder). With a multi-scale
    generator the term applies to the last scale only (as the authors' ``generator_loss``); at the other
    scales, and for D, it returns ``None``. Its weight is the authors' ``LAMBDA`` (5 birds, 50 COCO).
    """

    def __init__(self, cfg: DamsmTermConfig | None = None):
        super().__init__()
        from t2i.metrics.damsm import load_image_encoder

        self.cfg = cfg or DamsmTermConfig()
        if not self.cfg.image_encoder:
            raise UsageError("loss term 'damsm' needs its image encoder: image_encoder=PATH (the authors' "
                             "image_encoder200.pth, or t2i damsm pretrain --out DIR writes DIR/image_encoder.pth)")
        self.encoder = load_image_encoder(self.cfg.image_encoder).requires_grad_(False)
        self.nef = int(self.encoder.emb_cnn_code.out_features)
        self.needs = frozenset({"words", "captions"} if self.cfg.mask == "captions" else {"words"})

    def train(self, mode: bool = True) -> "DamsmTerm":
        super().train(mode)
        self.encoder.eval()  # frozen, BatchNorm statistics included
        return self

    def score(self, images: Tensor, text: Tensor, words: WordFeatures, captions: Sequence[Any] | None) -> Tensor:
        """``words_loss + sent_loss`` of ``images`` (``[-1, 1]``) against their captions' features."""
        if words.dim != self.nef or text.shape[1] != self.nef:
            raise UsageError(f"loss term 'damsm': the image encoder makes {self.nef}-d features but the text encoder "
                             f"gives {words.dim}-d words and {text.shape[1]}-d sentences; use --text-encoder damsm "
                             "with the text encoder file pretrained with this image encoder")
        device = images.device
        if next(self.encoder.parameters()).device != device:  # the engine does not move terms; follow the images
            self.encoder.to(device)
        regions, code = self.encoder(image_input(self.encoder, images))
        exclude = None
        if self.cfg.mask == "captions" and captions is not None:
            exclude = same_caption_mask(captions, device)
        c = self.cfg
        return (words_loss(regions, words.to(device), c.gamma1, c.gamma2, c.gamma3, exclude)
                + sent_loss(code, text, c.gamma3, exclude))

    def g_loss(self, out: StepOutputs) -> Tensor | None:
        images = final_image(out.fake_images)
        full = getattr(out.generator, "resolution", None)
        if full is not None and images.shape[-1] != full:
            return None  # an earlier stage of a multi-scale generator
        if out.words is None:
            raise UsageError("loss term 'damsm' needs the batch's word features (needs = {'words'}); the text "
                             "encoder must have them (--text-encoder damsm)")
        return self.score(images, out.text, out.words, out.captions)


# --------------------------------------------------------------------------------------------------
# The text encoder


def attngan_vocabulary(captions: Sequence[str]) -> dict[str, int]:
    """AttnGAN's vocabulary of ``captions``: ``<end>`` is 0, then every word (their tokeniser), sorted."""
    from t2i.metrics.damsm import tokenize

    words = sorted({w for c in captions for w in tokenize(c)})
    return {"<end>": 0, **{w: i + 1 for i, w in enumerate(words)}}


@dataclass
class DamsmTextConfig:
    text_encoder: str = field(default="", metadata={
        "help": "DAMSM text encoder file (the authors' text_encoder*.pth, or t2i damsm pretrain's); empty: a "
                "random one over the training captions' words (not pretrained)"})
    captions: str = field(default="", metadata={
        "help": "its vocabulary: the authors' captions.pickle or the one t2i damsm pretrain wrote (with text_encoder)"})
    words: int = field(default=18, metadata={
        "help": "words kept per caption; longer ones keep a seeded random ordered subset (TEXT.WORDS_NUM: 18)"})
    dim: int = field(default=256, metadata={"help": "sentence and word size without a file (TEXT.EMBEDDING_DIM: 256)"})
    trainable: bool = field(default=False, metadata={
        "help": "train it with D (only without a file; DAMSM's is pretrained and frozen)"})

    def __post_init__(self) -> None:
        if bool(self.text_encoder) != bool(self.captions):
            raise ValueError("text_encoder and captions go together: the encoder file and its vocabulary")
        if self.words < 1 or self.dim < 2 or self.dim % 2:
            raise ValueError(f"words must be >= 1 and dim even, got words={self.words}, dim={self.dim}")
        if self.trainable and self.text_encoder:
            raise ValueError("trainable: a pretrained DAMSM text encoder stays frozen (drop text_encoder to train one)")


class DamsmText(TextEncoder):
    """DAMSM's text encoder (the authors' ``RNN_ENCODER``: embedding 300, bidirectional LSTM of ``dim / 2`` per
    direction): word features = the LSTM's outputs, sentence = its last hidden states ``[h_fwd; h_bwd]``.

    :meth:`tokenize` rows are ``[length, id_1, ..., id_words]`` (AttnGAN's tokeniser; unknown words dropped; a
    caption with no known word is the lone ``<end>``)."""

    def __init__(self, cfg: DamsmTextConfig | None = None):
        super().__init__()
        from t2i.metrics.damsm import DamsmTextEncoder, load_text_encoder, load_vocabulary

        self.cfg = cfg or DamsmTextConfig()
        self.trainable = self.cfg.trainable
        if self.cfg.text_encoder:
            self.rnn = load_text_encoder(self.cfg.text_encoder)
            self.vocabulary = load_vocabulary(self.cfg.captions)
            if max(self.vocabulary.values()) >= self.rnn.encoder.num_embeddings:
                raise UsageError(f"{self.cfg.captions} has word ids up to {max(self.vocabulary.values())} but "
                                 f"{self.cfg.text_encoder} embeds {self.rnn.encoder.num_embeddings} words: not its vocabulary")
        else:
            self.vocabulary = {"<end>": 0}
            self.rnn = DamsmTextEncoder(1, 300, self.cfg.dim // 2)
        self.dim = self.word_dim = self.rnn.width
        self.rnn.requires_grad_(self.trainable)
        # a pretrained file is frozen: its sentence embeddings and word features are encoded once per data set
        # and kept on disk (t2i.text.cache; COCO's 414,113 train captions at 12 words x 256: 2.5 GB of float16 words)
        self.cache_embeddings = bool(self.cfg.text_encoder)

    def _rebuild(self, vocabulary: Mapping[str, int]) -> None:
        from t2i.metrics.damsm import DamsmTextEncoder

        self.vocabulary = dict(vocabulary)
        if not self.cfg.text_encoder:
            self.rnn = DamsmTextEncoder(max(self.vocabulary.values()) + 1, 300, self.cfg.dim // 2)
            nn.init.uniform_(self.rnn.encoder.weight, -0.1, 0.1)  # the authors' init_weights
            self.rnn.requires_grad_(self.trainable)

    def fit(self, captions: Sequence[str]) -> None:
        if not self.cfg.text_encoder:
            self._rebuild(attngan_vocabulary(captions))

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        from t2i.metrics.damsm import caption_ids

        rows = torch.zeros(len(captions), 1 + self.cfg.words, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids, _ = caption_ids(caption, self.vocabulary, self.cfg.words)
            rows[row, 0] = len(ids)
            rows[row, 1 : 1 + len(ids)] = torch.tensor(ids)
        return rows

    def forward_words(self, tokens: Tensor) -> tuple[Tensor, WordFeatures]:
        lengths = tokens[:, 0].clamp(min=1)
        longest = int(lengths.max())
        words, sentence = self.rnn(tokens[:, 1 : 1 + longest], lengths)
        mask = torch.arange(words.shape[2], device=tokens.device)[None, :] < lengths[:, None].to(tokens.device)
        return sentence, WordFeatures(words.transpose(1, 2), mask)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.forward_words(tokens)[0]

    def extra_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        vocabulary = dict(state["vocabulary"])
        if vocabulary != self.vocabulary:
            self._rebuild(vocabulary)
