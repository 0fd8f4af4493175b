"""The hooks t2i calls: one per component kind this plugin provides.

The entry point ``[project.entry-points.t2i] example = "t2i_plugin_example.plugin"`` in pyproject.toml
makes t2i import this module. ``test_options`` are the small options :mod:`t2i.testing` builds the
component with, and ``test_evaluate=True`` tells it that evaluating the metric is cheap. A loss needs no
role: ``MeanBrightness`` is a ``LossTerm``, so it is used as a weighted term (an ``AdversarialLoss``
subclass would be an adversarial loss).

Classes are named by reference, ``"module:Name"``: t2i imports them when a component is first built or
described, so ``t2i --help`` and ``t2i list`` stay fast however many plugins are installed.
"""

from __future__ import annotations

import t2i


@t2i.hookimpl
def t2i_register_generators(register):
    register(
        "tiny_mlp",
        "t2i_plugin_example.models:TinyMLPGenerator",
        config="t2i_plugin_example.models:TinyMLPConfig",
        help="Text-conditional MLP generator (an example plugin's template)",
        test_options={"hidden": 32},
    )


@t2i.hookimpl
def t2i_register_losses(register):
    register(
        "mean_brightness",
        "t2i_plugin_example.losses:MeanBrightness",
        config="t2i_plugin_example.losses:MeanBrightnessConfig",
        help="G term: squared gap between the mean colour of generated and real images",
    )


@t2i.hookimpl
def t2i_register_metrics(register):
    register(
        "pixel_mean",
        "t2i_plugin_example.metrics:PixelMean",
        config="t2i_plugin_example.metrics:PixelMeanConfig",
        help="Mean absolute difference of per-channel pixel means, generated vs reference (lower is better)",
        test_options={"samples": 16},
        test_evaluate=True,
    )
