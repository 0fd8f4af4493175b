"""A real training step with the engine: the check that every component works with the others."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..plugins import registry
from ..registry import KINDS
from ._common import (
    Report,
    _check_registration,
    _declared_resolutions,
    _is_adversarial,
    _one_line,
    _options,
    _progressive,
    _restores_rng,
)
from .generators import _assert_z_dim
from .data import _small_data_options
from .toys import TOY, _toys_registered


@_restores_rng
def check_training_step(
    generator: str | None = None,
    discriminator: str | None = None,
    *,
    generator_options: Mapping[str, Any] | None = None,
    discriminator_options: Mapping[str, Any] | None = None,
    loss: str | None = None,
    loss_options: Mapping[str, Any] | None = None,
    terms: Mapping[str, float] | None = None,
    term_options: Mapping[str, Mapping[str, Any]] | None = None,
    resolution: int | None = None,
    steps: int = 2,
    batch_size: int = 8,
    text_dim: int = 16,
    run_dir: str | Path | None = None,
    **overrides: Any,
) -> Any:
    """Train ``generator`` against ``discriminator`` for ``steps`` real engine steps on a tiny Shapes split.

    A network left out is the kit's toy one (for a progressive network: a registered progressive
    partner). ``loss`` is the adversarial loss (default: the engine's, ``hinge``) with ``loss_options``;
    ``terms`` maps the loss terms to train with to their weights, exactly those
    (``{"r1": 1.0, "matching_aware": 0.5}``; ``{}``: none; default: the engine's, ``matching_aware`` of
    weight 1) and ``term_options`` gives a term its options (``{"ma_gp": {"k": 1.0}}``). A term given as
    ``loss`` is added to the terms with weight 1 (and ``loss_options`` are its options).
    Options are merged over each component's ``test_options``. The resolution is 32 px if both networks
    declare it, else the smallest they share. ``overrides`` are raw config sections merged last
    (``train={"precision": "bf16"}``, ``data={"name": "mydata"}``).

    Asserts status ``finished``, finite logged losses, each term of ``terms`` logged (``d/<term>`` or
    ``g/<term>``) and that both networks' weights changed. A combination the engine refuses raises its
    :class:`UsageError` (one line); whether a refusal is expected is :func:`t2i.testing.check_pair`'s
    decision. Returns the :class:`~t2i.engine.trainer.RunResult` (the run folder is a temporary one
    unless ``run_dir`` is given).
    """
    from ..config import merge, resolve
    from ..engine.trainer import Trainer

    with _toys_registered(), contextlib.ExitStack() as stack:
        generator, discriminator = _pair(generator, discriminator)
        if resolution is None:
            g_res = _declared_resolutions("generators", generator)
            shared = sorted(set(g_res) & set(_declared_resolutions("discriminators", discriminator)))
            resolution = 32 if 32 in shared else (shared[0] if shared else g_res[0])
        label = (
            f"training step of generator '{generator}' with discriminator '{discriminator}' "
            f"at {resolution} px"
        )
        section = _loss_section(loss, loss_options, terms, term_options)
        losses = [section.get("adversarial")] + [t for t, w in section.get("terms", {}).items() if w]
        _check_registrations(
            label,
            [("generators", generator), ("discriminators", discriminator)]
            + [("losses", n) for n in losses if n],
        )
        raw = _raw_config(
            generator, discriminator, generator_options, discriminator_options, resolution, steps, batch_size
        )
        if section:
            raw["loss"] = section
        raw = merge(raw, overrides)
        _small_data_and_encoder(raw, batch_size, text_dim)
        cfg = resolve(raw)

        if run_dir is None:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="t2i-check-"))) / "run"
        _check_z_dim(label, generator, raw["generator"]["options"], resolution, text_dim)
        try:
            trainer = Trainer(cfg, Path(run_dir), quiet=True, tensorboard=False)
        except UsageError:
            raise  # refused before step 1, in one line
        except Exception as exc:
            raise AssertionError(
                f"{label}: setting up the run raised {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
        g0 = [p.detach().clone() for p in trainer.G.parameters()]
        d0 = [p.detach().clone() for p in trainer.D.parameters()]
        try:
            result = trainer.fit()
        except UsageError:
            raise
        except Exception as exc:
            raise AssertionError(f"{label}: raised {type(exc).__name__}: {_one_line(exc)}") from exc
        assert result.status == "finished", f"{label}: status {result.status!r} ({result.message})"
        assert result.step == steps, f"{label}: stopped at step {result.step} of {steps}"
        logged = {k: v for k, v in result.last.items() if k.startswith(("d/", "g/"))}
        assert logged, f"{label}: no losses were logged"
        bad = sorted(k for k, v in logged.items() if not math.isfinite(v))
        assert not bad, f"{label}: non-finite logged losses {', '.join(bad)}"
        asked = [t for t, w in section.get("terms", {}).items() if w]
        unlogged = [t for t in asked if f"d/{t}" not in logged and f"g/{t}" not in logged]
        assert not unlogged, (
            f"{label}: terms {', '.join(unlogged)} were asked for but not logged "
            f"(logged: {', '.join(sorted(logged))})"
        )
        assert any(not torch.equal(a, p) for a, p in zip(g0, trainer.G.parameters())), (
            f"{label}: the generator's weights did not change"
        )
        assert any(not torch.equal(a, p) for a, p in zip(d0, trainer.D.parameters())), (
            f"{label}: the discriminator's weights did not change"
        )
    return result


def _check_z_dim(label: str, name: str, options: Mapping[str, Any], resolution: int, text_dim: int) -> None:
    """The generator sets the ``z_dim`` the engine draws noise with (the engine reads it before step 1)."""
    try:
        g = registry("generators").create(name, dict(options), resolution=resolution, text_dim=text_dim)
    except Exception:  # noqa: BLE001 - a generator that does not build is reported by the engine
        return
    try:
        _assert_z_dim(g)
    except AssertionError as exc:
        raise AssertionError(f"{label}: generator '{name}': {exc}") from None


def _check_registrations(label: str, components: Sequence[tuple[str, str]]) -> None:
    """How each component was registered (a class, a config dataclass with defaults of its types)."""
    report = Report(label)
    for kind, name in components:
        if name in registry(kind):  # an unknown name is the engine's one-line error
            sub = Report(name)
            _check_registration(sub, kind, name)
            report.failed += [f"{KINDS[kind][0]} '{name}': {f}" for f in sub.failed]
    report.raise_for_failures()


def _pair(generator: str | None, discriminator: str | None) -> tuple[str, str]:
    """The networks named, a network left out being the toy one or a progressive partner."""
    if generator is None:
        d_grows = discriminator is not None and _progressive("discriminators", discriminator)
        hint = _declared_resolutions("discriminators", discriminator) if discriminator else (32,)
        generator = _partner("generators", d_grows, hint)
    if discriminator is None:
        g_grows = _progressive("generators", generator)
        discriminator = _partner("discriminators", g_grows, _declared_resolutions("generators", generator))
    return generator, discriminator


def _partner(kind: str, progressive: bool, resolution_hint: Sequence[int]) -> str:
    """The toy network, or for a progressive component the first registered progressive partner."""
    if not progressive:
        return TOY
    for name in registry(kind).names():
        if _progressive(kind, name) and set(_declared_resolutions(kind, name)) & set(resolution_hint):
            return name
    return TOY  # none installed: the engine refuses the pair with a one-line UsageError


def _raw_config(
    generator: str,
    discriminator: str,
    generator_options: Mapping[str, Any] | None,
    discriminator_options: Mapping[str, Any] | None,
    resolution: int,
    steps: int,
    batch_size: int,
) -> dict[str, Any]:
    """A raw experiment config: Shapes, bag of words, the two networks, a short quiet CPU run."""
    from ..config import ExperimentConfig

    raw: dict[str, Any] = {
        "data": {"name": "shapes", "resolution": resolution, "options": {}},
        "text_encoder": {"name": "bow", "options": {}},
        "generator": {"name": generator, "options": _options("generators", generator, generator_options)},
        "discriminator": {
            "name": discriminator,
            "options": _options("discriminators", discriminator, discriminator_options),
        },
        "train": {
            "batch_size": batch_size,
            "steps": steps,
            "epochs": None,
            "minutes": None,
            "log_every": 1,
            "sample_every": 0,
            "checkpoint_every": 0,
            "device": "cpu",
            "seed": 0,
        },
    }
    if any(f.name == "eval" for f in dataclasses.fields(ExperimentConfig)):
        raw["eval"] = {"metrics": []}  # no evaluation after two steps
    return raw


def _loss_section(
    loss: str | None,
    loss_options: Mapping[str, Any] | None,
    terms: Mapping[str, float] | None,
    term_options: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The raw ``[loss]`` section: ``loss`` as the adversarial loss (or, when it is a term, a term of
    weight 1), ``terms`` with their weights, options over each loss's ``test_options``."""
    from ..config import LossConfig

    section: dict[str, Any] = {}
    weights = dict(terms) if terms is not None else None
    if loss is not None:
        if _is_adversarial(loss):
            section["adversarial"] = loss
            section["options"] = _options("losses", loss, loss_options)
        else:
            weights = {loss: 1.0, **(weights if weights is not None else LossConfig().terms)}
            term_options = {loss: dict(loss_options or {}), **dict(term_options or {})}
    if weights is not None:
        # exactly these terms: the config merges tables, so the default terms not named are turned off
        section["terms"] = {**{t: 0.0 for t in LossConfig().terms}, **weights}
        unknown = sorted(set(term_options or {}) - set(weights))
        if unknown:
            raise UsageError(
                f"check_training_step: term_options for {', '.join(unknown)}, which is not in terms "
                f"({', '.join(weights) or 'none'}); add it to terms with its weight"
            )
        given = term_options or {}
        opts = {t: _options("losses", t, given.get(t)) for t in weights if t in registry("losses")}
        if any(opts.values()):
            section["term_options"] = {t: o for t, o in opts.items() if o}
    elif term_options:
        raise UsageError(
            "check_training_step: term_options without terms; pass terms={name: weight, ...} too"
        )
    return section


def _small_data_and_encoder(raw: dict[str, Any], batch_size: int, text_dim: int) -> None:
    """Shrink the data set (unless options were given) and give the text encoder its test options."""
    data = raw["data"]
    if not data["options"]:
        data["options"] = _small_data_options(data["name"], 8 * batch_size, 2 * batch_size) or {}
    enc_name = raw["text_encoder"]["name"]
    enc_opts = _options("text_encoders", enc_name, raw["text_encoder"]["options"])
    enc_cfg = registry("text_encoders").get(enc_name).config
    if enc_cfg is not None and "dim" in {f.name for f in dataclasses.fields(enc_cfg)}:
        enc_opts.setdefault("dim", text_dim)
    raw["text_encoder"]["options"] = enc_opts
