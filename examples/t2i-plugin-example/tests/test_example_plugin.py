"""Tests of the example plugin: the t2i conformance kit checks the interface contract; the unit tests below
only cover what the kit cannot know (what each component computes, and its options)."""

from __future__ import annotations

import pytest
import t2i
import t2i.testing as kit
import torch
from t2i.interfaces import CaptionedImages, DiscOutput, StepOutputs, loss_role
from t2i.losses import HingeLoss

from t2i_plugin_example import MeanBrightness, MeanBrightnessConfig, PixelMean, PixelMeanConfig, TinyMLPConfig

# -- the interface contract, checked by t2i.testing --------------------------------------------------
# kit.registered reads the registry when pytest collects these tests, so every component this plugin
# registers is checked. It never returns an empty list: if the plugin is not installed (pip install -e .)
# or its entry point in the group `t2i` is missing, collection fails saying what to check, instead of
# pytest skipping the tests and passing with nothing checked.
PLUGIN = "t2i-plugin-example"


@pytest.mark.parametrize("name", kit.registered("generators", plugin=PLUGIN))
def test_generators_conform(name):
    kit.check_generator(name)  # 16, 32 and 64 px, with the test_options registered in plugin.py


@pytest.mark.parametrize("options", [{"layers": 1}], ids=["one-layer"])
def test_tiny_mlp_variants_conform(options):
    kit.check_generator("tiny_mlp", options)  # each option that changes the architecture


@pytest.mark.parametrize("name", kit.registered("losses", plugin=PLUGIN))
def test_losses_conform(name):
    kit.check_loss(name)


@pytest.mark.parametrize("name", kit.registered("metrics", plugin=PLUGIN))
def test_metrics_conform(name):
    kit.check_metric(name)


def test_tiny_mlp_trains_with_the_engine():
    # the adversarial loss and the terms to train with, in one call; each term must be logged
    result = kit.check_training_step(
        generator="tiny_mlp", loss="hinge", terms={"mean_brightness": 1.0, "matching_aware": 0.5}
    )
    assert result.last["g/mean_brightness"] >= 0


def test_registered_names():
    assert kit.registered("generators", plugin=PLUGIN) == ["tiny_mlp"]
    assert kit.registered("losses", plugin=PLUGIN) == ["mean_brightness"]
    assert kit.registered("metrics", plugin=PLUGIN) == ["pixel_mean"]


# -- what the kit cannot know: the components' own behaviour ------------------------------------------


def test_registered_by_this_plugin():
    assert t2i.registry("generators").owner("tiny_mlp").startswith("t2i-plugin-example")
    assert loss_role(t2i.registry("losses").get("mean_brightness").factory) == "term"  # a LossTerm
    assert "pixel_mean" in t2i.registry("metrics").names()


@pytest.mark.parametrize(
    "cls, options",
    [
        (TinyMLPConfig, {"hidden": 0}),
        (TinyMLPConfig, {"layers": -1}),
        (TinyMLPConfig, {"z_dim": "8"}),
        (MeanBrightnessConfig, {"per_channel": "yes"}),
        (PixelMeanConfig, {"samples": 0}),
        (PixelMeanConfig, {"batch_size": -1}),
    ],
)
def test_bad_options_are_refused(cls, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        cls(**options)


def step(fake: torch.Tensor, real: torch.Tensor) -> StepOutputs:
    logits = DiscOutput(torch.zeros(fake.shape[0]))
    return StepOutputs(None, logits, real, fake, torch.zeros(fake.shape[0], 4), HingeLoss())


@pytest.mark.parametrize("per_channel, expected", [(True, 0.5**2 + 0.25**2), (False, (0.75 / 3) ** 2)])
def test_mean_brightness_is_the_squared_gap_of_mean_colours(per_channel, expected):
    real = torch.zeros(2, 3, 8, 8)
    fake = torch.zeros(2, 3, 8, 8)
    fake[:, 0], fake[:, 1] = 0.5, 0.25  # redder and greener, blue equal
    term = MeanBrightness(MeanBrightnessConfig(per_channel=per_channel))
    assert term.g_loss(step(fake, real)).item() == pytest.approx(expected)
    assert term.g_loss(step(real, real)).item() == 0
    assert term.d_loss(step(fake, real)) is None


def reference(n: int = 4, r: int = 8) -> CaptionedImages:
    images = torch.zeros(n, r, r, 3, dtype=torch.uint8)
    images[..., 0] = 200  # red channel 200, the others 0
    return CaptionedImages(
        images=images,
        captions=[f"caption {i}" for i in range(n)],
        caption_ids=torch.arange(n)[:, None],
        caption_counts=torch.ones(n, dtype=torch.int64),
        info={"name": "synthetic", "split": "test"},
    )


def test_pixel_mean_values():
    ref = reference()
    metric = PixelMean(PixelMeanConfig(samples=3, batch_size=2))
    same = metric.evaluate(lambda captions: ref.images[: len(captions)], ref)
    assert same["abs_diff"] == 0 and same["protocol"]["samples"] == 3
    grey = metric.evaluate(lambda captions: torch.full((len(captions), 8, 8, 3), 100, dtype=torch.uint8), ref)
    assert grey["abs_diff"] == pytest.approx((100 + 100 + 100) / 3)  # |100-200|, |100-0|, |100-0|
    assert metric.higher_is_better is False
