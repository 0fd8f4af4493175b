"""The conformance kit (t2i.testing) over every registered component, and against deliberately broken ones.

The parametrizations read the registries when the tests are collected, so a newly installed plugin's
components are checked here with no new test code. Small options come from each component's
``test_options`` registration metadata, else from FALLBACK_OPTIONS below.
"""

from __future__ import annotations

import contextlib
import random
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import t2i
import t2i.testing as kit
from t2i import plugins
from t2i.errors import UnknownComponentError, UsageError
from t2i.interfaces import Dataset, LossTerm
from t2i.registry import KINDS
from t2i.testing import ToyConfig, ToyDiscriminator, ToyGenerator
from t2i.text.bow import BagOfWords, BagOfWordsConfig

# Used only for components that declare no test_options of their own.
FALLBACK_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "text_encoders": {"bow": {"dim": 16}},
    "datasets": {"shapes": {"train_size": 16, "test_size": 16}},
}
RESOLUTIONS = (32, 64)  # the kit's default also covers 128; this suite keeps to the two cheap ones


def options(kind: str, name: str) -> dict[str, Any] | None:
    if kit.default_options(kind, name):
        return None  # the kit reads the component's own test_options
    return FALLBACK_OPTIONS.get(kind, {}).get(name)


# --------------------------------------------------------------------------------------------------
# Every registered component


@pytest.mark.parametrize("name", kit.registered("generators"))
def test_generator_conforms(name):
    kit.check_generator(name, options("generators", name), resolutions=RESOLUTIONS)


@pytest.mark.parametrize("name", kit.registered("discriminators"))
def test_discriminator_conforms(name):
    kit.check_discriminator(name, options("discriminators", name), resolutions=RESOLUTIONS)


# Components that cannot be built without a file of the user's; each is checked by its own test instead.
NEEDS_A_FILE = {
    ("text_encoders", "precomputed"): "tests/test_text_encoders.py::test_precomputed_conforms",
    ("text_encoders", "clip"): "tests/test_text_gru_clip.py::test_clip_embeddings_match_the_bundle_and_pass_the_kit",
    ("losses", "perceptual"): "tests/test_terms_perceptual.py::test_passes_the_conformance_kit_and_trains_in_the_engine",
    ("losses", "contrastive"): "tests/test_contrastive.py::test_passes_the_conformance_kit",
    ("losses", "damsm"): "plugins/t2i-attngan/tests/test_attngan.py::test_the_recipe_trains_with_the_engine",
    **{("datasets", n): "tests/test_data_formats.py::test_disk_datasets_conform" for n in ("folder", "cub", "oxford", "coco")},
    ("datasets", "hf"): "tests/test_data_hub.py::test_hf_passes_the_conformance_kit",
}


@pytest.mark.parametrize("name", kit.registered("text_encoders"))
def test_text_encoder_conforms(name):
    if ("text_encoders", name) in NEEDS_A_FILE:
        pytest.skip(f"needs a file of the user's; checked in {NEEDS_A_FILE['text_encoders', name]}")
    kit.check_text_encoder(name, options("text_encoders", name))


@pytest.mark.parametrize("name", kit.registered("losses"))
def test_loss_conforms(name):
    if ("losses", name) in NEEDS_A_FILE:
        pytest.skip(f"needs pretrained weights; checked in {NEEDS_A_FILE['losses', name]}")
    kit.check_loss(name, options("losses", name))


@pytest.mark.parametrize("name", kit.registered("datasets"))
def test_dataset_conforms(name):
    if ("datasets", name) in NEEDS_A_FILE:
        pytest.skip(f"needs a data folder; checked in {NEEDS_A_FILE['datasets', name]}")
    kit.check_dataset(name, options("datasets", name))


@pytest.mark.parametrize("name", kit.registered("metrics"))
def test_metric_conforms(name):
    kit.check_metric(name, options("metrics", name))


PAIRS = [(g, d) for g in kit.registered("generators") for d in kit.registered("discriminators")]


@pytest.mark.parametrize("generator, discriminator", PAIRS)
def test_pair_trains_with_the_engine_or_is_refused_as_it_must_be(generator, discriminator):
    # fails on a refusal the kit does not expect, and on a pair that trains but should be refused
    result = kit.check_pair(
        generator,
        discriminator,
        generator_options=options("generators", generator),
        discriminator_options=options("discriminators", discriminator),
    )
    if kit.refusal_expected(generator, discriminator) is None:
        assert result.status == "finished" and result.step == 2
    else:
        assert result is None


# --------------------------------------------------------------------------------------------------
# Deliberately broken components: the kit must catch each one and say what is wrong


class OutOfRange(ToyGenerator):
    """Forgets the final tanh's scale: images reach beyond [-1, 1]."""

    def forward(self, z, text):
        return super().forward(z, text) * 3


class UnusedParameter(ToyGenerator):
    """Builds a layer that forward never uses."""

    def __init__(self, cfg=None, *, resolution=32, text_dim=16):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.unused = nn.Linear(4, 4)


class IgnoresText(ToyGenerator):
    """Drops the caption: a text-to-image generator that is only an image generator."""

    def forward(self, z, text):
        return super().forward(z, torch.zeros_like(text))


class Nondeterministic(ToyGenerator):
    """Draws from Python's OS-seeded RNG instead of torch's: the same seed gives different images."""

    _rng = random.SystemRandom()

    def forward(self, z, text):
        return super().forward(z, text) * 0.9 + 0.1 * self._rng.random()


class SqueezesTheBatch(ToyGenerator):
    """Squeezes its output, which drops the batch dimension of a batch of one."""

    def forward(self, z, text):
        return super().forward(z, text).squeeze()


class IgnoresItsResolution(ToyGenerator):
    """Declares 16 px only, and builds a 16 px network whatever resolution it is asked for."""

    resolutions = (16,)

    def __init__(self, cfg=None, *, resolution=16, text_dim=16):
        super().__init__(cfg, resolution=16, text_dim=text_dim)


@dataclass
class UndocumentedConfig(ToyConfig):
    depth: int = 1  # no help: `t2i describe` cannot say what it does


class LogitsB1(ToyDiscriminator):
    """Returns (B, 1) logits instead of (B,)."""

    def condition(self, h, text):
        return super().condition(h, text)[:, None]


class NonFinite(ToyDiscriminator):
    """Takes the log of a negative number."""

    def condition(self, h, text):
        return torch.log(super().condition(h, text) - 1e3)


class PerSampleTerm(LossTerm):
    """Returns one value per image instead of a scalar."""

    def g_loss(self, out):
        return -out.fake.logits


class ForgetfulEncoder(BagOfWords):
    """Learns a vocabulary in fit() but does not save it: a checkpoint cannot rebuild it."""

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass


BROKEN = {  # id -> (kind, factory, config, check keyword arguments, what the message must say)
    "output-out-of-range": (
        "generators",
        OutOfRange,
        ToyConfig,
        {},
        r"output range \[.*\] .*exceeds \[-1, 1\]",
    ),
    "unused-parameter": (
        "generators",
        UnusedParameter,
        ToyConfig,
        {},
        r"no gradient reaches 2 of .*unused\.weight, unused\.bias",
    ),
    "ignores-text": ("generators", IgnoresText, ToyConfig, {}, r"does not depend on the text embedding"),
    "nondeterministic": (
        "generators",
        Nondeterministic,
        ToyConfig,
        {},
        r"torch\.manual_seed\(7\).*different outputs",
    ),
    "batch-of-one": (
        "generators",
        SqueezesTheBatch,
        ToyConfig,
        {"resolutions": (16,)},
        r"a batch of one in eval mode at 16 px: output shape \(3, 16, 16\) for a batch of one",
    ),
    "accepts-undeclared-resolution": (
        "generators",
        IgnoresItsResolution,
        ToyConfig,
        {},
        r"builds at 8 px, which it does not declare \(16\)",
    ),
    "option-without-help": (
        "generators",
        ToyGenerator,
        UndocumentedConfig,
        {"resolutions": (16,)},
        r"every option has help: options without help: depth",
    ),
    "logits-b-1": ("discriminators", LogitsB1, ToyConfig, {}, r"logits shape \(2, 1\), expected \(2,\)"),
    "non-finite-logits": ("discriminators", NonFinite, ToyConfig, {}, r"logits has \d+ non-finite values"),
    "per-sample-loss": (
        "losses",
        PerSampleTerm,
        None,
        {"train": False},
        r"g_loss returned shape \(4,\), expected a scalar",
    ),
    "forgetful-encoder": (
        "text_encoders",
        ForgetfulEncoder,
        BagOfWordsConfig,
        {},
        r"cannot load the saved state_dict",
    ),
}


@contextlib.contextmanager
def in_memory_plugin(kind: str, name: str, factory: Any, **register_kw: Any) -> Iterator[None]:
    """Register one component through a throwaway plugin; unregister it afterwards."""
    plugin = types.ModuleType(f"plugin_{name.replace('-', '_')}")
    hook = KINDS[kind][1]
    setattr(plugin, hook, t2i.hookimpl(lambda register: register(name, factory, **register_kw)))
    plugins.register_plugin(plugin, name=f"broken-{name}")
    try:
        yield
    finally:
        plugins.unregister_plugin(f"broken-{name}")


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_kit_catches_a_broken_component(case):
    kind, factory, config, kwargs, expected = BROKEN[case]
    register_kw = {"config": config} if config else {}
    with (
        in_memory_plugin(kind, case, factory, **register_kw),
        pytest.raises(AssertionError, match=expected) as info,
    ):
        kit.check_component(kind, case, **kwargs)
    message = str(info.value)
    assert f"{KINDS[kind][0]} '{case}'" in message.splitlines()[0]  # names the component
    assert "checks failed" in message


# --------------------------------------------------------------------------------------------------
# The kit itself


def test_the_toy_networks_pass_and_a_report_says_what_was_checked():
    with in_memory_plugin("generators", "toy-g", ToyGenerator, config=ToyConfig, test_options={"width": 4}):
        report = kit.check_generator("toy-g", resolutions=(16,))
    assert (
        not report.failed
        and "gradients at 16 px" in report.passed
        and "channels_last at 16 px" in report.passed
    )
    with in_memory_plugin("discriminators", "toy-d", ToyDiscriminator, config=ToyConfig):
        report = kit.check_discriminator("toy-d", {"width": 4}, resolutions=(16, 999))
    assert not report.failed and [p for p in report.passed if p.startswith("builds")] == ["builds at 16 px"]


def test_default_resolutions_and_fallback_to_the_smallest_declared():
    with in_memory_plugin("generators", "toy-g", ToyGenerator, config=ToyConfig, test_options={"width": 4}):
        report = kit.check_generator("toy-g")
        assert [p for p in report.passed if p.startswith("builds")] == [
            f"builds at {r} px" for r in (8, 16, 32, 64, 128)
        ]
        report = kit.check_generator("toy-g", resolutions=(24,))
        assert "builds at 8 px" in report.passed and "checked 8 px instead" in report.skipped[0]


def test_registered_and_test_options_metadata():
    with in_memory_plugin("generators", "toy-g", ToyGenerator, config=ToyConfig, test_options={"width": 4}):
        assert "toy-g" in kit.registered("generators") and kit.registered("generators", "toy-*") == ["toy-g"]
        assert kit.default_options("generators", "toy-g") == {"width": 4}
    assert kit.default_options("losses", "hinge") == {}


def test_unknown_names_and_options_are_usage_errors_not_failures():
    with pytest.raises(UnknownComponentError, match="did you mean 'dcgan'"):
        kit.check_generator("dcgna")
    with pytest.raises(t2i.ConfigError, match="width"):
        kit.check_discriminator("dcgan", {"width": 8})


def test_the_training_step_defaults_to_the_toy_networks_and_leaves_no_registration_behind():
    result = kit.check_training_step()
    assert result.status == "finished" and result.step == 2
    assert kit.TOY not in kit.registered("generators")


class RefusesEveryPartner(ToyDiscriminator):
    """Declares the usual resolutions, then refuses to be built: no generator can train with it."""

    def __init__(self, cfg=None, *, resolution=32, text_dim=16):
        raise ValueError("this discriminator refuses to be built")


class ClaimsToGrow(ToyDiscriminator):
    """Registered as progressive, but the object it builds does not grow, so the engine trains it with
    any generator: a pair the kit expects to be refused."""

    progressive = True

    def __init__(self, cfg=None, *, resolution=32, text_dim=16):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.progressive = False


def test_the_pairs_that_must_be_refused_are_progressive_with_fixed_and_no_shared_resolution():
    assert "grows progressively" in kit.refusal_expected("progressive", "dcgan")
    assert "grows progressively" in kit.refusal_expected("dcgan", "progressive")
    assert kit.refusal_expected("progressive", "progressive") is None
    assert kit.refusal_expected("dcgan", "sagan") is None

    class Tiny(ToyDiscriminator):
        resolutions = (8,)

    with in_memory_plugin("discriminators", "tiny-d", Tiny, config=ToyConfig):
        assert "share no resolution" in kit.refusal_expected("dcgan", "tiny-d")
        assert kit.check_pair("dcgan", "tiny-d") is None  # refused by the engine, as it must be


def test_a_wrongly_refused_pair_fails_the_pair_check():
    with (
        in_memory_plugin("discriminators", "refuses-everyone", RefusesEveryPartner, config=ToyConfig),
        pytest.raises(AssertionError, match=r"refuses a pair that should train .*refuses to be built"),
    ):
        kit.check_pair("dcgan", "refuses-everyone")


def test_a_pair_that_must_be_refused_but_trains_fails_the_pair_check():
    with (
        in_memory_plugin("discriminators", "claims-to-grow", ClaimsToGrow, config=ToyConfig),
        pytest.raises(AssertionError, match=r"trained, but the engine must refuse it: discriminator "
                                            r"'claims-to-grow' grows progressively"),
    ):
        kit.check_pair("dcgan", "claims-to-grow")


def test_a_refused_combination_is_a_one_line_usage_error():
    with pytest.raises(UsageError) as info:
        kit.check_training_step(resolution=12)
    assert "supports resolutions" in str(info.value) and "\n" not in str(info.value)


def test_checks_leave_the_global_rng_as_they_found_it():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    kit.check_loss("hinge", train=False)
    assert torch.equal(torch.rand(3), expected)


def test_a_data_set_without_size_options_is_skipped_not_loaded():
    class Unsized(Dataset):
        def load(self, split, resolution):
            raise AssertionError("must not be loaded")

    skipped = pytest.raises(pytest.skip.Exception, match="no test_options and no size options")
    with in_memory_plugin("datasets", "unsized", Unsized), skipped:
        kit.check_dataset("unsized")
