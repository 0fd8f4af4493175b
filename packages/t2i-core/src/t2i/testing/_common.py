"""What every check shares: the :class:`Report`, the registry side (names, test options, building) and
small assertions about modules and tensors."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import functools
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from ..options import check_config_class
from ..interfaces import AdversarialLoss, Discriminator, Generator, LossTerm, TextEncoder, loss_role
from ..plugins import load_errors, registry
from ..registry import KINDS

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


def _comparable(*tensors: Tensor | None) -> None:
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
# The registry side: names, test options, building


def registered(kind: str, pattern: str = "*", *, plugin: str | None = None) -> list[str]:
    """Names registered for ``kind`` (``"generators"``, ``"losses"``, ...), naturally sorted; never empty.

    ``pattern`` filters with fnmatch (``"sa*"``); ``plugin`` keeps the components of one distribution
    (``"t2i-sagan"``).

    Meant for ``@pytest.mark.parametrize("name", registered("generators", "mine*"))``: collected when
    the tests are, so a component installed later is covered by the same test. When nothing matches,
    it fails (under pytest, a collection error; otherwise a :class:`LookupError`) saying what to check,
    instead of returning ``[]``, which pytest would turn into a skipped test and a green run that
    checked nothing. To list names without failing, use ``t2i.registry(kind).names(pattern)``.
    """
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, list(KINDS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        _fail(f"kit.registered({kind!r}): unknown kind; {hint}kinds: {', '.join(KINDS)}")
    reg = registry(kind)
    names = reg.names(pattern)
    if plugin is not None:
        names = [n for n in names if _same_distribution(reg.get(n).plugin, plugin)]
    if not names:
        _fail(_nothing_registered(kind, pattern, plugin))
    return names


def _same_distribution(a: str, b: str) -> bool:
    return a.strip().lower().replace("_", "-") == b.strip().lower().replace("_", "-")


def _nothing_registered(kind: str, pattern: str, plugin: str | None) -> str:
    """What to check when :func:`registered` matches nothing: one line."""
    noun = KINDS[kind][0]
    asked = repr(kind) + (f", {pattern!r}" if pattern != "*" else "")
    asked += f", plugin={plugin!r}" if plugin else ""
    installed = registry(kind).names()
    known = ", ".join(installed) if installed else "none"
    where = f" of distribution '{plugin}'" if plugin else ""
    failed = load_errors()
    errors = (
        "; plugins that failed to load: "
        + "; ".join(f"{p.name} ({p.distribution}): {p.error}" for p in failed)
        if failed else ""
    )
    pattern_hint = f"the name pattern {pattern!r}; " if pattern != "*" else ""
    plugin_hint = f"the distribution name {plugin!r} (as `t2i plugins` shows it); " if plugin else ""
    return (
        f"kit.registered({asked}) matches no registered {noun}{where}, so the tests parametrized over it "
        f"would check nothing. Registered {kind}: {known}{errors}. Check {pattern_hint}{plugin_hint}that the "
        f"plugin's distribution is installed in this environment (`pip install -e .`, then `t2i plugins`); "
        f"and that its pyproject.toml declares the plugin module in the entry point group `t2i` "
        f"([project.entry-points.t2i] name = \"my_package.plugin\")"
    )


def _fail(message: str) -> NoReturn:
    """Fail a selector: under pytest a failure without traceback (a collection error when collecting),
    else a :class:`LookupError`."""
    if "pytest" in sys.modules:
        import pytest

        pytest.fail(message, pytrace=False)
    raise LookupError(message)


def default_options(kind: str, name: str) -> dict[str, Any]:
    """The small options ``name`` declared for tests (``register(..., test_options={...})``), or ``{}``."""
    return dict(registry(kind).get(name).metadata.get("test_options") or {})


def _options(kind: str, name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` merged over the component's ``test_options``."""
    return {**default_options(kind, name), **dict(options or {})}


def _config(kind: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The validated config of ``name`` built from ``options`` over its ``test_options``."""
    return registry(kind).make_config(name, _options(kind, name, options))


def _check_documented(report: Report, kind: str, name: str) -> None:
    """Every option of ``name`` has help (``field(metadata={"help": ...})``): what ``t2i describe`` shows."""
    with report.check("every option has help"):
        config = registry(kind).get(name).config
        if config is not None and dataclasses.is_dataclass(config):
            missing = [f.name for f in dataclasses.fields(config) if not f.metadata.get("help")]
            assert not missing, (
                f"options without help: {_names(missing)} (give each field metadata={{'help': ...}}; "
                f"t2i describe shows it)"
            )


def _start(kind: str, name: str) -> Report:
    """The report of a check of ``name``, after the checks of how it was registered (an
    :class:`AssertionError` here when they fail: nothing else can be judged) and of its options' help."""
    report = Report(f"{KINDS[kind][0]} '{name}'")
    _check_registration(report, kind, name)
    report.raise_for_failures()
    _check_documented(report, kind, name)
    return report


def _check_registration(report: Report, kind: str, name: str) -> None:
    """Registered as a class (or a factory function) with a config dataclass whose defaults fit its types.

    Registration refuses some of these; this catches components registered by reference
    (``"module:Name"``, imported only now) or before that check existed.
    """
    entry = registry(kind).get(name)
    with report.check("registered as a class"):
        factory = entry.factory  # imports a reference: UsageError when it cannot be loaded
        ok = isinstance(factory, type) or inspect.isroutine(factory) or isinstance(factory, functools.partial)
        assert ok, (
            f"an instance of {type(factory).__name__} was registered, not a class: register the class "
            f"itself (register({name!r}, {type(factory).__name__}, config=...)); the engine builds a new "
            f"one for each run from its config"
        )
    with report.check("config is a dataclass whose defaults fit their types"):
        config = entry.config  # imports a reference
        if config is None:
            return
        try:
            check_config_class(config)
        except TypeError as exc:
            fix = (
                f"register config={type(config).__name__}, the class"
                if dataclasses.is_dataclass(config) and not isinstance(config, type)
                else "give each default a value of its annotated type, or fix the annotation"
            )
            raise AssertionError(f"{_one_line(exc)} ({fix})") from None


def _build(kind: str, name: str, cfg: Any, seed: int, base: type, **context: Any) -> Any:
    """Create ``name`` from an already validated config under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    if kind in ("generators", "discriminators") and "text_dim" in context and "word_dim" not in context:
        if getattr(registry(kind).get(name).factory, "uses_words", False):
            context = {**context, "word_dim": context["text_dim"]}  # words as wide as the text, in the kit
    obj = registry(kind).create(name, copy.deepcopy(cfg), **context)
    assert isinstance(obj, base), (
        f"the factory built a {type(obj).__name__}, which is not a t2i {base.__name__}"
    )
    return obj


_NETWORKS = {"generators": Generator, "discriminators": Discriminator}


def _declared_resolutions(kind: str, name: str) -> tuple[int, ...]:
    """The resolutions network ``name`` of ``kind`` (generators or discriminators) declares, sorted."""
    declared = getattr(registry(kind).get(name).factory, "resolutions", None) or _NETWORKS[kind].resolutions
    return tuple(sorted({int(r) for r in declared}))


def _progressive(kind: str, name: str) -> bool:
    return bool(getattr(registry(kind).get(name).factory, "progressive", False))


def _is_adversarial(name: str, term: Any = None) -> bool:
    """Whether loss ``name`` is used as the adversarial loss: its registered class is an
    :class:`AdversarialLoss` (for a factory function, the object ``term`` it built is one)."""
    role = loss_role(registry("losses").get(name).factory)
    if role is None and term is not None:
        return isinstance(term, AdversarialLoss)
    return role == "adversarial"


# --------------------------------------------------------------------------------------------------
# Tensors and modules


def _randn(shape: Sequence[int], seed: int) -> Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def _max_diff(a: Tensor, b: Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def _names(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _assert_finite(t: Tensor, what: str) -> None:
    bad = int((~torch.isfinite(t.detach().float())).sum())
    assert not bad, f"{what} has {bad} non-finite values (NaN or inf)"


def _set_phase(model: nn.Module, seen: int) -> None:
    """Put a (progressive) network where the engine would have it after ``seen`` images."""
    if isinstance(model, (Generator, Discriminator, TextEncoder, LossTerm)):
        model.on_train_step(seen, seen)


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with every weight nudged: zero-initialised layers come alive, unused ones stay unused."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * _PERTURB)
    return clone


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
    """``a()`` and ``b()``, each called right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    out_a = a()
    torch.manual_seed(seed)
    out_b = b()
    return out_a, out_b


def _bf16() -> contextlib.AbstractContextManager[Any]:
    return torch.autocast("cpu", dtype=torch.bfloat16)
