"""The hooks t2i calls: one per component kind this plugin provides.

The entry point ``[project.entry-points.t2i] example = "t2i_plugin_example.plugin"`` in pyproject.toml
makes t2i import this module. ``test_options`` are the small options :mod:`t2i.testing` builds the
component with, and ``test_evaluate=True`` tells it that evaluating the metric is cheap.
"""

from __future__ import annotations

import t2i

from .losses import MeanBrightness, MeanBrightnessConfig
from .metrics import PixelMean, PixelMeanConfig
from .models import TinyMLPConfig, TinyMLPGenerator


@t2i.hookimpl
def t2i_register_generators(register):
    register(
        "tiny_mlp",
        TinyMLPGenerator,
        config=TinyMLPConfig,
        help="Text-conditional MLP generator (an example plugin's template)",
        test_options={"hidden": 32},
    )


@t2i.hookimpl
def t2i_register_losses(register):
    register(
        "mean_brightness",
        MeanBrightness,
        config=MeanBrightnessConfig,
        role="term",
        help="G term: squared gap between the mean colour of generated and real images",
    )


@t2i.hookimpl
def t2i_register_metrics(register):
    register(
        "pixel_mean",
        PixelMean,
        config=PixelMeanConfig,
        help="Mean absolute difference of per-channel pixel means, generated vs reference (lower is better)",
        test_options={"samples": 16},
        test_evaluate=True,
    )
