"""t2i hooks: registers the ``progressive`` generator and discriminator.

``test_options`` (tiny widths) keep growth on: 16 px -> R with 1,000 images per phase, so the conformance
kit, which drives progressive networks through ``on_train_step`` at images_seen = 0, 10, 31, 100, 316,
1000, 3162, ..., finds every stage active at one of its points (at 32, 64 and 128 px; 16 px does not
grow) and sees gradients reach every parameter. With longer or more phases some stage can fall between
two of its points; a network that does not grow (``start_resolution=0``) uses every parameter at once.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


_TEST_GROWTH = {"start_resolution": 16, "images_per_phase": 1000}


@hookimpl
def t2i_register_generators(register):
    register(
        "progressive",
        "t2i_progressive.models:ProgressiveGenerator",
        config="t2i_progressive.models:ProgressiveGeneratorConfig",
        help="Progressively grown text-conditional generator (PGGAN, Karras et al. 2018); pair with disc 'progressive'",
        test_options={"ch": 8, "z_dim": 16, **_TEST_GROWTH},
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "progressive",
        "t2i_progressive.models:ProgressiveDiscriminator",
        config="t2i_progressive.models:ProgressiveDiscriminatorConfig",
        help="Progressively grown discriminator with a projection head (PGGAN, Karras et al. 2018)",
        test_options={"ch": 8, **_TEST_GROWTH},
    )
