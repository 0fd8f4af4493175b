"""What the registry refuses when a plugin registers a component (issue 19, items 5 and 6): an instance
instead of a class or function, a config whose defaults contradict their types, and the wording of
unknown-name messages."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import torch

from t2i.errors import ConfigError, RegistrationError, UnknownComponentError
from t2i.options import build_config, check_config_class
from t2i.registry import Registry


@dataclass
class GoodConfig:
    ngf: int = 16
    lr: float = 1  # an int is a fine float
    norm: Literal["batch", "instance"] = "batch"
    widths: tuple[int, ...] = (16, 32)
    weights: Optional[str] = None
    tags: list[str] = field(default_factory=lambda: ["a"])
    flag: bool = False


@dataclass
class FloatForInt:
    ngf: int = 16.0  # type: ignore[assignment]


@dataclass
class OutsideChoices:
    norm: Literal["batch", "instance"] = "layer"  # type: ignore[assignment]


@dataclass
class StringForBool:
    spectral_norm: bool = "false"  # type: ignore[assignment]


@dataclass
class BadElement:
    widths: tuple[int, ...] = (16, "32")  # type: ignore[assignment]


class Net(torch.nn.Module):
    def __init__(self, cfg=None, **context):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


def build(cfg=None, **context):
    return cfg


def test_consistent_config_classes_pass():
    check_config_class(GoodConfig)


@pytest.mark.parametrize(
    "config, message",
    [
        (FloatForInt, r"config FloatForInt, field 'ngf': default 16\.0 is not int"),
        (OutsideChoices, r"config OutsideChoices, field 'norm': default 'layer' is not 'batch' \| 'instance'"),
        (StringForBool, r"config StringForBool, field 'spectral_norm': default 'false' is not bool"),
        (BadElement, r"config BadElement, field 'widths': default \(16, '32'\) is not tuple\[int, \.\.\.\]"),
    ],
)
def test_a_config_whose_defaults_contradict_their_types_is_refused_at_registration(config, message):
    reg = Registry("generators")
    with pytest.raises(RegistrationError, match=rf"^generator 'g' from my-gans 1\.0: {message}$"):
        reg.register("g", build, config=config, plugin="my-gans", version="1.0")
    assert "g" not in reg


def test_an_instance_registered_instead_of_a_class_is_refused():
    reg = Registry("generators")
    with pytest.raises(RegistrationError, match=r"generator 'g' from my-gans: factory is an instance of Net, not a class "
                                                r"or function; register the class \(Net\)"):
        reg.register("g", Net(), plugin="my-gans")
    with pytest.raises(RegistrationError, match=r"generator 'g' from my-gans: config must be a dataclass class, got an "
                                                r"instance of GoodConfig"):
        reg.register("g", Net, config=GoodConfig(), plugin="my-gans")
    with pytest.raises(RegistrationError, match="factory is an instance of int, not a class or function"):
        reg.register("g", 42, plugin="my-gans")
    reg.register("g", Net, config=GoodConfig, plugin="my-gans")  # the class itself is fine
    assert isinstance(reg.create("g"), Net)


def test_a_reference_is_checked_when_it_is_imported_with_the_same_message(tmp_path, monkeypatch):
    (tmp_path / "lazy_bad_nets.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass

        @dataclass
        class LazyConfig:
            ngf: int = 16.0

        def build(cfg, **context):
            return cfg

        class Net:
            def __call__(self, cfg=None):
                return cfg

        net = Net()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reg = Registry("generators")
        reg.register("lazy", "lazy_bad_nets:build", config="lazy_bad_nets:LazyConfig", plugin="my-gans", help="x")
        reg.register("inst", "lazy_bad_nets:net", plugin="my-gans", help="x")  # registering imports nothing
        with pytest.raises(RegistrationError, match=r"^generator 'lazy' from my-gans: config LazyConfig, field 'ngf': "
                                                    r"default 16\.0 is not int$"):
            reg.create("lazy")
        with pytest.raises(RegistrationError, match=r"generator 'lazy' from my-gans: config LazyConfig, field 'ngf'"):
            reg.describe("lazy")
        with pytest.raises(RegistrationError, match=r"generator 'inst' from my-gans: factory is an instance of Net"):
            reg.create("inst")
    finally:
        sys.modules.pop("lazy_bad_nets", None)


def test_a_bad_name_is_a_registration_error_that_still_is_a_value_error():
    reg = Registry("generators")
    with pytest.raises(RegistrationError, match=r"generator name 'My GAN' from my-gans: use lowercase letters"):
        reg.register("My GAN", build, plugin="my-gans")
    with pytest.raises(ValueError):
        reg.register("x", "no_colon", plugin="my-gans")


def test_unknown_names_and_keys_have_a_separator_with_and_without_a_suggestion():
    reg = Registry("generators")
    for name in ["dcgan", "sagan"]:
        reg.register(name, build, plugin="p")
    with pytest.raises(UnknownComponentError) as err:
        reg.get("noep")
    assert str(err.value) == "unknown generator 'noep'; installed: dcgan, sagan"
    with pytest.raises(UnknownComponentError) as err:
        reg.get("sagn")
    assert str(err.value) == "unknown generator 'sagn'; did you mean 'sagan'? installed: dcgan, sagan"
    with pytest.raises(ConfigError) as err:
        build_config(GoodConfig, {"zzz": 1})
    assert str(err.value) == "unknown key 'zzz'; valid keys: flag, lr, ngf, norm, tags, weights, widths"
    with pytest.raises(ConfigError) as err:
        build_config(GoodConfig, {"ngff": 1})
    assert str(err.value).startswith("unknown key 'ngff'; did you mean 'ngf'? valid keys: ")
