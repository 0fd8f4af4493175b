"""t2i hooks: registers the ``specnorm`` generator and discriminator and the ``sn`` discriminator wrapper.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_generators(register):
    register(
        "specnorm",
        "t2i_specnorm.models:SNGANGenerator",
        config="t2i_specnorm.models:SNGANGeneratorConfig",
        test_options={"ch": 8},
        help="SNGAN ResNet generator (Miyato et al. 2018) with conditional BN from z and text",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "specnorm",
        "t2i_specnorm.models:SNGANDiscriminator",
        config="t2i_specnorm.models:SNGANDiscriminatorConfig",
        test_options={"ch": 8},
        help="SNGAN ResNet discriminator (Miyato et al. 2018): spectral norm, projection or concat head",
    )
    register(
        "sn",
        "t2i_specnorm.wrapper:SNDiscriminator",
        config="t2i_specnorm.wrapper:SNWrapperConfig",
        test_options={"base": "dcgan", "base_options": {"ndf": 8, "norm": "none"}},
        help="Spectral norm on every conv/linear/embedding of another discriminator: -D base=NAME",
    )
