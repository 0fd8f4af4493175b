"""The contracts between t2i's engine and the components plugins register.

Every component kind has one small interface here. The engine only ever talks to these, so a plugin's
generator, a third-party loss and the core's built-ins are interchangeable.

Shapes and ranges, once for all:
- images are float tensors ``(B, 3, R, R)`` in ``[-1, 1]``; data sets store ``uint8`` ``(N, R, R, 3)``;
- text embeddings are float tensors ``(B, text_dim)``; word features, for the components that use them,
  are a :class:`WordFeatures` (``(B, L, word_dim)`` and a ``(B, L)`` mask);
- a multi-scale generator returns a list of images, smallest first (:func:`final_image` picks the last);
- noise is ``(B, z_dim)`` from a standard normal.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import UsageError

__all__ = [
    "TrainingHooks",
    "TextEncoder",
    "WordFeatures",
    "final_image",
    "Generator",
    "Discriminator",
    "DiscOutput",
    "LossTerm",
    "AdversarialLoss",
    "StepOutputs",
    "NEEDS",
    "check_needs",
    "loss_role",
    "GOALS",
    "Metric",
    "ImageSet",
    "ImageSetMetric",
    "Dataset",
    "CaptionedImages",
]


class TrainingHooks:
    """Called by the engine on every component (networks, text encoder, losses) before each training step.

    ``images_seen`` counts real images shown to D so far (restored on resume), so a schedule driven by it
    (progressive growing's fade-in, an augmentation probability) continues exactly after a resume.
    """

    def on_train_step(self, step: int, images_seen: int) -> None:
        """Default: nothing."""


# --------------------------------------------------------------------------------------------------
# Text encoders


@dataclass
class WordFeatures:
    """Per-token text features of a batch of captions: ``features`` ``(B, L, word_dim)`` and ``mask`` ``(B, L)``,
    a bool tensor that is ``True`` at real tokens and ``False`` at padding (every row has at least one ``True``).
    ``L`` is the longest caption of the batch (or the encoder's fixed context length)."""

    features: Tensor
    mask: Tensor

    @property
    def dim(self) -> int:
        return int(self.features.shape[-1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: Any) -> "WordFeatures":
        return WordFeatures(self.features[index], self.mask[index])

    def roll(self, shifts: int) -> "WordFeatures":
        """The batch rolled like ``Tensor.roll(shifts, 0)`` (the mismatched captions of the matching-aware term)."""
        return WordFeatures(self.features.roll(shifts, 0), self.mask.roll(shifts, 0))

    def detach(self) -> "WordFeatures":
        return WordFeatures(self.features.detach(), self.mask)

    def to(self, device: torch.device | str) -> "WordFeatures":
        return WordFeatures(self.features.to(device), self.mask.to(device))


class TextEncoder(nn.Module, TrainingHooks, abc.ABC):
    """Captions -> embeddings of size :attr:`dim`.

    Captions are turned into a tensor once (:meth:`tokenize`, for every distinct caption of a data set)
    and :meth:`forward` maps rows of that tensor to embeddings. A frozen encoder (``trainable = False``)
    is evaluated once per distinct caption and its embeddings are cached by the engine; a trainable one
    runs every step and its parameters are optimised with the discriminator's optimiser (the generator
    sees its output detached).

    Encoders with state that is not a tensor (a vocabulary) expose it through :meth:`extra_state` /
    :meth:`load_extra_state` so that checkpoints can rebuild them without the training data.
    """

    dim: int
    word_dim: int | None = None  # the size of its word features (:meth:`forward_words`); None: it has none
    trainable: bool = True
    cache_embeddings: ClassVar[bool] = False  # frozen and slow (a transformer): keep embeddings on disk

    def fit(self, captions: Sequence[str]) -> None:
        """Learn whatever the encoder learns from the training captions before training (a vocabulary).

        An encoder that also wants to know which captions describe the same image declares a second
        parameter, ``caption_ids``: the engine then passes the training split's ``(N, K)`` ids into
        ``captions`` (``-1`` padding), as ``bow``'s consistency weighting does."""

    @abc.abstractmethod
    def tokenize(self, captions: Sequence[str]) -> Tensor:
        """Captions -> a tensor whose rows :meth:`forward` accepts (token ids, or the embeddings)."""

    @abc.abstractmethod
    def forward(self, tokens: Tensor) -> Tensor:
        """Rows of :meth:`tokenize`'s output -> ``(B, dim)`` embeddings."""

    def forward_words(self, tokens: Tensor) -> tuple[Tensor, WordFeatures]:
        """Rows of :meth:`tokenize`'s output -> the ``(B, dim)`` embeddings (the same as :meth:`forward`'s) and
        the :class:`WordFeatures`, from one pass. Only encoders with a :attr:`word_dim` implement it."""
        raise UsageError(f"text encoder {type(self).__name__} has no word features (sentence embeddings only)")

    def encode(self, captions: Sequence[str]) -> Tensor:
        """Convenience: captions -> embeddings, in one call."""
        device = next(self.parameters(), torch.empty(0)).device
        return self(self.tokenize(captions).to(device))

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state that is not in ``state_dict()`` (e.g. the vocabulary)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


# --------------------------------------------------------------------------------------------------
# Generators and discriminators


class Generator(nn.Module, TrainingHooks, abc.ABC):
    """Noise ``(B, z_dim)`` + text embedding ``(B, text_dim)`` -> image ``(B, 3, R, R)`` in ``[-1, 1]``.

    Factories are called as ``factory(cfg, resolution=R, text_dim=D)``. What the generator supports is
    declared as class attributes and checked before the first step: :attr:`resolutions`, and
    :attr:`progressive` (a progressively grown generator needs a progressive discriminator). A progressive
    generator still returns images at the full resolution (its current output upsampled).

    :attr:`supports_truncation`: the generator implements a truncation trick for sampling. It then accepts
    ``forward(z, text, truncation=psi)``: ``psi`` a float in ``(0, 1]`` (smaller: closer to the typical
    image, less varied; what exactly it scales is the generator's to document), ``None`` its default.
    ``t2i sample --truncation PSI`` passes it in eval mode only, and refuses it for a generator that does
    not declare it. A ``ValueError`` from the generator about ``psi`` becomes a one-line usage error.

    :attr:`uses_words`: the generator attends to word features. It is then called as
    ``forward(z, text, words=WordFeatures)`` everywhere (training, grids, metrics, sampling), and a run whose
    text encoder has no word features is refused before the first step.

    :attr:`scales`: the image sizes it outputs, smallest first; by default only ``(resolution,)``. A generator
    with several scales (AttnGAN's 64 -> 128 -> 256 stages) returns a list of images, one per scale, the last
    at ``resolution``; the losses apply per scale, and grids, metrics and sampling use the last
    (:func:`final_image`).
    """

    resolutions: ClassVar[tuple[int, ...]] = (32, 64, 128)
    progressive: ClassVar[bool] = False
    supports_truncation: ClassVar[bool] = False
    uses_words: ClassVar[bool] = False
    z_dim: int
    resolution: int
    text_dim: int

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.resolution,)

    @abc.abstractmethod
    def forward(self, z: Tensor, text: Tensor) -> Tensor: ...


def final_image(images: Tensor | Sequence[Tensor]) -> Tensor:
    """The full-resolution image of a generator's output: the output itself, or the last of a multi-scale list."""
    return images if isinstance(images, Tensor) else images[-1]


@dataclass
class DiscOutput:
    """What a discriminator says about a batch.

    ``logits``: ``(B,)`` realness of each image *given its own caption*.
    ``mismatched_logits``: ``(B,)`` the same images scored against other captions, when asked for
    (the matching-aware term's negatives), else ``None``.
    ``features``: intermediate activations, shallow to deep, for feature matching and similar terms.
    ``uncond_logits``: ``(B,)`` realness regardless of the caption, from a discriminator with a second,
    unconditional head (AttnGAN's joint conditional/unconditional D), else ``None``.
    """

    logits: Tensor
    features: list[Tensor] = field(default_factory=list)
    mismatched_logits: Tensor | None = None
    uncond_logits: Tensor | None = None


class Discriminator(nn.Module, TrainingHooks, abc.ABC):
    """Image + text embedding -> :class:`DiscOutput`.

    Implement two halves, as DF-GAN separates ``NetD`` and ``NetC``: :meth:`image_features` (text-free
    trunk) and :meth:`condition` (the text-conditional head). :meth:`forward` scores the image against
    its caption and, if ``mismatched_text`` is given, against that too without re-running the trunk.
    Factories are called as ``factory(cfg, resolution=R, text_dim=D)``. Declared capabilities:
    :attr:`resolutions`, :attr:`progressive`, :attr:`provides_features` (intermediate features for
    feature matching and similar terms).

    :attr:`uses_words`: the conditional head reads word features too; it is then called as
    ``forward(image, text, mismatched_text, words=..., mismatched_words=...)`` and :meth:`condition` as
    ``condition(h, text, words)``.

    :attr:`scales`: the image sizes it judges, smallest first; by default ``(resolution,)``. A multi-scale
    discriminator (one per AttnGAN stage, or one network over an image pyramid) takes a list of images, one
    per scale, and returns a list of :class:`DiscOutput`, one per scale. The engine builds the list from a
    multi-scale generator's outputs, or by downsampling a single output (and the real images).
    """

    resolutions: ClassVar[tuple[int, ...]] = (32, 64, 128)
    progressive: ClassVar[bool] = False
    provides_features: ClassVar[bool] = True
    uses_words: ClassVar[bool] = False
    resolution: int
    text_dim: int

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.resolution,)

    @abc.abstractmethod
    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Image -> (the trunk's output for :meth:`condition`, list of intermediate features)."""

    @abc.abstractmethod
    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        """Trunk output + text embedding -> ``(B,)`` logits."""

    def forward(self, image: Tensor, text: Tensor, mismatched_text: Tensor | None = None, *,
                words: WordFeatures | None = None, mismatched_words: WordFeatures | None = None) -> DiscOutput:
        h, features = self.image_features(image)
        if self.uses_words:
            logits = self.condition(h, text, words)  # type: ignore[call-arg]
            mismatched = None if mismatched_text is None else self.condition(h, mismatched_text, mismatched_words)  # type: ignore[call-arg]
        else:
            logits = self.condition(h, text)
            mismatched = None if mismatched_text is None else self.condition(h, mismatched_text)
        return DiscOutput(logits=logits, features=features, mismatched_logits=mismatched)


# --------------------------------------------------------------------------------------------------
# Losses


# What a loss or term may ask the engine to compute, by name (``LossTerm.needs``). One vocabulary for the
# engine, the kit and the docs; a component that declares a word not listed here is refused when built.
NEEDS: dict[str, str] = {
    "mismatched": "D also scores the real images against the batch's captions rolled by one",
    "real_in_g_step": "D runs on the real images during the G step too (e.g. feature matching)",
    "real_grad": "the real images require grad, for gradient penalties (R1, MA-GP, WGAN-GP)",
    "text_grad": "the real batch's text embeddings require grad in D's real pass, so a term can take the gradient "
                 "of those logits with respect to the text too, with no second pass (MA-GP)",
    "features": "the discriminator must provide intermediate features (DiscOutput.features)",
    "captions": "the caption strings of the batch in StepOutputs.captions (e.g. a CLIP text-image term)",
    "words": "the batch's word features in StepOutputs.words (e.g. DAMSM's word-level matching term); the text "
             "encoder must have them",
}
"""What a loss or term may ask the engine to compute (``LossTerm.needs``): each word and what it makes the
engine do. A component that declares a word not listed here is refused when it is built."""


def check_needs(component: Any, noun: str, name: str) -> frozenset[str]:
    """``component.needs``, checked against :data:`NEEDS`; an unknown word is a one-line UsageError."""
    needs = frozenset(getattr(component, "needs", frozenset()))
    unknown = sorted(needs - NEEDS.keys())
    if unknown:
        raise UsageError(f"{noun} '{name}' declares unknown needs {', '.join(map(repr, unknown))}; "
                         f"the engine provides: {', '.join(NEEDS)}")
    return needs


@dataclass
class StepOutputs:
    """Everything a loss term may look at in one D or G step.

    ``real`` / ``fake``: discriminator outputs on real images and on generated ones (``real`` is
    ``None`` in a G step unless a term declared ``needs = {"real_in_g_step"}``). ``adversarial``: the
    run's adversarial loss, so that terms such as the matching-aware one reuse its real/fake functions.
    ``real_images`` / ``fake_images`` are the images before any augmentation (D's outputs are on the
    augmented ones). ``text``: the batch's caption embeddings; with ``needs = {"text_grad"}`` they require
    grad and ``real.logits`` depend on them. ``captions``: the caption string of each image, when a term declared
    ``needs = {"captions"}`` (else ``None``). ``words``: the batch's :class:`WordFeatures` when a term declared
    ``needs = {"words"}`` or a network uses them (else ``None``).
    """

    real: DiscOutput | None
    fake: DiscOutput
    real_images: Tensor
    fake_images: Tensor
    text: Tensor
    adversarial: "AdversarialLoss"
    discriminator: nn.Module | None = None
    generator: nn.Module | None = None
    step: int = 0
    captions: list[str] | None = None
    words: WordFeatures | None = None


class LossTerm(nn.Module, TrainingHooks):
    """A weighted contribution to the D loss, the G loss, or both. Return ``None`` where it does not apply.

    ``needs`` tells the engine what to compute for this term; the words are those of :data:`NEEDS`, and
    an unknown word is refused when the term is built. ``generator`` in
    :class:`StepOutputs` gives access to auxiliary outputs a generator keeps (e.g. conditioning
    augmentation's mean and log-variance for its KL term). Factories are called as ``factory(cfg)``.

    ``tuned_for``: the registered names of the discriminators whose scale the term's constants were tuned to
    (empty: any). A term whose value depends on the size of D's outputs or gradients (DF-GAN's MA-GP, k = 2
    and p = 6, assumes DF-GAN's D) declares them, and a run that uses it with another discriminator gets a
    one-line warning before step 1 (:func:`t2i.engine.preflight.tuning_warnings`); nothing is refused.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    tuned_for: ClassVar[frozenset[str]] = frozenset()
    stateful: ClassVar[bool] = False  # True: its state_dict() (a running mean's buffer) is saved in checkpoints

    def active(self, step: int) -> bool:
        """Whether the term applies at training step ``step`` (default: always). A lazy regulariser (StyleGAN2's
        R1 every 16 steps) returns ``False`` between its steps, and its losses return ``None`` there; the engine
        then skips what only inactive terms need (:meth:`t2i.engine.step.GANStep.needs_at`: no input gradient)."""
        return True

    def d_loss(self, out: StepOutputs) -> Tensor | None:
        return None

    def g_loss(self, out: StepOutputs) -> Tensor | None:
        return None


class AdversarialLoss(LossTerm):
    """The GAN objective, written as three functions of logits. Subclasses implement those three."""

    @abc.abstractmethod
    def d_real(self, logits: Tensor) -> Tensor:
        """D's loss for logits it should call real."""

    @abc.abstractmethod
    def d_fake(self, logits: Tensor) -> Tensor:
        """D's loss for logits it should call fake (generated images, or real ones with wrong captions)."""

    @abc.abstractmethod
    def g_fake(self, logits: Tensor) -> Tensor:
        """G's loss on D's logits for generated images."""

    def d_loss(self, out: StepOutputs) -> Tensor:
        assert out.real is not None
        return self.d_real(out.real.logits) + self.d_fake(out.fake.logits)

    def g_loss(self, out: StepOutputs) -> Tensor:
        return self.g_fake(out.fake.logits)


def loss_role(factory: Any) -> str | None:
    """``"adversarial"`` or ``"term"``, read from the class a loss is registered with (an
    :class:`AdversarialLoss` subclass, or another :class:`LossTerm`); ``None`` for a factory function, whose
    role is known once it has built its object (``isinstance(obj, AdversarialLoss)``)."""
    if isinstance(factory, type):
        if issubclass(factory, AdversarialLoss):
            return "adversarial"
        if issubclass(factory, LossTerm):
            return "term"
    return None


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class CaptionedImages:
    """One split of a data set, in memory or memory-mapped.

    ``images``: ``uint8`` tensor ``(N, R, R, 3)``.
    ``captions``: the distinct caption strings of the split.
    ``caption_ids``: ``int64`` ``(N, K)``: for each image, indices into ``captions``; rows with fewer
    than K captions are padded with ``-1`` and ``caption_counts`` says how many are real.
    ``attributes``: optional structured labels, name -> ``int64`` ``(N,)`` codes into
    ``attribute_values[name]`` (the Shapes data carries shape, colour, ...; metrics read them).
    ``extra_caption_ids``: optional further captions of each image, by name -> ``int64`` ``(N, K')`` ids
    into ``captions``, that training and the default caption draws never use; only a metric that asks
    for a set by name reads it (Shapes' ``test`` split: ``"held_out_phrasings"``, captions in phrasings
    that never occur in training).
    """

    images: Tensor
    captions: list[str]
    caption_ids: Tensor
    caption_counts: Tensor
    attributes: dict[str, Tensor] = field(default_factory=dict)
    attribute_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    extra_caption_ids: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def captions_of(self, index: int) -> list[str]:
        """All captions of image ``index``."""
        n = int(self.caption_counts[index])
        return [self.captions[int(c)] for c in self.caption_ids[index, :n]]


class Dataset(abc.ABC):
    """A source of captioned images. Factories are called as ``factory(cfg)``."""

    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    @abc.abstractmethod
    def load(self, split: str, resolution: int) -> CaptionedImages:
        """Return ``split`` at ``resolution`` pixels. Raise :class:`t2i.errors.UsageError` for bad input."""

    def describe(self) -> str:
        """One line for logs and summaries."""
        return type(self).__name__


# --------------------------------------------------------------------------------------------------
# Metrics


# How a metric's figure ranks trials (study reports): its direction, declared by the metric.
GOALS: dict[str, str] = {
    "max": "higher is better",
    "min": "lower is better",
    "one": "closest to 1 is best",
    "none": "descriptive: shown, never ranked",
}


class Metric(abc.ABC):
    """A number about a generator, with the protocol that produced it. Factories: ``factory(cfg)``.

    ``evaluate`` receives ``generate(captions) -> uint8 (B, R, R, 3)`` images and the reference split;
    it returns ``{key: value}`` plus whatever protocol fields (sample counts, extractor, seeds) make the
    figure reproducible, under the key ``"protocol"``. Keys are logged as given when they contain a ``/``
    (``"shapes_accuracy/colour"``) or equal the metric's name (its headline figure, ``"fid"``), else as
    ``"<metric name>/<key>"`` (``"kid/std"``); start every key with the metric's name so that a logged key
    can be traced back to the metric that produced it.

    Which value is better is declared, never guessed from a name: :attr:`higher_is_better` for all keys,
    and :attr:`goals` for the keys that differ, by their logged name without a ``/seen`` or ``/unseen``
    subset (``{"diversity/collapse_score": "one"}``; the words are those of :data:`GOALS`). Spreads
    (``kid/std``) and figures of the real images (``.../real``) are never ranked
    (:mod:`t2i.metrics.keys`).
    """

    higher_is_better: ClassVar[bool] = True
    goals: ClassVar[Mapping[str, str]] = {}

    @abc.abstractmethod
    def evaluate(self, generate: Any, reference: CaptionedImages) -> dict[str, Any]: ...


@dataclass
class ImageSet:
    """``count`` images, yielded by ``batches(batch_size)`` as uint8 ``(B, H, W, 3)``; ``identity`` says which.

    ``identity`` is JSON-able and precise enough to key a cache (a data set split's info and the sha256 of
    its pixels; a folder's path and the sha256 of its files). Built by :mod:`t2i.metrics.image_sets`.
    """

    identity: dict[str, Any]
    count: int
    _batches: Callable[[int], Iterator[Tensor]]

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        return self._batches(batch_size)

    def describe(self) -> dict[str, Any]:
        """The identity without hashes, for a protocol."""
        return {k: v for k, v in self.identity.items() if not k.endswith("sha256")} | {"count": self.count}


class ImageSetMetric(Metric):
    """A metric that compares two sets of images and so also works without a generator (FID, KID, IS, PRC,
    FD-DINOv2): ``t2i eval FOLDER --reference ...`` calls :meth:`compare` on image folders, and
    :meth:`evaluate` usually generates the images and calls it too.

    :attr:`needs_reference`: ``False`` for a metric of the images alone (IS), which is then given ``None``.
    """

    needs_reference: ClassVar[bool] = True

    @abc.abstractmethod
    def compare(self, images: ImageSet, reference: ImageSet | None, *, cache_images: bool = False) -> dict[str, Any]:
        """The metric of ``images`` against ``reference``: ``{key: value, "protocol": {...}}``.

        ``cache_images``: the images are files on disk (identified by their hash), so their features may be
        cached like the reference's; generated images are not.
        """
