"""t2i hooks: registers the ``specnorm`` generator and discriminator and the ``sn`` discriminator wrapper."""

from __future__ import annotations

from t2i.hookspecs import hookimpl

from .models import SNGANDiscriminator, SNGANDiscriminatorConfig, SNGANGenerator, SNGANGeneratorConfig
from .wrapper import SNDiscriminator, SNWrapperConfig


@hookimpl
def t2i_register_generators(register):
    register(
        "specnorm",
        SNGANGenerator,
        config=SNGANGeneratorConfig,
        test_options={"ch": 8},
        help="SNGAN ResNet generator (Miyato et al. 2018) with conditional BN from z and text",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "specnorm",
        SNGANDiscriminator,
        config=SNGANDiscriminatorConfig,
        test_options={"ch": 8},
        help="SNGAN ResNet discriminator (Miyato et al. 2018): spectral norm, projection or concat head",
    )
    register(
        "sn",
        SNDiscriminator,
        config=SNWrapperConfig,
        test_options={"base": "dcgan", "base_options": {"ndf": 8, "norm": "none"}},
        help="Spectral norm on every conv/linear/embedding of another discriminator: -D base=NAME",
    )
