"""The conformance kit cannot pass on nothing: a selector that matches no component fails the test run,
a component registered wrongly is reported with what to fix, and one training step checks an adversarial
loss together with weighted terms."""

from __future__ import annotations

import contextlib
import inspect
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import pytest

import t2i
import t2i.testing as kit
from t2i import plugins
from t2i.losses import HingeLoss
from t2i.registry import KINDS, Entry, Registry
from t2i.testing import ToyConfig, ToyGenerator

# --------------------------------------------------------------------------------------------------
# Selectors fail when they match nothing


def test_a_selector_matching_nothing_fails_the_pytest_run_and_says_what_to_check(tmp_path):
    # the documented pattern, for a plugin whose entry point is missing: before, pytest skipped and exited 0
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        import pytest
        import t2i.testing as kit

        @pytest.mark.parametrize("name", kit.registered("generators", "mine*"))
        def test_generator(name):
            kit.check_generator(name)
    """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "error" in out.lower() and "skipped" not in out.lower()
    for expected in (
        "kit.registered('generators', 'mine*') matches no registered generator",
        "the name pattern 'mine*'",
        "pip install -e .",
        "entry point group `t2i`",
        "Registered generators: attngan, dcgan",
    ):
        assert expected in out, out
    assert "Traceback" not in out and "_common.py" not in out  # the message, not the kit's insides


def test_selectors_return_what_matches_and_fail_on_nothing():
    assert kit.registered("generators", "dc*") == ["dcgan"]
    assert kit.registered("generators", plugin="t2i-dcgan") == ["dcgan"]
    assert "hinge" in kit.registered("losses", plugin="t2i_core")  # the distribution name, normalised
    with pytest.raises(pytest.fail.Exception, match=r"plugin='t2i-mine'.* the distribution name 't2i-mine'"):
        kit.registered("generators", plugin="t2i-mine")
    with pytest.raises(pytest.fail.Exception, match=r"unknown kind; did you mean 'generators'\?"):
        kit.registered("generator")


def test_outside_pytest_a_selector_matching_nothing_is_a_lookup_error(monkeypatch):
    monkeypatch.delitem(sys.modules, "pytest")
    with pytest.raises(LookupError, match=r"matches no registered loss.*entry point group `t2i`"):
        kit.registered("losses", "nothing-like-this*")


def test_the_conformance_suite_selectors_match_every_kind():
    for kind in KINDS:  # tests/test_conformance.py parametrizes over each; none may collect nothing
        assert kit.registered(kind)


# --------------------------------------------------------------------------------------------------
# Components registered wrongly: reported with what to fix, not an AttributeError


class NoZDim(ToyGenerator):
    """Forgets to set z_dim: the engine cannot draw its noise."""

    def __init__(self, cfg=None, *, resolution=32, text_dim=16):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        del self.z_dim


class FloatZDim(ToyGenerator):
    """Sets z_dim to a float."""

    def __init__(self, cfg=None, *, resolution=32, text_dim=16):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.z_dim = 8.0


@dataclass
class ContradictingDefaults(ToyConfig):
    depth: int = field(default=16.0, metadata={"help": "an int, whose default is a float"})  # type: ignore


@contextlib.contextmanager
def registered_unchecked(monkeypatch: pytest.MonkeyPatch, kind: str, name: str, factory: Any,
                         **register_kw: Any) -> Iterator[None]:
    """Register one component as a plugin could before registration refused bad ones (or through a
    lazy reference, checked only when imported): the registry takes it as given."""

    def register(self, name, factory, *, config=None, help="", plugin="<unknown>", version="", **metadata):
        entry = Entry(name, factory, config, help or "test", plugin, version, dict(metadata), noun=self.noun)
        self._entries[name] = entry
        return entry

    plugin = types.ModuleType(f"plugin_{name.replace('-', '_')}")
    setattr(plugin, KINDS[kind][1], t2i.hookimpl(lambda register: register(name, factory, **register_kw)))
    with monkeypatch.context() as patch:
        patch.setattr(Registry, "register", register)
        plugins.register_plugin(plugin, name=f"unchecked-{name}")
        try:
            yield
        finally:
            plugins.unregister_plugin(f"unchecked-{name}")


REGISTERED_WRONGLY = {  # id -> (factory, config, what the message must say)
    "no-z-dim": (NoZDim, ToyConfig, r"builds at 16 px: g\.z_dim must be a positive int.*\(it has none\): set "
                                    r"self\.z_dim in __init__"),
    "float-z-dim": (FloatZDim, ToyConfig, r"g\.z_dim must be a positive int.*\(got 8\.0\)"),
    "contradicting-defaults": (ToyGenerator, ContradictingDefaults,
                               r"config is a dataclass whose defaults fit their types: "
                               r".*ContradictingDefaults.*"
                               r"'depth'.*16\.0.* \(give each default a value of its annotated type"),
    "an-instance": (ToyGenerator(), ToyConfig, r"registered as a class: an instance of ToyGenerator was "
                                               r"registered, not a class: register the class itself"),
    "config-instance": (ToyGenerator, ToyConfig(), r"register config=ToyConfig, the class"),
}


@pytest.mark.parametrize("case", list(REGISTERED_WRONGLY))
def test_the_kit_reports_a_component_registered_wrongly(monkeypatch, case):
    factory, config, expected = REGISTERED_WRONGLY[case]
    with (
        registered_unchecked(monkeypatch, "generators", case, factory, config=config),
        pytest.raises(AssertionError, match=expected) as info,
    ):
        kit.check_generator(case, resolutions=(16,))
    assert f"generator '{case}' breaks the t2i interface contract" in str(info.value).splitlines()[0]


@pytest.mark.parametrize("case", list(REGISTERED_WRONGLY))
def test_the_training_step_reports_a_component_registered_wrongly(monkeypatch, case):
    factory, config, expected = REGISTERED_WRONGLY[case]
    expected = expected.replace(r"builds at 16 px: ", "").replace(r"registered as a class: ", "")
    with (
        registered_unchecked(monkeypatch, "generators", case, factory, config=config),
        pytest.raises(AssertionError, match=expected) as info,
    ):
        kit.check_training_step(case)
    assert f"generator '{case}'" in str(info.value) and "AttributeError" not in str(info.value)


def test_a_loss_registered_as_an_instance_is_reported(monkeypatch):
    with (
        registered_unchecked(monkeypatch, "losses", "hinge-instance", HingeLoss()),
        pytest.raises(AssertionError, match=r"(?s)loss 'hinge-instance' .*an instance of HingeLoss was"),
    ):
        kit.check_loss("hinge-instance", train=False)


# --------------------------------------------------------------------------------------------------
# One training step: an adversarial loss with weighted terms


def test_one_training_step_takes_an_adversarial_loss_and_weighted_terms():
    # before: check_training_step took one loss, and terms= was an unknown config section
    result = kit.check_training_step(loss="hinge", terms={"r1": 1.0, "matching_aware": 0.5})
    assert result.status == "finished" and result.step == 2
    assert {"d/adv", "d/r1", "d/matching_aware"} <= set(result.last)


def test_term_options_and_a_term_given_as_loss(tmp_path):
    run = tmp_path / "run"
    result = kit.check_training_step(loss="lsgan", terms={"ma_gp": 2.0}, term_options={"ma_gp": {"k": 1.0}},
                                     run_dir=run)
    assert "d/ma_gp" in result.last and "d/matching_aware" not in result.last  # terms replace the default
    config = (run / "config.toml").read_text()
    assert 'adversarial = "lsgan"' in config and "ma_gp = 2.0" in config and "k = 1.0" in config
    result = kit.check_training_step(loss="r1", terms={"matching_aware": 0.5})  # a term as `loss`: weight 1
    assert {"d/r1", "d/matching_aware"} <= set(result.last)
    with pytest.raises(t2i.errors.UsageError, match=r"term_options for r1, which is not in terms"):
        kit.check_training_step(terms={"matching_aware": 1.0}, term_options={"r1": {"gamma": 5.0}})


# --------------------------------------------------------------------------------------------------
# The documentation shows the real signatures

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = [ROOT / "README.md", ROOT / "examples" / "t2i-plugin-example" / "README.md"]


def plain_signature(fn: Any) -> str:
    """``name(a=None, *, b=2, **kw)``: the signature as the READMEs write it, without annotations."""
    parts, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
        else:
            parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"{fn.__name__}({', '.join(parts)})".replace("'", '"')


@pytest.mark.parametrize("fn", [kit.check_training_step, kit.check_pair, kit.check_generator, kit.registered],
                         ids=lambda fn: fn.__name__)
def test_the_readmes_write_the_kits_signatures_as_they_are(fn):
    # a signature in backquotes, possibly over several lines: `check_training_step(generator=None, ...)`
    # (a call, `check_generator("tiny_mlp")`, starts with a value rather than the first parameter's name)
    first = next(iter(inspect.signature(fn).parameters))
    written = [
        " ".join(m.split())
        for doc in DOCUMENTED
        for m in re.findall(rf"`(?:kit\.)?({fn.__name__}\({first}\b[^`]*\))`", doc.read_text())
    ]
    if fn is kit.check_training_step:
        assert written, "the example plugin's README documents check_training_step's signature"
    for signature in written:
        assert signature.removeprefix("kit.") == plain_signature(fn)
