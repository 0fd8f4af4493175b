"""The conformance kit: does a registered component keep its side of the contract in :mod:`t2i.interfaces`?

Import it in a plugin's own tests. One line per component::

    from t2i.testing import check_generator, check_training_step

    def test_my_generator():
        check_generator("sagan", {"ngf": 8})              # every declared resolution <= 64, and 128

    def test_my_generator_trains():
        check_training_step(generator="sagan", generator_options={"ngf": 8})

Or cover every registered component, including ones installed after the test was written, with no new
test code (timm's recipe: parametrize over the registry itself)::

    import pytest
    import t2i.testing as kit

    @pytest.mark.parametrize("name", kit.registered("generators"))
    def test_generator(name):
        kit.check_generator(name, resolutions=(32, 64))

Small options for tests. A component can declare the options that make it cheap to test when it
registers, and every check uses them (explicit ``options`` are merged over them)::

    register("sagan", SAGANGenerator, config=SAGANConfig, test_options={"ngf": 8})

What is checked (each check raises :class:`AssertionError` naming the component and every broken
property, and returns a :class:`Report` of what passed):

- generators and discriminators, at each supported resolution (default: every declared resolution
  <= 64, plus 128 if declared): output shape, dtype and finiteness, ``[-1, 1]`` for images, ``(B,)``
  logits and a :class:`~t2i.interfaces.DiscOutput` for discriminators (features when
  ``provides_features``, ``mismatched_logits`` when mismatched text is given); gradients reach every
  trainable parameter (and the input image, for gradient penalties); the text (and the noise) change
  the output; two builds under one ``torch.manual_seed`` are identical; a state-dict round trip through
  safetensors (as checkpoints do) reproduces the outputs; CPU bf16 autocast; ``channels_last``.
  Progressive networks are checked across their growth schedule (``on_train_step``).
- text encoders, losses, data sets and metrics: their interface, with the same spirit (see each check).
- :func:`check_training_step`: a few real steps of the engine (:class:`t2i.engine.trainer.Trainer`).

Conditioning and gradients are checked on a copy whose weights are slightly perturbed, so that a
layer that starts at zero (DF-GAN's affine fusion, a zero-initialised gate) is not mistaken for an
unused one, while a layer that is never used, or a caption that is never read, is still caught.

Every check restores torch's global RNG state when it returns, so it does not disturb the caller's
seeding. Everything runs on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import UsageError
from .hookspecs import hookimpl
from .interfaces import (
    AdversarialLoss,
    CaptionedImages,
    Dataset,
    DiscOutput,
    Discriminator,
    Generator,
    LossTerm,
    Metric,
    StepOutputs,
    TextEncoder,
)
from .plugins import get_plugin_manager, register_plugin, registry, unregister_plugin

__all__ = [
    "Report",
    "registered",
    "default_options",
    "check_generator",
    "check_discriminator",
    "check_text_encoder",
    "check_loss",
    "check_dataset",
    "check_metric",
    "check_training_step",
    "check_component",
    "CHECKS",
    "KNOWN_NEEDS",
    "ToyConfig",
    "ToyGenerator",
    "ToyDiscriminator",
    "TOY",
]

KNOWN_NEEDS = frozenset({"mismatched", "real_in_g_step", "real_grad", "features"})
TOY = "testing-toy"  # the name the toy networks are registered under, only while a check needs them
_TOY_PLUGIN = "t2i.testing"

# images_seen values at which progressive networks are checked: every half decade from 10 to 1e12,
# so every phase and fade-in of any plausible growth schedule is visited at least once.
_PHASE_POINTS = (0, *(int(10 ** (k / 2)) for k in range(2, 25)))
_PERTURB = 0.02  # std of the noise added to every weight before the conditioning and gradient checks
_DIFFERS = 1e-6  # two outputs "differ" when their largest difference exceeds this


# --------------------------------------------------------------------------------------------------
# Reports


@dataclass
class Report:
    """What one check found: the properties that passed, failed (with why) and were skipped."""

    component: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def check(self, prop: str) -> Iterator[None]:
        """Record ``prop`` as passed, or failed with the assertion's message or the exception raised."""
        try:
            yield
        except _NotApplicable as exc:
            self.skipped.append(f"{prop}: {exc}")
        except AssertionError as exc:
            self.failed.append(f"{prop}: {_one_line(exc) or 'assertion failed'}")
        except Exception as exc:  # noqa: BLE001 - a component that crashes breaks the property checked
            self.failed.append(f"{prop}: raised {type(exc).__name__}: {_one_line(exc)}")
        else:
            self.passed.append(prop)

    def raise_for_failures(self) -> None:
        if self.failed:
            total = len(self.failed) + len(self.passed)
            lines = "\n".join(f"  - {f}" for f in self.failed)
            raise AssertionError(
                f"{self.component} breaks the t2i interface contract "
                f"({len(self.failed)} of {total} checks failed):\n{lines}"
            )

    def __str__(self) -> str:
        counts = f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
        parts = [f"{self.component}: {counts}"]
        parts += [f"  FAIL {f}" for f in self.failed] + [f"  skip {s}" for s in self.skipped]
        return "\n".join(parts)


class _NotApplicable(Exception):
    """A property that cannot be judged because an earlier one failed (e.g. comparing NaN outputs)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + (" ..." if len(text) > 400 else "")


def _comparable(*tensors: Tensor) -> None:
    """Skip a comparison of outputs that are not finite (that failure is reported by the output check)."""
    if not all(bool(torch.isfinite(t.detach().float()).all()) for t in tensors if t is not None):
        raise _NotApplicable("not judged: the outputs are not finite")


def _restores_rng(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` without leaving its seeding behind in torch's global RNG."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------------------------------
# The registry side: names and test options


def registered(kind: str, pattern: str = "*") -> list[str]:
    """Names registered for ``kind`` (``"generators"``, ``"losses"``, ...), naturally sorted.

    ``pattern`` filters with fnmatch (``"sa*"``).

    Meant for ``@pytest.mark.parametrize("name", registered("generators"))``: collected when the tests
    are, so a component installed later is covered by the same test.
    """
    return registry(kind).names(pattern)


def default_options(kind: str, name: str) -> dict[str, Any]:
    """The small options ``name`` declared for tests (``register(..., test_options={...})``), or ``{}``."""
    return dict(registry(kind).get(name).metadata.get("test_options") or {})


def _options(kind: str, name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**default_options(kind, name), **dict(options or {})}


def _build(kind: str, name: str, cfg: Any, seed: int, base: type, **context: Any) -> Any:
    """Create ``name`` from an already validated config under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    obj = registry(kind).create(name, copy.deepcopy(cfg), **context)
    assert isinstance(obj, base), (
        f"the factory built a {type(obj).__name__}, which is not a t2i {base.__name__}"
    )
    return obj


def _declared_resolutions(kind: str, name: str, base: type) -> tuple[int, ...]:
    declared = getattr(registry(kind).get(name).factory, "resolutions", None) or base.resolutions
    return tuple(sorted({int(r) for r in declared}))


def _pick_resolutions(report: Report, declared: Sequence[int], wanted: Sequence[int] | None) -> list[int]:
    if wanted is None:
        chosen = [r for r in declared if r <= 64] + [r for r in declared if r == 128]
    else:
        chosen = [r for r in declared if r in set(wanted)]
    if not chosen:  # always check something: the smallest resolution the component declares
        chosen = [min(declared)]
        report.skipped.append(
            f"none of the resolutions asked for ({', '.join(map(str, wanted or ()))}) is declared "
            f"({', '.join(map(str, declared))}); checked {chosen[0]} px instead"
        )
    return chosen


# --------------------------------------------------------------------------------------------------
# Helpers shared by the network checks


def _set_phase(model: nn.Module, seen: int) -> None:
    """Put a (progressive) network where the engine would have it after ``seen`` images."""
    if isinstance(model, (Generator, Discriminator, TextEncoder, LossTerm)):
        model.on_train_step(seen, seen)


def _phases(model: nn.Module) -> tuple[int, ...]:
    return _PHASE_POINTS if getattr(model, "progressive", False) else (0,)


def _final(model: nn.Module) -> int:
    return _phases(model)[-1]


def _where(model: nn.Module, seen: int) -> str:
    return f" after {seen:,} images" if getattr(model, "progressive", False) else ""


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with every weight nudged: zero-initialised layers come alive, unused ones stay unused."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * _PERTURB)
    return clone


def _randn(shape: Sequence[int], seed: int) -> Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def _max_diff(a: Tensor, b: Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def _assert_finite(t: Tensor, what: str) -> None:
    bad = int((~torch.isfinite(t.detach().float())).sum())
    assert not bad, f"{what} has {bad} non-finite values (NaN or inf)"


def _assert_image(
    out: Any, shape: tuple[int, ...], dtype: torch.dtype | None, where: str, tol: float = 1e-5
) -> None:
    assert isinstance(out, Tensor), f"returned {type(out).__name__}{where}, expected a Tensor"
    assert tuple(out.shape) == shape, f"output shape {tuple(out.shape)}{where}, expected {shape}"
    assert out.is_floating_point(), f"output dtype {out.dtype}{where}, expected a float dtype"
    if dtype is not None:
        assert out.dtype == dtype, (
            f"output dtype {out.dtype}{where}, expected {dtype} (the dtype of its inputs)"
        )
    _assert_finite(out, f"the output{where}")
    lo, hi = out.detach().float().min().item(), out.detach().float().max().item()
    assert lo >= -1 - tol and hi <= 1 + tol, (
        f"output range [{lo:.3g}, {hi:.3g}]{where} exceeds [-1, 1] (finish with tanh or a clamp)"
    )


def _assert_gradients(
    model: nn.Module, objective: Callable[[nn.Module], Tensor], phases: Sequence[int]
) -> None:
    """Every trainable parameter gets a finite, non-zero gradient from ``objective`` in some phase."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert named, "has no trainable parameters"
    reached: set[str] = set()
    nonfinite: set[str] = set()
    for seen in phases:
        model.zero_grad(set_to_none=True)
        _set_phase(model, seen)
        loss = objective(model)
        assert loss.requires_grad, (
            "the output does not depend on any parameter (computed under no_grad, or detached)"
        )
        loss.backward()
        for n, p in named:
            if p.grad is None:
                continue
            if not torch.isfinite(p.grad).all():
                nonfinite.add(n)
            elif p.grad.abs().sum() > 0:
                reached.add(n)
    model.zero_grad(set_to_none=True)
    assert not nonfinite, f"non-finite gradients reach {', '.join(sorted(nonfinite))}"
    missing = [n for n, _ in named if n not in reached]
    assert not missing, (
        f"no gradient reaches {len(missing)} of {len(named)} trainable parameters: {_names(missing)} "
        f"(a layer that is never used, a detach, or requires_grad left on a frozen weight)"
    )


def _names(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _assert_same_weights(a: nn.Module, b: nn.Module, seed: int) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), (
        f"two builds under torch.manual_seed({seed}) have different state_dict keys"
    )
    for k in sa:
        if isinstance(sa[k], Tensor) and not torch.equal(sa[k], sb[k]):
            raise AssertionError(
                f"two builds under torch.manual_seed({seed}) have different weights ('{k}' differs): "
                f"draw initial weights from torch's RNG, not from random, numpy or the clock"
            )


def _round_trip(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s state_dict into ``dst`` through safetensors, as a checkpoint does."""
    from safetensors.torch import load, save

    state = src.state_dict()
    odd = [k for k, v in state.items() if not isinstance(v, Tensor)]
    assert not odd, (
        f"state_dict holds values that are not tensors ({_names(odd)}); "
        f"checkpoints (safetensors) cannot store them"
    )
    blob = save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()})
    try:
        dst.load_state_dict(load(blob))
    except RuntimeError as exc:
        raise AssertionError(f"a fresh instance cannot load the saved state_dict: {_one_line(exc)}") from None


def _same_under_seed(a: Callable[[], Any], b: Callable[[], Any], seed: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    out_a = a()
    torch.manual_seed(seed)
    out_b = b()
    return out_a, out_b


# --------------------------------------------------------------------------------------------------
# Generators


@_restores_rng
def check_generator(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    resolutions: Sequence[int] | None = None,
    batch: int = 2,
    text_dim: int = 16,
) -> Report:
    """Check registered generator ``name`` (built with ``options`` over its ``test_options``).

    At each resolution: shape ``(B, 3, R, R)``, float, finite, in ``[-1, 1]``; gradients reach every
    trainable parameter; the text and the noise change the output; determinism under a seed; state-dict
    round trip; CPU bf16 autocast (forward and backward); ``channels_last``.
    """
    cfg = registry("generators").make_config(name, _options("generators", name, options))
    report = Report(f"generator '{name}'")
    declared = _declared_resolutions("generators", name, Generator)
    for r in _pick_resolutions(report, declared, resolutions):
        _generator_at(report, name, cfg, r, batch, text_dim)
    report.raise_for_failures()
    return report


def _generator_at(report: Report, name: str, cfg: Any, r: int, b: int, text_dim: int) -> None:
    def build(seed: int) -> Generator:
        g = _build("generators", name, cfg, seed, Generator, resolution=r, text_dim=text_dim)
        _set_phase(g, 0)
        return g

    g: Generator | None = None
    with report.check(f"builds at {r} px"):
        g = build(0)
        assert getattr(g, "resolution", None) == r, (
            f"g.resolution is {getattr(g, 'resolution', None)!r}, expected {r}"
        )
        assert getattr(g, "text_dim", None) == text_dim, (
            f"g.text_dim is {getattr(g, 'text_dim', None)!r}, expected {text_dim}"
        )
        z_dim = getattr(g, "z_dim", None)
        assert isinstance(z_dim, int) and not isinstance(z_dim, bool) and z_dim >= 1, (
            f"g.z_dim must be a positive int, got {z_dim!r}"
        )
    if g is None:
        report.skipped.append(f"the other checks at {r} px (it does not build)")
        return

    shape = (b, 3, r, r)
    z, text = _randn((b, g.z_dim), 1), _randn((b, text_dim), 2)
    z2, text2 = _randn((b, g.z_dim), 3), _randn((b, text_dim), 4)
    weights = _randn(shape, 5)

    def objective(m: nn.Module) -> Tensor:
        return (m(z, text).float() * weights).sum()

    with report.check(f"output at {r} px"):
        g.train()
        for seen in _phases(g):
            _set_phase(g, seen)
            with torch.no_grad():
                _assert_image(g(z, text), shape, z.dtype, _where(g, seen))
        g.eval()
        _set_phase(g, 0)
        with torch.no_grad():
            _assert_image(g(z, text), shape, z.dtype, " in eval mode")
            # large inputs saturate the last layer: a generator in range by luck of its init is caught here
            big = g.train()(z * 10, text * 10).detach().float()
        big = big[torch.isfinite(big)]
        if big.numel():
            lo, hi = big.min().item(), big.max().item()
            assert lo >= -1 - 1e-5 and hi <= 1 + 1e-5, (
                f"output range [{lo:.3g}, {hi:.3g}] for large inputs (z and text x 10) exceeds [-1, 1] "
                f"(finish with tanh or a clamp)"
            )

    with report.check(f"gradients at {r} px"):
        _assert_gradients(_perturbed(g).train(), objective, _phases(g))

    with report.check(f"text and noise change the output at {r} px"):
        m = _perturbed(g).eval()
        for seen in sorted({0, _final(m)}):
            _set_phase(m, seen)
            with torch.no_grad():
                base, other_text, other_noise = m(z, text), m(z, text2), m(z2, text)
            _comparable(base, other_text, other_noise)
            d_text, d_noise = _max_diff(base, other_text), _max_diff(base, other_noise)
            assert d_text > _DIFFERS, (
                f"the output does not depend on the text embedding{_where(m, seen)} (the caption is ignored)"
            )
            assert d_noise > _DIFFERS, f"the output does not depend on the noise z{_where(m, seen)}"

    with report.check(f"deterministic under a seed at {r} px"):
        a, c = build(7), build(7)
        _assert_same_weights(a, c, 7)
        out_a, out_c = _same_under_seed(lambda: a(z, text), lambda: c(z, text), 11)
        _comparable(out_a, out_c)
        assert torch.equal(out_a, out_c), (
            f"two builds under torch.manual_seed(7), called under torch.manual_seed(11) on the same input, "
            f"give different outputs (max difference {_max_diff(out_a, out_c):.3g}): "
            f"draw randomness from torch's RNG, "
            f"not from random, numpy or the clock"
        )

    with report.check(f"state-dict round trip at {r} px"):
        src, dst = build(3), build(4)
        _set_phase(src, _final(src))
        with torch.no_grad():
            src.train()(z, text)  # move running statistics off their initial values
        _set_phase(dst, _final(dst))
        _round_trip(src, dst)
        src.eval(), dst.eval()
        out_src, out_dst = _same_under_seed(lambda: src(z, text), lambda: dst(z, text), 13)
        _comparable(out_src, out_dst)
        assert torch.allclose(out_src, out_dst, rtol=1e-5, atol=1e-6), (
            f"a fresh instance loaded with the state_dict gives different outputs in eval mode "
            f"(max difference {_max_diff(out_src, out_dst):.3g}): state that changes the output "
            f"is not in state_dict (register it as a buffer)"
        )

    with report.check(f"CPU bf16 autocast at {r} px"):
        m = copy.deepcopy(g).eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(z, text)
        _assert_image(out, shape, None, " under bf16 autocast", tol=1e-2)
        m.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = (m(z, text).float() * weights).sum()
        loss.backward()
        bad = [n for n, p in m.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients under bf16 autocast: {_names(bad)}"

    with report.check(f"channels_last at {r} px"):
        ref = copy.deepcopy(g).eval()
        cl = copy.deepcopy(g).to(memory_format=torch.channels_last).eval()
        with torch.no_grad():
            a_out, b_out = ref(z, text), cl(z, text)
        _comparable(a_out, b_out)
        _assert_image(b_out, shape, z.dtype, " with channels_last weights")
        assert torch.allclose(a_out, b_out, rtol=1e-4, atol=1e-4), (
            f"channels_last weights change the output (max difference {_max_diff(a_out, b_out):.3g})"
        )
        cl.train()
        (cl(z, text).float() * weights).sum().backward()


# --------------------------------------------------------------------------------------------------
# Discriminators


@_restores_rng
def check_discriminator(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    resolutions: Sequence[int] | None = None,
    batch: int = 2,
    text_dim: int = 16,
) -> Report:
    """Check registered discriminator ``name`` (built with ``options`` over its ``test_options``).

    At each resolution: a :class:`DiscOutput` with finite ``(B,)`` logits, a list of features (non-empty
    when ``provides_features``), ``mismatched_logits`` exactly when mismatched text is given; gradients
    reach every trainable parameter and the input image; the text and the image change the logits;
    determinism under a seed; state-dict round trip; CPU bf16 autocast; ``channels_last`` input.
    """
    cfg = registry("discriminators").make_config(name, _options("discriminators", name, options))
    report = Report(f"discriminator '{name}'")
    declared = _declared_resolutions("discriminators", name, Discriminator)
    for r in _pick_resolutions(report, declared, resolutions):
        _discriminator_at(report, name, cfg, r, batch, text_dim)
    report.raise_for_failures()
    return report


def _assert_disc_output(out: Any, b: int, d: Discriminator, where: str, mismatched: bool) -> None:
    assert isinstance(out, DiscOutput), f"returned {type(out).__name__}{where}, expected a t2i DiscOutput"
    logits = out.logits
    assert isinstance(logits, Tensor), f"logits are a {type(logits).__name__}{where}, expected a Tensor"
    assert tuple(logits.shape) == (b,), (
        f"logits shape {tuple(logits.shape)}{where}, expected ({b},): one logit per image"
    )
    assert logits.is_floating_point(), f"logits dtype {logits.dtype}{where}, expected a float dtype"
    _assert_finite(logits, f"logits{where}")
    assert isinstance(out.features, list), (
        f"features is a {type(out.features).__name__}{where}, expected a list"
    )
    if d.provides_features:
        assert out.features, (
            f"features is empty{where} but the discriminator declares provides_features = True"
        )
    for i, f in enumerate(out.features):
        assert isinstance(f, Tensor) and f.shape[:1] == (b,), f"features[{i}]{where} is not a (B, ...) tensor"
        _assert_finite(f, f"features[{i}]{where}")
    if mismatched:
        m = out.mismatched_logits
        assert m is not None, f"mismatched_logits is None{where} although mismatched_text was given"
        assert isinstance(m, Tensor) and tuple(m.shape) == (b,), (
            f"mismatched_logits shape {tuple(getattr(m, 'shape', ()))}{where}, expected ({b},)"
        )
        _assert_finite(m, f"mismatched_logits{where}")
    else:
        assert out.mismatched_logits is None, (
            f"mismatched_logits is set{where} although no mismatched_text was given"
        )


def _discriminator_at(report: Report, name: str, cfg: Any, r: int, b: int, text_dim: int) -> None:
    def build(seed: int) -> Discriminator:
        d = _build("discriminators", name, cfg, seed, Discriminator, resolution=r, text_dim=text_dim)
        _set_phase(d, 0)
        return d

    d: Discriminator | None = None
    with report.check(f"builds at {r} px"):
        d = build(0)
        assert getattr(d, "resolution", None) == r, (
            f"d.resolution is {getattr(d, 'resolution', None)!r}, expected {r}"
        )
        assert getattr(d, "text_dim", None) == text_dim, (
            f"d.text_dim is {getattr(d, 'text_dim', None)!r}, expected {text_dim}"
        )
    if d is None:
        report.skipped.append(f"the other checks at {r} px (it does not build)")
        return

    image = torch.tanh(_randn((b, 3, r, r), 1))
    image2 = torch.tanh(_randn((b, 3, r, r), 2))
    text, text2 = _randn((b, text_dim), 3), _randn((b, text_dim), 4)
    mismatched = text.roll(1, 0)
    w_logits, w_mismatched = _randn((b,), 5), _randn((b,), 6)

    def objective_on(x: Tensor) -> Callable[[nn.Module], Tensor]:
        def objective(m: nn.Module) -> Tensor:
            out = m(x, text, mismatched_text=mismatched)
            total = (out.logits.float() * w_logits).sum() + (
                out.mismatched_logits.float() * w_mismatched
            ).sum()
            for i, f in enumerate(out.features):
                total = total + (f.float() * _randn(f.shape, 100 + i)).sum() / math.sqrt(f.numel())
            return total

        return objective

    with report.check(f"output at {r} px"):
        d.train()
        for seen in _phases(d):
            _set_phase(d, seen)
            with torch.no_grad():
                where = _where(d, seen)
                _assert_disc_output(d(image, text), b, d, where, mismatched=False)
                _assert_disc_output(d(image, text, mismatched_text=mismatched), b, d, where, mismatched=True)
        d.eval()
        _set_phase(d, 0)
        with torch.no_grad():
            _assert_disc_output(
                d(image, text, mismatched_text=mismatched), b, d, " in eval mode", mismatched=True
            )

    with report.check(f"gradients at {r} px"):
        x = image.clone().requires_grad_(True)
        _assert_gradients(_perturbed(d).train(), objective_on(x), _phases(d))
        assert x.grad is not None and x.grad.abs().sum() > 0, (
            "no gradient reaches the input image (gradient penalties and G's updates need it)"
        )
        _assert_finite(x.grad, "the gradient w.r.t. the input image")

    with report.check(f"text and image change the logits at {r} px"):
        m = _perturbed(d).eval()
        for seen in sorted({0, _final(m)}):
            _set_phase(m, seen)
            with torch.no_grad():
                out = m(image, text, mismatched_text=mismatched)
                other_text, other_image = m(image, text2).logits, m(image2, text).logits
            _comparable(out.logits, out.mismatched_logits, other_text, other_image)
            d_text = _max_diff(out.logits, other_text)
            d_image = _max_diff(out.logits, other_image)
            d_mismatch = _max_diff(out.logits, out.mismatched_logits)
            assert d_text > _DIFFERS, (
                f"the logits do not depend on the text embedding{_where(m, seen)} (the caption is ignored)"
            )
            assert d_mismatch > _DIFFERS, (
                f"mismatched_logits equal the logits{_where(m, seen)}: mismatched_text is ignored"
            )
            assert d_image > _DIFFERS, f"the logits do not depend on the image{_where(m, seen)}"

    with report.check(f"deterministic under a seed at {r} px"):
        a, c = build(7), build(7)
        _assert_same_weights(a, c, 7)
        out_a, out_c = _same_under_seed(lambda: a(image, text).logits, lambda: c(image, text).logits, 11)
        _comparable(out_a, out_c)
        assert torch.equal(out_a, out_c), (
            f"two builds under torch.manual_seed(7), called under torch.manual_seed(11) on the same input, "
            f"give different logits (max difference {_max_diff(out_a, out_c):.3g}): "
            f"draw randomness from torch's RNG"
        )

    with report.check(f"state-dict round trip at {r} px"):
        src, dst = build(3), build(4)
        _set_phase(src, _final(src))
        with torch.no_grad():
            src.train()(image, text)  # move running statistics (and spectral-norm vectors) off their init
        _set_phase(dst, _final(dst))
        _round_trip(src, dst)
        src.eval(), dst.eval()
        out_src, out_dst = _same_under_seed(
            lambda: src(image, text, mismatched_text=mismatched),
            lambda: dst(image, text, mismatched_text=mismatched),
            13,
        )
        for what in ("logits", "mismatched_logits"):
            x_src, x_dst = getattr(out_src, what), getattr(out_dst, what)
            _comparable(x_src, x_dst)
            assert torch.allclose(x_src, x_dst, rtol=1e-5, atol=1e-6), (
                f"a fresh instance loaded with the state_dict gives different {what} in eval mode "
                f"(max difference "
                f"{_max_diff(x_src, x_dst):.3g}): state that changes the output is not in state_dict"
            )

    with report.check(f"CPU bf16 autocast at {r} px"):
        m = copy.deepcopy(d).eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(image, text, mismatched_text=mismatched)
        _assert_disc_output(out, b, m, " under bf16 autocast", mismatched=True)
        m.train()
        x = image.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = objective_on(x)(m)
        loss.backward()
        bad = [n for n, p in m.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients under bf16 autocast: {_names(bad)}"

    with report.check(f"channels_last at {r} px"):
        ref = copy.deepcopy(d).eval()
        cl = copy.deepcopy(d).to(memory_format=torch.channels_last).eval()
        x_cl = image.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            a_out, b_out = ref(image, text).logits, cl(x_cl, text).logits
        _comparable(a_out, b_out)
        assert torch.allclose(a_out, b_out, rtol=1e-4, atol=1e-4), (
            f"a channels_last input changes the logits (max difference {_max_diff(a_out, b_out):.3g})"
        )
        cl.train()
        objective_on(x_cl.clone().requires_grad_(True))(cl).backward()


# --------------------------------------------------------------------------------------------------
# Text encoders

_CAPTIONS = (
    "a small red circle in the top left on a white background",
    "a large blue square in the center on a black background",
    "a green triangle at the bottom right on a grey background",
    "a yellow cross in the middle on a blue background",
    "a large magenta circle on a black background",
    "a small cyan square at the top on a white background",
)


@_restores_rng
def check_text_encoder(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    captions: Sequence[str] = _CAPTIONS,
) -> Report:
    """Check registered text encoder ``name``: ``fit`` / ``tokenize`` / ``forward`` give ``(N, dim)``
    finite float embeddings, different captions differ, rows are independent of the batch, unseen words
    are accepted, ``encode`` agrees; gradients when ``trainable``; ``extra_state`` is JSON and round-trips
    with ``state_dict``; determinism under a seed; CPU bf16 autocast."""
    cfg = registry("text_encoders").make_config(name, _options("text_encoders", name, options))
    report = Report(f"text encoder '{name}'")
    captions = list(captions)
    n = len(captions)

    def build(seed: int) -> TextEncoder:
        enc = _build("text_encoders", name, cfg, seed, TextEncoder)
        enc.fit(captions)
        _set_phase(enc, 0)
        return enc

    enc: TextEncoder | None = None
    with report.check("builds and fits"):
        enc = build(0)
        assert isinstance(enc.dim, int) and not isinstance(enc.dim, bool) and enc.dim >= 1, (
            f"dim must be a positive int, got {enc.dim!r}"
        )
        assert isinstance(enc.trainable, bool), f"trainable must be a bool, got {enc.trainable!r}"
    if enc is None:
        report.skipped.append("the other checks (it does not build)")
        report.raise_for_failures()
        return report

    with report.check("embeddings"):
        enc.eval()
        tokens = enc.tokenize(captions)
        assert isinstance(tokens, Tensor) and tokens.shape[:1] == (n,), (
            "tokenize must return a tensor with one row per caption"
        )
        with torch.no_grad():
            emb = enc(tokens)
            assert isinstance(emb, Tensor) and tuple(emb.shape) == (n, enc.dim), (
                f"embeddings shape {tuple(getattr(emb, 'shape', ()))}, expected ({n}, {enc.dim})"
            )
            assert emb.is_floating_point(), f"embeddings dtype {emb.dtype}, expected a float dtype"
            _assert_finite(emb, "the embeddings")
            assert _max_diff(emb[0], emb[1]) > _DIFFERS, "two different captions get the same embedding"
            idx = torch.tensor([3, 0, 3])
            assert torch.allclose(enc(tokens[idx]), emb[idx], rtol=1e-5, atol=1e-6), (
                "the embedding of a caption depends on the other rows of the batch "
                "(forward must map rows independently)"
            )
            assert torch.allclose(enc.encode(captions), emb, rtol=1e-5, atol=1e-6), (
                "encode(captions) differs from forward(tokenize(captions))"
            )
            unseen = enc(enc.tokenize(["zyxwv qwerty", ""]))
            _assert_finite(unseen, "the embedding of unseen words and of an empty caption")

    if enc.trainable:
        with report.check("gradients (trainable)"):
            m = _perturbed(enc).train()
            tokens = m.tokenize(captions)
            w = _randn((n, m.dim), 5)
            _assert_gradients(m, lambda mod: (mod(tokens).float() * w).sum(), (0,))
    else:
        report.skipped.append("gradients (frozen encoder: trainable = False)")

    with report.check("extra_state and state_dict round trip"):
        extra = enc.extra_state()
        try:
            extra = json.loads(json.dumps(extra))
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"extra_state() is not JSON-serialisable: {_one_line(exc)}") from None
        fresh = _build(
            "text_encoders", name, cfg, 4, TextEncoder
        )  # not fitted: rebuilt from the checkpoint only
        fresh.load_extra_state(extra)
        _round_trip(enc, fresh)
        fresh.eval()
        with torch.no_grad():
            a, c = enc(enc.tokenize(captions)), fresh(fresh.tokenize(captions))
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-6), (
            f"an unfitted instance restored from extra_state + state_dict embeds differently (max difference "
            f"{_max_diff(a, c):.3g}): keep what fit() learns in extra_state or in buffers"
        )

    with report.check("deterministic under a seed"):
        a_enc, c_enc = build(7), build(7)
        _assert_same_weights(a_enc, c_enc, 7)
        a_enc.eval(), c_enc.eval()
        with torch.no_grad():
            a, c = _same_under_seed(lambda: a_enc.encode(captions), lambda: c_enc.encode(captions), 11)
        assert torch.equal(a, c), (
            "two builds under torch.manual_seed(7), fitted on the same captions, embed differently"
        )

    with report.check("CPU bf16 autocast"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = enc(enc.tokenize(captions))
        assert tuple(out.shape) == (n, enc.dim), f"embeddings shape {tuple(out.shape)} under bf16 autocast"
        _assert_finite(out, "the embeddings under bf16 autocast")

    report.raise_for_failures()
    return report


# --------------------------------------------------------------------------------------------------
# The toy networks: the smallest valid generator and discriminator, partners for loss and engine checks


@dataclass
class ToyConfig:
    width: int = field(default=8, metadata={"help": "channels of every layer"})
    z_dim: int = field(default=8, metadata={"help": "size of the noise vector (generator)"})

    def __post_init__(self) -> None:
        if self.width < 1 or self.z_dim < 1:
            raise ValueError("width and z_dim must be >= 1")


class ToyGenerator(Generator):
    """[z; text] -> a 4x4 map -> (nearest x2 + conv3x3 + LeakyReLU) per doubling -> conv3x3 to RGB -> tanh."""

    resolutions = (8, 16, 32, 64, 128, 256)

    def __init__(self, cfg: ToyConfig | None = None, *, resolution: int = 32, text_dim: int = 16):
        super().__init__()
        cfg = cfg or ToyConfig()
        if resolution not in self.resolutions:
            raise ValueError(
                f"ToyGenerator supports resolutions {', '.join(map(str, self.resolutions))}; got {resolution}"
            )
        self.resolution, self.text_dim, self.z_dim, w = resolution, text_dim, cfg.z_dim, cfg.width
        self.fc = nn.Linear(cfg.z_dim + text_dim, w * 16)
        n_up = int(math.log2(resolution // 4))
        self.blocks = nn.ModuleList(nn.Conv2d(w, w, 3, 1, 1) for _ in range(n_up))
        self.to_rgb = nn.Conv2d(w, 3, 3, 1, 1)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        x = nn.functional.leaky_relu(self.fc(torch.cat([z, text], 1)), 0.2).view(z.shape[0], -1, 4, 4)
        for conv in self.blocks:
            x = nn.functional.leaky_relu(
                conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")), 0.2
            )
        return torch.tanh(self.to_rgb(x))


class ToyDiscriminator(Discriminator):
    """conv4x4 stride 2 + LeakyReLU down to 4x4 (the features), then a projection head on the pooled map."""

    resolutions = (8, 16, 32, 64, 128, 256)

    def __init__(self, cfg: ToyConfig | None = None, *, resolution: int = 32, text_dim: int = 16):
        super().__init__()
        cfg = cfg or ToyConfig()
        if resolution not in self.resolutions:
            raise ValueError(
                f"ToyDiscriminator supports resolutions {', '.join(map(str, self.resolutions))}; "
                f"got {resolution}"
            )
        self.resolution, self.text_dim, w = resolution, text_dim, cfg.width
        n_down = int(math.log2(resolution // 4))
        self.blocks = nn.ModuleList(nn.Conv2d(3 if i == 0 else w, w, 4, 2, 1) for i in range(n_down))
        self.out = nn.Linear(w, 1)
        self.embed = nn.Linear(text_dim, w, bias=False)

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        features, h = [], image
        for conv in self.blocks:
            h = nn.functional.leaky_relu(conv(h), 0.2)
            features.append(h)
        return h, features

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        pooled = h.mean(dim=(2, 3))
        return self.out(pooled).flatten() + (self.embed(text) * pooled).sum(dim=1)


class _ToyPlugin:
    """Registers the toy networks as ``testing-toy`` while a check needs them."""

    @hookimpl
    def t2i_register_generators(self, register: Callable[..., Any]) -> None:
        register(TOY, ToyGenerator, config=ToyConfig, help="The conformance kit's toy generator (tests only)")

    @hookimpl
    def t2i_register_discriminators(self, register: Callable[..., Any]) -> None:
        register(
            TOY,
            ToyDiscriminator,
            config=ToyConfig,
            help="The conformance kit's toy discriminator (tests only)",
        )


@contextlib.contextmanager
def _toys_registered() -> Iterator[None]:
    if get_plugin_manager().get_plugin(_TOY_PLUGIN) is not None:  # a check inside a check
        yield
        return
    register_plugin(_ToyPlugin(), name=_TOY_PLUGIN, distribution="t2i-core (t2i.testing)")
    try:
        yield
    finally:
        unregister_plugin(_TOY_PLUGIN)


# --------------------------------------------------------------------------------------------------
# Losses


def _is_adversarial(name: str, term: Any = None) -> bool:
    """Whether loss ``name`` is used as the adversarial loss (its registered role, else its class)."""
    entry = registry("losses").get(name)
    role = entry.metadata.get("role")
    if role is not None:
        return role == "adversarial"
    if term is not None:
        return isinstance(term, AdversarialLoss)
    return isinstance(entry.factory, type) and issubclass(entry.factory, AdversarialLoss)


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

    ``needs`` only names what the engine provides; the registered ``role`` matches the class; an
    adversarial loss's three functions are finite scalars that push the right way; in a D step and a G
    step built like the engine's (with the kit's toy networks, or the registered ``generator`` /
    ``discriminator``, which also default to the loss's ``test_generator`` / ``test_discriminator``
    metadata), ``d_loss`` and ``g_loss`` are ``None`` or finite scalars that carry gradients to D and G,
    and at least one applies; same value under a seed; bf16 logits; then, with ``train=True``, a short
    real run with the engine (:func:`check_training_step`).
    """
    losses = registry("losses")
    entry = losses.get(name)
    opts = _options("losses", name, options)
    cfg = losses.make_config(name, opts)
    generator = generator or entry.metadata.get("test_generator")
    discriminator = discriminator or entry.metadata.get("test_discriminator")
    report = Report(f"loss '{name}'")

    term: LossTerm | None = None
    with report.check("builds"):
        term = _build("losses", name, cfg, 0, LossTerm)
        needs = frozenset(term.needs)
        unknown = sorted(needs - KNOWN_NEEDS)
        assert not unknown, (
            f"needs names {', '.join(unknown)}, which the engine does not provide "
            f"({', '.join(sorted(KNOWN_NEEDS))})"
        )
        role = entry.metadata.get("role")
        if role == "adversarial":
            assert isinstance(term, AdversarialLoss), (
                "is registered with role='adversarial' but is not an AdversarialLoss"
            )
        if role == "term":
            assert not isinstance(term, AdversarialLoss), (
                "is an AdversarialLoss but registered with role='term'"
            )
    if term is None:
        report.skipped.append("the other checks (it does not build)")
        report.raise_for_failures()
        return report
    adversarial = _is_adversarial(name, term)

    if isinstance(term, AdversarialLoss):
        with report.check("adversarial functions"):
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
                assert term.d_real(high) < term.d_real(low), (
                    "d_real does not fall as the logits of real images rise"
                )
                assert term.d_fake(low) < term.d_fake(high), (
                    "d_fake does not fall as the logits of fake images fall"
                )
                assert term.g_fake(high) < term.g_fake(low), (
                    "g_fake does not fall as the logits of fake images rise"
                )

    with _toys_registered():
        g_name, d_name = generator or TOY, discriminator or TOY

        def step_values(
            seed: int, autocast: bool = False, check_grads: bool = False
        ) -> tuple[Tensor | None, Tensor | None]:
            return _loss_step(
                name,
                cfg,
                g_name,
                d_name,
                seed,
                batch,
                resolution,
                text_dim,
                adversarial,
                autocast,
                check_grads,
            )

        values: tuple[Tensor | None, Tensor | None] = (None, None)
        with report.check("a D step and a G step like the engine's"):
            values = step_values(0, check_grads=True)
            assert values != (None, None), "returns None from both d_loss and g_loss: it contributes nothing"
        if report.failed:
            report.skipped.append("the other checks (the loss fails in a step like the engine's)")
            report.raise_for_failures()

        with report.check("same value under a seed"):
            again = step_values(0)
            for which, a, c in zip(("d_loss", "g_loss"), values, again):
                if a is not None and c is not None:
                    assert torch.equal(a, c), (
                        f"{which} differs between two identical steps under torch.manual_seed(0)"
                    )

        with report.check("bf16 logits (CPU autocast)"):
            step_values(0, autocast=True)

        if train:
            with report.check("a real training step with the engine"):
                try:
                    check_training_step(g_name, d_name, loss=name, loss_options=opts, text_dim=text_dim)
                except UsageError as exc:
                    raise AssertionError(f"the engine refuses it with the kit's networks: {exc}") from None
        else:
            report.skipped.append("a real training step with the engine (train=False)")

    report.raise_for_failures()
    return report


def _assert_scalar(value: Any, what: str) -> None:
    assert isinstance(value, Tensor), (
        f"{what} returned {type(value).__name__}, expected a scalar Tensor or None"
    )
    assert value.dim() == 0, (
        f"{what} returned shape {tuple(value.shape)}, expected a scalar (reduce over the batch)"
    )
    assert value.is_floating_point(), f"{what} returned dtype {value.dtype}, expected a float"
    assert torch.isfinite(value.detach()).all(), f"{what} is not finite ({value.item()})"


def _loss_step(
    name: str,
    cfg: Any,
    g_name: str,
    d_name: str,
    seed: int,
    b: int,
    r: int,
    text_dim: int,
    adversarial_role: bool,
    autocast: bool,
    check_grads: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """One D step and one G step's loss values for term ``name``, computed as the engine computes them."""
    from .losses import HingeLoss

    term = _build("losses", name, cfg, seed, LossTerm)
    G = _build(
        "generators", g_name, _config("generators", g_name), seed, Generator, resolution=r, text_dim=text_dim
    )
    D = _build(
        "discriminators",
        d_name,
        _config("discriminators", d_name),
        seed,
        Discriminator,
        resolution=r,
        text_dim=text_dim,
    )
    adversarial = term if adversarial_role and isinstance(term, AdversarialLoss) else HingeLoss()
    for component in (G, D, term, adversarial):
        component.on_train_step(0, 0)
    needs = frozenset(term.needs) | frozenset(adversarial.needs)
    if "features" in needs:
        assert D.provides_features, f"needs features, which discriminator '{d_name}' does not provide"
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand(b, 3, r, r, generator=gen) * 2 - 1
    text = torch.randn(b, text_dim, generator=gen)
    z = torch.randn(b, G.z_dim, generator=gen)

    # D step
    torch.manual_seed(seed)
    mismatched = text.roll(1, 0) if "mismatched" in needs else None
    with torch.no_grad(), ctx():
        fake = G(z, text)
    real_d = real.detach().requires_grad_(True) if "real_grad" in needs else real
    with ctx():
        real_out, fake_out = D(real_d, text, mismatched), D(fake, text)
    d_value = term.d_loss(StepOutputs(real_out, fake_out, real_d, fake, text, adversarial, D, G, 0))
    if d_value is not None:
        _assert_scalar(d_value, "d_loss")
        if check_grads:
            assert d_value.requires_grad, (
                "d_loss does not depend on the discriminator (it cannot train anything)"
            )
            D.zero_grad(set_to_none=True)
            d_value.backward()
            grads = [p.grad for p in D.parameters() if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), (
                "d_loss carries no gradient to the discriminator"
            )
            assert all(torch.isfinite(g).all() for g in grads), (
                "d_loss gives the discriminator non-finite gradients"
            )
        d_value = d_value.detach()

    # G step (D's parameters frozen, as in the engine)
    torch.manual_seed(seed + 1)
    for p in D.parameters():
        p.requires_grad_(False)
    with ctx():
        fake = G(z, text)
        fake_out = D(fake, text)
        real_out = None
        if "real_in_g_step" in needs:
            with torch.no_grad():
                real_out = D(real, text)
    g_value = term.g_loss(StepOutputs(real_out, fake_out, real, fake, text, adversarial, D, G, 0))
    if g_value is not None:
        _assert_scalar(g_value, "g_loss")
        if check_grads:
            assert g_value.requires_grad, "g_loss does not depend on the generator (it cannot train anything)"
            g_value.backward()
            grads = [p.grad for p in G.parameters() if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), (
                "g_loss carries no gradient to the generator"
            )
            assert all(torch.isfinite(g).all() for g in grads), (
                "g_loss gives the generator non-finite gradients"
            )
        g_value = g_value.detach()
    return d_value, g_value


def _config(kind: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
    return registry(kind).make_config(name, _options(kind, name, options))


# --------------------------------------------------------------------------------------------------
# Data sets

_SIZE_FIELDS = ("size", "max_images", "num_images", "n_images", "limit")


def _small_data_options(name: str, train: int, test: int) -> dict[str, Any] | None:
    """The data set's ``test_options``, else its size fields set small, else ``None`` (cannot shrink)."""
    declared = default_options("datasets", name)
    if declared:
        return declared
    entry = registry("datasets").get(name)
    if entry.config is None or not dataclasses.is_dataclass(entry.config):
        return None
    names = {f.name for f in dataclasses.fields(entry.config)}
    splits = getattr(entry.factory, "splits", Dataset.splits)
    sized = {f"{s}_size": (train if s == "train" else test) for s in splits if f"{s}_size" in names}
    sized.update({f: test for f in _SIZE_FIELDS if f in names})
    return sized or None


def _skip(report: Report, reason: str) -> None:
    report.skipped.append(reason)
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(f"{report.component}: {reason}")
    warnings.warn(f"{report.component}: {reason}", stacklevel=3)


@_restores_rng
def check_dataset(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    resolution: int = 32,
    size: int = 16,
) -> Report:
    """Check registered data set ``name`` on tiny splits: ``CaptionedImages`` with uint8 ``(N, R, R, 3)``
    images, captions and consistent caption ids and counts, attribute codes in range; the same data twice;
    an unknown split is a :class:`UsageError`.

    The splits are shrunk with the data set's ``test_options``, or its ``<split>_size`` / ``size`` options
    set to ``size``; a data set with neither is only built, and its loading is skipped (``pytest.skip``
    under pytest, a warning otherwise), since loading it could take long or need a download.
    """
    small = _small_data_options(name, size, size) if options is None else _options("datasets", name, options)
    report = Report(f"data set '{name}'")
    reg = registry("datasets")
    cfg = reg.make_config(name, small or {})

    data: Dataset | None = None
    with report.check("builds"):
        data = _build("datasets", name, cfg, 0, Dataset)
        splits = data.splits
        assert isinstance(splits, tuple) and splits and all(isinstance(s, str) for s in splits), (
            f"splits must be a non-empty tuple of names, got {splits!r}"
        )
        line = data.describe()
        assert isinstance(line, str) and line and "\n" not in line, (
            f"describe() must return one line, got {line!r}"
        )
    if data is None:
        report.raise_for_failures()
        return report
    if small is None:
        report.raise_for_failures()
        _skip(report, "loading (no test_options and no size options to load a tiny split with)")
        return report

    for split in data.splits:
        with report.check(f"split '{split}' at {resolution} px"):
            first = data.load(split, resolution)
            _assert_split(first, resolution)
            again = _build("datasets", name, cfg, 1, Dataset).load(split, resolution)
            assert torch.equal(first.images, again.images) and first.captions == again.captions, (
                "loading the same split twice gives different images or captions"
            )
    with report.check("an unknown split is a UsageError"):
        try:
            data.load("no-such-split", resolution)
        except UsageError:
            pass
        else:
            raise AssertionError("load('no-such-split') did not raise t2i.errors.UsageError")
    report.raise_for_failures()
    return report


def _assert_split(d: Any, r: int) -> None:
    assert isinstance(d, CaptionedImages), f"load returned {type(d).__name__}, expected CaptionedImages"
    img = d.images
    assert isinstance(img, Tensor) and img.dtype == torch.uint8, (
        f"images must be a uint8 tensor, got {getattr(img, 'dtype', type(img))}"
    )
    assert img.dim() == 4 and tuple(img.shape[1:]) == (r, r, 3), (
        f"images shape {tuple(img.shape)}, expected (N, {r}, {r}, 3)"
    )
    n = img.shape[0]
    assert n >= 1, "the split is empty"
    assert d.captions and all(isinstance(c, str) and c.strip() for c in d.captions), (
        "captions must be non-empty strings"
    )
    ids, counts = d.caption_ids, d.caption_counts
    assert ids.dtype == torch.int64 and ids.dim() == 2 and ids.shape[0] == n and ids.shape[1] >= 1, (
        f"caption_ids must be int64 (N, K), got {ids.dtype} {tuple(ids.shape)}"
    )
    assert tuple(counts.shape) == (n,), f"caption_counts shape {tuple(counts.shape)}, expected ({n},)"
    assert int(counts.min()) >= 1 and int(counts.max()) <= ids.shape[1], "caption_counts must be in 1..K"
    used = torch.arange(ids.shape[1])[None, :] < counts[:, None]
    assert bool(((ids >= 0) & (ids < len(d.captions)))[used].all()), (
        "caption_ids index outside the captions list"
    )
    assert bool((ids[~used] == -1).all()), "caption_ids beyond caption_counts must be padded with -1"
    for key, codes in d.attributes.items():
        assert codes.dtype == torch.int64 and tuple(codes.shape) == (n,), (
            f"attribute '{key}' must be int64 ({n},)"
        )
        values = d.attribute_values.get(key)
        if values is not None:
            assert int(codes.min()) >= 0 and int(codes.max()) < len(values), (
                f"attribute '{key}' has codes outside attribute_values"
            )


# --------------------------------------------------------------------------------------------------
# Metrics


def _synthetic_split(n: int, r: int) -> CaptionedImages:
    gen = torch.Generator().manual_seed(0)
    captions = [f"caption {i}" for i in range(n)]
    return CaptionedImages(
        images=torch.randint(0, 256, (n, r, r, 3), generator=gen, dtype=torch.uint8),
        captions=captions,
        caption_ids=torch.arange(n, dtype=torch.int64)[:, None],
        caption_counts=torch.ones(n, dtype=torch.int64),
        info={"name": "synthetic", "split": "test", "resolution": r},
    )


@_restores_rng
def check_metric(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    evaluate: bool | None = None,
    resolution: int = 32,
    size: int = 16,
    dataset: str = "shapes",
) -> Report:
    """Check registered metric ``name``: it builds with its (test) options and declares a bool
    ``higher_is_better``. With ``evaluate`` (default: the registration's ``test_evaluate`` metadata, else
    off, since a metric may train or download an evaluator): ``evaluate`` on a tiny reference split of
    ``dataset`` (or synthetic images) with a seeded random generator returns JSON-able
    ``{key: finite number, ..., "protocol": {...}}`` (the engine logs each key as ``<metric>/<key>``),
    the same numbers twice."""
    reg = registry("metrics")
    entry = reg.get(name)
    cfg = reg.make_config(name, _options("metrics", name, options))
    report = Report(f"metric '{name}'")
    metric: Metric | None = None
    with report.check("builds"):
        metric = _build("metrics", name, cfg, 0, Metric)
        assert isinstance(metric.higher_is_better, bool), (
            f"higher_is_better must be a bool, got {metric.higher_is_better!r}"
        )
    if evaluate is None:
        evaluate = bool(entry.metadata.get("test_evaluate", False))
    if metric is None or not evaluate:
        if metric is not None:
            report.skipped.append(
                "evaluate (not asked for: pass evaluate=True or register with test_evaluate=True)"
            )
        report.raise_for_failures()
        return report

    reference = _synthetic_split(size, resolution)
    if dataset in registry("datasets"):
        small = _small_data_options(dataset, size, size)
        if small is not None:
            reference = registry("datasets").create(dataset, small).load("test", resolution)

    def generate(captions: Sequence[str]) -> Tensor:
        assert isinstance(captions, Sequence) and all(isinstance(c, str) for c in captions), (
            "evaluate called generate() with something other than a list of caption strings"
        )
        gen = torch.Generator().manual_seed(len(captions))
        return torch.randint(
            0, 256, (len(captions), resolution, resolution, 3), generator=gen, dtype=torch.uint8
        )

    def run() -> dict[str, Any]:
        torch.manual_seed(0)
        return _build("metrics", name, cfg, 0, Metric).evaluate(generate, reference)

    with report.check(f"evaluate on {len(reference)} reference images"):
        result = run()
        assert isinstance(result, dict), f"evaluate returned {type(result).__name__}, expected a dict"
        assert isinstance(result.get("protocol"), dict), (
            "evaluate's result has no 'protocol' dict (what makes the figure reproducible)"
        )
        numbers = {k: v for k, v in result.items() if k != "protocol"}
        assert numbers, "evaluate's result holds no value besides the protocol"
        odd = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        assert not odd, (
            f"values other than the protocol must be numbers (the engine logs them as floats): "
            f"{', '.join(odd)}"
        )
        bad = [k for k, v in numbers.items() if not math.isfinite(v)]
        assert not bad, f"non-finite values: {', '.join(bad)}"
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"the result is not JSON-serialisable: {_one_line(exc)}") from None
        again = run()
        assert {k: again.get(k) for k in numbers} == numbers, (
            "two evaluations under the same seed give different numbers"
        )
    report.raise_for_failures()
    return report


# --------------------------------------------------------------------------------------------------
# A real training step with the engine


def _partner(kind: str, progressive: bool, resolution_hint: Sequence[int]) -> str:
    """The toy network, or for a progressive component the first registered progressive partner."""
    if not progressive:
        return TOY
    base = Generator if kind == "generators" else Discriminator
    for name in registry(kind).names():
        grows = getattr(registry(kind).get(name).factory, "progressive", False)
        if grows and set(_declared_resolutions(kind, name, base)) & set(resolution_hint):
            return name
    return TOY  # none installed: the engine refuses the pair with a one-line UsageError


@_restores_rng
def check_training_step(
    generator: str | None = None,
    discriminator: str | None = None,
    *,
    generator_options: Mapping[str, Any] | None = None,
    discriminator_options: Mapping[str, Any] | None = None,
    loss: str | None = None,
    loss_options: Mapping[str, Any] | None = None,
    resolution: int | None = None,
    steps: int = 2,
    batch_size: int = 8,
    text_dim: int = 16,
    run_dir: str | Path | None = None,
    **overrides: Any,
) -> Any:
    """Train ``generator`` against ``discriminator`` for ``steps`` real engine steps on a tiny Shapes split.

    A network left out is the kit's toy one (for a progressive network: a registered progressive
    partner). Options are merged over each component's ``test_options``. ``loss`` adds a registered loss:
    as the adversarial loss if its role is ``adversarial``, else as a term of weight 1. The resolution is
    32 px if both networks declare it, else the smallest they share. ``overrides`` are raw config
    sections merged last (``train={"precision": "bf16"}``, ``data={"name": "mydata"}``).

    Asserts status ``finished``, finite logged losses and that both networks' weights changed. A
    combination the engine refuses raises its :class:`UsageError` (one line), so a caller can skip it.
    Returns the :class:`~t2i.engine.trainer.RunResult` (the run folder is a temporary one unless
    ``run_dir`` is given).
    """
    from .config import ExperimentConfig, merge, resolve
    from .engine.trainer import Trainer

    with _toys_registered():
        if generator is None:
            d_prog = discriminator is not None and getattr(
                registry("discriminators").get(discriminator).factory, "progressive", False
            )
            hint = (
                _declared_resolutions("discriminators", discriminator, Discriminator)
                if discriminator
                else (32,)
            )
            generator = _partner("generators", d_prog, hint)
        if discriminator is None:
            g_prog = getattr(registry("generators").get(generator).factory, "progressive", False)
            discriminator = _partner(
                "discriminators", g_prog, _declared_resolutions("generators", generator, Generator)
            )
        g_res = _declared_resolutions("generators", generator, Generator)
        d_res = _declared_resolutions("discriminators", discriminator, Discriminator)
        if resolution is None:
            shared = sorted(set(g_res) & set(d_res))
            resolution = 32 if 32 in shared else (shared[0] if shared else g_res[0])
        label = (
            f"training step of generator '{generator}' with discriminator '{discriminator}' "
            f"at {resolution} px"
        )

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
        if loss is not None:
            if _is_adversarial(loss):
                raw["loss"] = {"adversarial": loss, "options": _options("losses", loss, loss_options)}
            else:
                raw["loss"] = {"terms": {loss: 1.0}}
                opts = _options("losses", loss, loss_options)
                if opts:
                    raw["loss"]["term_options"] = {loss: opts}
        if any(f.name == "eval" for f in dataclasses.fields(ExperimentConfig)):
            raw["eval"] = {"metrics": []}  # no evaluation after two steps
        raw = merge(raw, overrides)
        data_name = raw["data"]["name"]
        if not raw["data"]["options"]:
            raw["data"]["options"] = _small_data_options(data_name, 8 * batch_size, 2 * batch_size) or {}
        enc_name = raw["text_encoder"]["name"]
        enc_opts = {**default_options("text_encoders", enc_name), **raw["text_encoder"]["options"]}
        enc_cfg = registry("text_encoders").get(enc_name).config
        if enc_cfg is not None and "dim" in {f.name for f in dataclasses.fields(enc_cfg)}:
            enc_opts.setdefault("dim", text_dim)
        raw["text_encoder"]["options"] = enc_opts
        cfg = resolve(raw)

        with contextlib.ExitStack() as stack:
            folder = (
                Path(run_dir)
                if run_dir is not None
                else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="t2i-check-")))
            )
            trainer = Trainer(
                cfg, folder / "run" if run_dir is None else folder, quiet=True, tensorboard=False
            )  # UsageError: refused
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
            assert any(not torch.equal(a, p) for a, p in zip(g0, trainer.G.parameters())), (
                f"{label}: the generator's weights did not change"
            )
            assert any(not torch.equal(a, p) for a, p in zip(d0, trainer.D.parameters())), (
                f"{label}: the discriminator's weights did not change"
            )
    return result


# --------------------------------------------------------------------------------------------------
# One entry point per kind

CHECKS: dict[str, Callable[..., Report]] = {
    "generators": check_generator,
    "discriminators": check_discriminator,
    "text_encoders": check_text_encoder,
    "losses": check_loss,
    "datasets": check_dataset,
    "metrics": check_metric,
}


def check_component(kind: str, name: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> Report:
    """Run the check of ``kind`` (``"generators"``, ``"losses"``, ...) on ``name``."""
    if kind not in CHECKS:
        raise KeyError(f"unknown component kind {kind!r}; kinds: {', '.join(CHECKS)}")
    return CHECKS[kind](name, options, **kwargs)
