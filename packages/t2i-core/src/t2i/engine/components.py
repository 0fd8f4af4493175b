"""Build an experiment's components from its config, through the registries only.

The same path serves ``t2i run``, every trial of a study, ``t2i sample`` and a notebook. A component
that refuses its settings (``ValueError`` from its config or constructor) becomes a one-line
:class:`UsageError` naming the component, before any training step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from ..config import ComponentConfig, ExperimentConfig
from ..errors import ConfigError, UsageError
from ..interfaces import AdversarialLoss, Dataset, Discriminator, Generator, LossTerm, TextEncoder
from ..options import build_config, config_to_dict
from ..plugins import registry
from ..text.head import HEAD_OPTIONS, HeadedTextEncoder, TextHeadConfig

__all__ = ["Components", "build_text_encoder", "build_generator", "build_components", "build_dataset"]


def _create(kind: str, comp: ComponentConfig | tuple[str, dict], **context: Any) -> tuple[Any, dict[str, Any]]:
    """Create a component; return it with its full options (defaults filled in) for the saved config."""
    name, options = (comp.name, comp.options) if isinstance(comp, ComponentConfig) else comp
    reg = registry(kind)
    cfg = reg.make_config(name, options)
    try:
        obj = reg.create(name, cfg, **context)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{reg.noun} '{name}' cannot be built with these settings: {exc}") from None
    full = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else {}
    return obj, full


def _check(obj: Any, base: type, kind: str, name: str) -> None:
    if not isinstance(obj, base):
        raise UsageError(f"{kind} '{name}' built a {type(obj).__name__}, which is not a t2i {base.__name__}")


def build_dataset(cfg: ExperimentConfig) -> tuple[Dataset, dict[str, Any]]:
    data, full = _create("datasets", (cfg.data.name, cfg.data.options))
    _check(data, Dataset, "data set", cfg.data.name)
    return data, full


def build_text_encoder(cfg: ExperimentConfig) -> tuple[TextEncoder, dict[str, Any]]:
    """The text encoder, wrapped in a trainable head when its options ask for one (``head``, ``head_dim``,
    ``head_dropout``: any encoder; see :mod:`t2i.text.head`)."""
    options = dict(cfg.text_encoder.options)
    head_options = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    enc, full = _create("text_encoders", (cfg.text_encoder.name, options))
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


def build_generator(cfg: ExperimentConfig, text_dim: int) -> tuple[Generator, dict[str, Any]]:
    _check_resolution("generators", cfg.generator.name, cfg.data.resolution)
    gen, full = _create("generators", cfg.generator, resolution=cfg.data.resolution, text_dim=text_dim)
    _check(gen, Generator, "generator", cfg.generator.name)
    return gen, full


def _check_resolution(kind: str, name: str, resolution: int) -> None:
    entry = registry(kind).get(name)
    supported = getattr(entry.factory, "resolutions", None)
    if supported and resolution not in supported:
        noun = registry(kind).noun
        raise UsageError(
            f"{noun} '{name}' supports resolutions {', '.join(map(str, supported))}, not {resolution}; "
            f"set --resolution to one of those"
        )


def _check_compatible(gen: Generator, disc: Discriminator, terms: list[tuple[str, float, LossTerm]], cfg: ExperimentConfig) -> None:
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


@dataclass
class Components:
    """Everything a training run is made of, plus the config with every option written out."""

    dataset: Dataset
    text_encoder: TextEncoder
    generator: Generator
    discriminator: Discriminator
    adversarial: AdversarialLoss
    terms: list[tuple[str, float, LossTerm]]
    resolved: ExperimentConfig

    @property
    def needs(self) -> frozenset[str]:
        out: set[str] = set(self.adversarial.needs)
        for _, _, term in self.terms:
            out |= term.needs
        return frozenset(out)


def build_components(cfg: ExperimentConfig, fit_text: Callable[[TextEncoder, Dataset], None] | None = None) -> Components:
    """Create every component of ``cfg``. ``fit_text(encoder, dataset)`` runs between creating the text
    encoder and the networks (it builds the vocabulary from the training captions)."""
    for kind, comp in (("generators", cfg.generator), ("discriminators", cfg.discriminator)):
        _check_resolution(kind, comp.name, cfg.data.resolution)  # before any data is loaded
    dataset, data_opts = build_dataset(cfg)
    encoder, enc_opts = build_text_encoder(cfg)
    if fit_text is not None:
        fit_text(encoder, dataset)
    gen, gen_opts = build_generator(cfg, encoder.dim)
    disc, disc_opts = _create("discriminators", cfg.discriminator, resolution=cfg.data.resolution, text_dim=encoder.dim)
    _check(disc, Discriminator, "discriminator", cfg.discriminator.name)

    losses = registry("losses")
    adv_entry = losses.get(cfg.loss.adversarial)
    if adv_entry.metadata.get("role") not in (None, "adversarial"):
        raise UsageError(
            f"loss '{cfg.loss.adversarial}' is a loss term, not an adversarial loss; "
            f"use --term {cfg.loss.adversarial}=WEIGHT and choose --loss from: "
            + ", ".join(n for n in losses.names() if losses.get(n).metadata.get("role") == "adversarial")
        )
    adversarial, adv_opts = _create("losses", (cfg.loss.adversarial, cfg.loss.options))
    _check(adversarial, AdversarialLoss, "adversarial loss", cfg.loss.adversarial)
    terms, term_opts = [], {}
    for name, weight in cfg.loss.terms.items():
        if weight == 0:
            continue
        term, opts = _create("losses", (name, cfg.loss.term_options.get(name, {})))
        _check(term, LossTerm, "loss term", name)
        if isinstance(term, AdversarialLoss):
            raise UsageError(f"'{name}' is an adversarial loss; choose it with --loss {name}, not --term")
        terms.append((name, float(weight), term))
        if opts:
            term_opts[name] = opts
    unknown_opts = set(cfg.loss.term_options) - set(cfg.loss.terms)
    if unknown_opts:
        raise UsageError(f"loss.term_options has options for terms that are not used: {', '.join(sorted(unknown_opts))}")

    _check_compatible(gen, disc, terms, cfg)
    resolved = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, options=data_opts),
        text_encoder=ComponentConfig(cfg.text_encoder.name, enc_opts),
        generator=ComponentConfig(cfg.generator.name, gen_opts),
        discriminator=ComponentConfig(cfg.discriminator.name, disc_opts),
        loss=dataclasses.replace(cfg.loss, options=adv_opts, term_options=term_opts),
    )
    return Components(dataset, encoder, gen, disc, adversarial, terms, resolved)
