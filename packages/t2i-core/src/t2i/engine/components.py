"""Build an experiment's components from its config, through the registries only.

The same path serves ``t2i run``, every trial of a study, ``t2i sample`` and a notebook. A component
that refuses its settings (``ValueError`` from its config or constructor) becomes a one-line
:class:`UsageError` naming it (:meth:`t2i.registry.Registry.build`), before any training step.

A run is built in three phases, because each needs what the one before produced:

1. the data set and the text encoder;
2. the training split, loaded (at the random crop's larger size when that is on), and the text encoder
   fitted on its captions (a vocabulary, say);
3. the networks, sized by the fitted encoder's ``dim``, and the losses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import ComponentConfig, ExperimentConfig
from ..data.augment import BatchAugment
from ..data.caption_augment import augment_captions
from ..data.splits import load_split
from ..errors import ConfigError, UsageError
from ..interfaces import (
    AdversarialLoss, CaptionedImages, Dataset, Discriminator, Generator, LossTerm, TextEncoder, check_needs, loss_role,
)
from ..options import build_config, config_to_dict
from ..plugins import registry
from ..text.head import HEAD_OPTIONS, HeadedTextEncoder, TextHeadConfig, fit_encoder

__all__ = [
    "Components", "Losses", "build_components", "build_dataset", "build_text_encoder", "build_generator",
    "build_discriminator", "build_losses", "check_word_features",
]


def _check(obj: Any, base: type, kind: str, name: str) -> None:
    if not isinstance(obj, base):
        raise UsageError(f"{kind} '{name}' built a {type(obj).__name__}, which is not a t2i {base.__name__}")


def build_dataset(cfg: ExperimentConfig) -> tuple[Dataset, dict[str, Any]]:
    data, full = registry("datasets").build(cfg.data.name, cfg.data.options)
    _check(data, Dataset, "data set", cfg.data.name)
    return data, full


def build_text_encoder(cfg: ExperimentConfig) -> tuple[TextEncoder, dict[str, Any]]:
    """The text encoder, wrapped in a trainable head when its options ask for one (``head``, ``head_dim``,
    ``head_dropout``: any encoder; see :mod:`t2i.text.head`)."""
    options = dict(cfg.text_encoder.options)
    head_options = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    enc, full = registry("text_encoders").build(cfg.text_encoder.name, options)
    _check(enc, TextEncoder, "text encoder", cfg.text_encoder.name)
    if head_options:
        try:
            head = build_config(TextHeadConfig, head_options)
        except ConfigError as exc:
            raise ConfigError(f"text encoder head: {exc}") from None
        if head.head:
            enc = HeadedTextEncoder(enc, head)
        full.update(config_to_dict(head))
    return enc, full


def build_generator(cfg: ExperimentConfig, text_dim: int,
                    word_dim: int | None = None) -> tuple[Generator, dict[str, Any]]:
    return _build_network("generators", cfg.generator, Generator, cfg.data.resolution, text_dim, word_dim)


def build_discriminator(cfg: ExperimentConfig, text_dim: int,
                        word_dim: int | None = None) -> tuple[Discriminator, dict[str, Any]]:
    return _build_network("discriminators", cfg.discriminator, Discriminator, cfg.data.resolution, text_dim, word_dim)


def _build_network(kind: str, comp: ComponentConfig, base: type, resolution: int,
                   text_dim: int, word_dim: int | None = None) -> tuple[Any, dict[str, Any]]:
    """A generator or discriminator at ``resolution`` for ``text_dim``-d text, checked to be a ``base``.

    A network class that declares ``uses_words`` is also given ``word_dim`` (the text encoder's word feature
    size): ``factory(cfg, resolution=R, text_dim=D, word_dim=Dw)``."""
    _check_resolution(kind, comp.name, resolution)
    context: dict[str, Any] = {"resolution": resolution, "text_dim": text_dim}
    if getattr(registry(kind).get(comp.name).factory, "uses_words", False):
        context["word_dim"] = word_dim
    net, full = registry(kind).build(comp.name, comp.options, **context)
    _check(net, base, registry(kind).noun, comp.name)
    return net, full


def _check_resolution(kind: str, name: str, resolution: int) -> None:
    entry = registry(kind).get(name)
    supported = getattr(entry.factory, "resolutions", None)
    if supported and resolution not in supported:
        noun = registry(kind).noun
        raise UsageError(
            f"{noun} '{name}' supports resolutions {', '.join(map(str, supported))}, not {resolution}; "
            f"set --resolution to one of those"
        )


def _check_compatible(gen: Generator, disc: Discriminator, terms: list[tuple[str, float, LossTerm]],
                      cfg: ExperimentConfig) -> None:
    """Refuse combinations that cannot train, before the first step, in one line."""
    g, d = cfg.generator.name, cfg.discriminator.name
    if gen.progressive and not disc.progressive:
        raise UsageError(f"generator '{g}' grows progressively but discriminator '{d}' has a fixed resolution; "
                         f"pair it with a progressive discriminator")
    if disc.progressive and not gen.progressive:
        raise UsageError(f"discriminator '{d}' grows progressively but generator '{g}' does not; "
                         f"pair it with a progressive generator")
    for name, _, term in terms:
        if "features" in term.needs and not disc.provides_features:
            raise UsageError(f"loss term '{name}' needs intermediate discriminator features, "
                             f"which discriminator '{d}' does not provide")


WORD_ENCODERS = ("gru", "bow", "clip", "minilm")  # the built-in encoders with word features


def check_word_features(who: str, encoder: TextEncoder, encoder_name: str) -> None:
    """Refuse ``who`` (``"generator 'attngan'"``), which needs word features, with an encoder that has none."""
    if getattr(encoder, "word_dim", None) is None:
        raise UsageError(f"{who} needs word features; text encoder '{encoder_name}' has none: use --text-encoder "
                         f"{', '.join(WORD_ENCODERS[:-1])} or {WORD_ENCODERS[-1]}")


def _check_words(gen: Generator, disc: Discriminator, losses: "Losses", encoder: TextEncoder,
                 cfg: ExperimentConfig) -> None:
    """Every network that ``uses_words`` and every term that needs ``"words"`` has an encoder with word features."""
    users = [(gen, f"generator '{cfg.generator.name}'"), (disc, f"discriminator '{cfg.discriminator.name}'")]
    for net, who in users:
        if getattr(net, "uses_words", False):
            check_word_features(who, encoder, cfg.text_encoder.name)
    named = [(cfg.loss.adversarial, losses.adversarial)] + [(n, t) for n, _, t in losses.terms]
    for name, term in named:
        if "words" in getattr(term, "needs", ()):
            check_word_features(f"loss term '{name}'", encoder, cfg.text_encoder.name)


@dataclass
class Losses:
    """The adversarial loss, the weighted terms ``(name, weight, term)``, and the options of each for the
    saved config. ``needs``: what the engine computes for them (:data:`t2i.interfaces.NEEDS`)."""

    adversarial: AdversarialLoss
    terms: list[tuple[str, float, LossTerm]]
    adversarial_options: dict[str, Any]
    term_options: dict[str, dict[str, Any]]
    needs: frozenset[str]


def build_losses(cfg: ExperimentConfig) -> Losses:
    """The adversarial loss and every term of non-zero weight. A loss's role is its class: an
    :class:`AdversarialLoss` goes in ``--loss``, any other :class:`LossTerm` in ``--term``."""
    losses = registry("losses")
    name = cfg.loss.adversarial
    if loss_role(losses.get(name).factory) == "term":
        raise _not_adversarial(name)
    adversarial, adv_opts = losses.build(name, cfg.loss.options)
    if isinstance(adversarial, LossTerm) and not isinstance(adversarial, AdversarialLoss):
        raise _not_adversarial(name)
    _check(adversarial, AdversarialLoss, "adversarial loss", name)
    needs = set(check_needs(adversarial, "loss", name))
    terms, term_opts = [], {}
    for name, weight in cfg.loss.terms.items():
        if weight == 0:
            continue
        if loss_role(losses.get(name).factory) == "adversarial":
            raise _not_a_term(name)
        term, opts = losses.build(name, cfg.loss.term_options.get(name, {}))
        if isinstance(term, AdversarialLoss):
            raise _not_a_term(name)
        _check(term, LossTerm, "loss term", name)
        needs |= check_needs(term, "loss term", name)
        terms.append((name, float(weight), term))
        if opts:
            term_opts[name] = opts
    unknown_opts = set(cfg.loss.term_options) - set(cfg.loss.terms)
    if unknown_opts:
        raise UsageError("loss.term_options has options for terms that are not used: "
                         + ", ".join(sorted(unknown_opts)))
    return Losses(adversarial, terms, adv_opts, term_opts, frozenset(needs))


def _not_adversarial(name: str) -> UsageError:
    losses = registry("losses")
    choices = [n for n in losses.names() if loss_role(losses.get(n).factory) == "adversarial"]
    return UsageError(f"loss '{name}' is a loss term, not an adversarial loss; use --term {name}=WEIGHT and "
                      f"choose --loss from: {', '.join(choices)}")


def _not_a_term(name: str) -> UsageError:
    return UsageError(f"'{name}' is an adversarial loss; choose it with --loss {name}, not --term")


@dataclass
class Components:
    """Everything a training run is made of, plus the config with every option written out."""

    dataset: Dataset
    text_encoder: TextEncoder
    train_split: CaptionedImages
    batch_augment: BatchAugment
    generator: Generator
    discriminator: Discriminator
    losses: Losses
    resolved: ExperimentConfig

    @property
    def adversarial(self) -> AdversarialLoss:
        return self.losses.adversarial

    @property
    def terms(self) -> list[tuple[str, float, LossTerm]]:
        return self.losses.terms

    @property
    def needs(self) -> frozenset[str]:
        return self.losses.needs


def build_components(cfg: ExperimentConfig) -> Components:
    """Create every component of ``cfg`` in the three phases of the module docstring."""
    for kind, comp in (("generators", cfg.generator), ("discriminators", cfg.discriminator)):
        _check_resolution(kind, comp.name, cfg.data.resolution)  # before any data is loaded
    # 1. the data set and the text encoder
    dataset, data_opts = build_dataset(cfg)
    encoder, enc_opts = build_text_encoder(cfg)
    for kind, comp in (("generators", cfg.generator), ("discriminators", cfg.discriminator)):  # before any data
        if getattr(registry(kind).get(comp.name).factory, "uses_words", False):
            check_word_features(f"{registry(kind).noun} '{comp.name}'", encoder, cfg.text_encoder.name)
    # 2. the training split, and the encoder fitted on its captions
    d = cfg.data
    batch_augment = BatchAugment(d.resolution, random_crop=d.random_crop, flip=d.flip, jitter=d.jitter, dataset=dataset)
    train_split = load_split(dataset, d.train_split, batch_augment.load_resolution)
    train_split = augment_captions(train_split, variants=d.caption_variants, word_dropout=d.word_dropout,
                                   word_shuffle=d.word_shuffle, seed=cfg.train.seed)
    fit_encoder(encoder, train_split.captions, train_split.caption_ids)
    # 3. the networks, sized by the encoder, and the losses
    gen, gen_opts = build_generator(cfg, encoder.dim, encoder.word_dim)
    disc, disc_opts = build_discriminator(cfg, encoder.dim, encoder.word_dim)
    losses = build_losses(cfg)
    _check_compatible(gen, disc, losses.terms, cfg)
    _check_words(gen, disc, losses, encoder, cfg)
    resolved = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, options=data_opts),
        text_encoder=ComponentConfig(cfg.text_encoder.name, enc_opts),
        generator=ComponentConfig(cfg.generator.name, gen_opts),
        discriminator=ComponentConfig(cfg.discriminator.name, disc_opts),
        loss=dataclasses.replace(cfg.loss, options=losses.adversarial_options, term_options=losses.term_options),
    )
    return Components(dataset, encoder, train_split, batch_augment, gen, disc, losses, resolved)
