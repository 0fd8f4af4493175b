"""t2i hooks: registers the ``sagan`` generator and discriminator."""

from __future__ import annotations

from t2i.hookspecs import hookimpl

from .models import SAGANDiscriminator, SAGANDiscriminatorConfig, SAGANGenerator, SAGANGeneratorConfig


@hookimpl
def t2i_register_generators(register):
    register(
        "sagan",
        SAGANGenerator,
        config=SAGANGeneratorConfig,
        test_options={"ch": 8},
        help="Self-attention generator (SAGAN, Zhang et al. 2019): residual, SN, conditional BN from z, text",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "sagan",
        SAGANDiscriminator,
        config=SAGANDiscriminatorConfig,
        test_options={"ch": 8},
        help="Self-attention discriminator (SAGAN, Zhang et al. 2019): residual, SN, projection head",
    )
