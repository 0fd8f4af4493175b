"""The loss check: an adversarial loss or a term, used in a D step and a G step built like the engine's,
then in a short real run."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.generate import generate_images, uses_words
from ..engine.preflight import random_words
from ..errors import UsageError
from ..interfaces import NEEDS, AdversarialLoss, Discriminator, Generator, LossTerm, StepOutputs
from ..plugins import registry
from ._common import (
    Report,
    _bf16,
    _build,
    _config,
    _is_adversarial,
    _options,
    _randn,
    _restores_rng,
    _start,
)
from .toys import TOY, _toys_registered
from .training import check_training_step

KNOWN_NEEDS = frozenset(NEEDS)  # what the engine can compute for a loss (t2i.interfaces.NEEDS)


@_restores_rng
def check_loss(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    batch: int = 4,
    resolution: int = 32,
    text_dim: int = 16,
    generator: str | None = None,
    discriminator: str | None = None,
    train: bool = True,
) -> Report:
    """Check registered loss ``name`` (an adversarial loss or a term) the way the engine uses it.

    ``needs`` only names what the engine provides (:data:`t2i.interfaces.NEEDS`); an adversarial
    loss's three functions are finite scalars that push the right way (a loss is adversarial when its
    class is an :class:`~t2i.interfaces.AdversarialLoss`); in a D step and a G step built like the
    engine's (with the kit's toy networks, or the registered ``generator`` /
    ``discriminator``, which also default to the loss's ``test_generator`` / ``test_discriminator``
    metadata), ``d_loss`` and ``g_loss`` are ``None`` or finite scalars that carry gradients to D and G,
    and at least one applies; same value under a seed; bf16 logits; then, with ``train=True``, a short
    real run with the engine (:func:`check_training_step`).
    """
    entry = registry("losses").get(name)
    report = _start("losses", name)
    opts = _options("losses", name, options)
    cfg = registry("losses").make_config(name, opts)

    term: LossTerm | None = None
    with report.check("builds"):
        term = _build("losses", name, cfg, 0, LossTerm)
        unknown = sorted(frozenset(term.needs) - KNOWN_NEEDS)
        assert not unknown, (
            f"needs names {', '.join(unknown)}, which the engine does not provide "
            f"({', '.join(sorted(KNOWN_NEEDS))})"
        )
    if term is None:
        report.skipped.append("the other checks (it does not build)")
        report.raise_for_failures()
        return report

    if isinstance(term, AdversarialLoss):
        with report.check("adversarial functions"):
            _assert_adversarial_functions(term, batch)

    with _toys_registered():
        g_name = generator or entry.metadata.get("test_generator") or TOY
        d_name = discriminator or entry.metadata.get("test_discriminator") or TOY
        g_opts = entry.metadata.get("test_generator_options") if not generator else None
        step = functools.partial(  # step(seed, autocast=False, check_grads=False)
            _loss_step, name, cfg, g_name, d_name, batch, resolution, text_dim, _is_adversarial(name, term),
            g_opts=g_opts,
        )

        values: tuple[Tensor | None, Tensor | None] = (None, None)
        failed_before = len(report.failed)
        with report.check("a D step and a G step like the engine's"):
            values = step(0, check_grads=True)
            assert values != (None, None), "returns None from both d_loss and g_loss: it contributes nothing"
        if len(report.failed) > failed_before:
            report.skipped.append("the other checks (the loss fails in a step like the engine's)")
            report.raise_for_failures()

        with report.check("same value under a seed"):
            for which, a, c in zip(("d_loss", "g_loss"), values, step(0)):
                if a is not None and c is not None:
                    assert torch.equal(a, c), (
                        f"{which} differs between two identical steps under torch.manual_seed(0)"
                    )

        with report.check("bf16 logits (CPU autocast)"):
            step(0, autocast=True)

        if train:
            with report.check("a real training step with the engine"):
                try:
                    check_training_step(g_name, d_name, generator_options=g_opts, loss=name, loss_options=opts,
                                        text_dim=text_dim)
                except UsageError as exc:
                    raise AssertionError(f"the engine refuses it with the kit's networks: {exc}") from None
        else:
            report.skipped.append("a real training step with the engine (train=False)")

    report.raise_for_failures()
    return report


def _assert_adversarial_functions(term: AdversarialLoss, batch: int) -> None:
    """``d_real``, ``d_fake`` and ``g_fake`` are finite scalars with gradients that push the right way."""
    high, low = torch.full((batch,), 2.0), torch.full((batch,), -2.0)
    for fn in ("d_real", "d_fake", "g_fake"):
        logits = _randn((batch,), 1).requires_grad_(True)
        value = getattr(term, fn)(logits)
        _assert_scalar(value, f"{fn}(logits)")
        value.backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0, (
            f"{fn} carries no gradient to the logits"
        )
    with torch.no_grad():
        assert term.d_real(high) < term.d_real(low), "d_real does not fall as the logits of real images rise"
        assert term.d_fake(low) < term.d_fake(high), "d_fake does not fall as the logits of fake images fall"
        assert term.g_fake(high) < term.g_fake(low), "g_fake does not fall as the logits of fake images rise"


def _loss_step(
    name: str,
    cfg: Any,
    g_name: str,
    d_name: str,
    b: int,
    r: int,
    text_dim: int,
    adversarial_role: bool,
    seed: int,
    *,
    autocast: bool = False,
    check_grads: bool = False,
    g_opts: Mapping[str, Any] | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """One D step and one G step's loss values for term ``name``, computed as the engine computes them."""
    from ..losses import HingeLoss

    term = _build("losses", name, cfg, seed, LossTerm)
    network = {"resolution": r, "text_dim": text_dim}
    G = _build("generators", g_name, _config("generators", g_name, g_opts), seed, Generator, **network)
    D = _build("discriminators", d_name, _config("discriminators", d_name), seed, Discriminator, **network)
    adversarial = term if adversarial_role and isinstance(term, AdversarialLoss) else HingeLoss()
    for component in (G, D, term, adversarial):
        component.on_train_step(0, 0)
    needs = frozenset(term.needs) | frozenset(adversarial.needs)
    if "features" in needs:
        assert D.provides_features, f"needs features, which discriminator '{d_name}' does not provide"
    ctx = _bf16 if autocast else contextlib.nullcontext
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand(b, 3, r, r, generator=gen) * 2 - 1
    text = torch.randn(b, text_dim, generator=gen)
    captions = [f"caption number {i % 3}" for i in range(b)]  # for terms that need the strings (one repeats)
    z = torch.randn(b, G.z_dim, generator=gen)
    # word features for a term that needs them or a network that reads them (rows of 6, 5, ... tokens)
    words = random_words(b, 6, text_dim, gen) if "words" in needs or uses_words(G) or uses_words(D) else None

    def g_(z_: Tensor, t_: Tensor) -> Tensor:
        return generate_images(G, z_, t_, words)

    def d_(x: Tensor, t_: Tensor, mismatched_text: Tensor | None = None) -> Any:
        if not uses_words(D):
            return D(x, t_, mismatched_text)
        assert words is not None
        return D(x, t_, mismatched_text, words=words,
                 mismatched_words=None if mismatched_text is None else words.roll(1))

    # D step
    torch.manual_seed(seed)
    mismatched = text.roll(1, 0) if "mismatched" in needs else None
    with torch.no_grad(), ctx():
        fake = g_(z, text)
    real_d = real.detach().requires_grad_(True) if "real_grad" in needs else real
    text_d = text.detach().requires_grad_(True) if "text_grad" in needs else text  # as the engine does
    with ctx():
        real_out, fake_out = d_(real_d, text_d, mismatched), d_(fake, text_d)
    d_out = StepOutputs(real_out, fake_out, real_d, fake, text_d, adversarial, D, G, 0, captions, words)
    d_value = term.d_loss(d_out)
    if d_value is not None:
        d_value = _checked_value(d_value, "d_loss", D, "the discriminator", check_grads)

    # G step (D's parameters frozen, as in the engine)
    torch.manual_seed(seed + 1)
    for p in D.parameters():
        p.requires_grad_(False)
    with ctx():
        fake = g_(z, text)
        fake_out = d_(fake, text)
        real_out = None
        if "real_in_g_step" in needs:
            with torch.no_grad():
                real_out = d_(real, text)
    g_value = term.g_loss(StepOutputs(real_out, fake_out, real, fake, text, adversarial, D, G, 0, captions, words))
    if g_value is not None:
        g_value = _checked_value(g_value, "g_loss", G, "the generator", check_grads)
    return d_value, g_value


def _checked_value(value: Any, which: str, net: nn.Module, who: str, check_grads: bool) -> Tensor:
    """``value`` detached, once it is a finite scalar that (with ``check_grads``) trains ``net``."""
    _assert_scalar(value, which)
    if check_grads:
        assert value.requires_grad, f"{which} does not depend on {who} (it cannot train anything)"
        net.zero_grad(set_to_none=True)
        value.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{which} carries no gradient to {who}"
        assert all(torch.isfinite(g).all() for g in grads), f"{which} gives {who} non-finite gradients"
    return value.detach()


def _assert_scalar(value: Any, what: str) -> None:
    assert isinstance(value, Tensor), (
        f"{what} returned {type(value).__name__}, expected a scalar Tensor or None"
    )
    assert value.dim() == 0, (
        f"{what} returned shape {tuple(value.shape)}, expected a scalar (reduce over the batch)"
    )
    assert value.is_floating_point(), f"{what} returned dtype {value.dtype}, expected a float"
    assert torch.isfinite(value.detach()).all(), f"{what} is not finite ({value.item()})"
