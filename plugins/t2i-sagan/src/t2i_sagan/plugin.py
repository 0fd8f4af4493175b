"""t2i hooks: registers the ``sagan`` generator and discriminator.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_generators(register):
    register(
        "sagan",
        "t2i_sagan.models:SAGANGenerator",
        config="t2i_sagan.models:SAGANGeneratorConfig",
        test_options={"ch": 8},
        help="Self-attention generator (SAGAN, Zhang et al. 2019): residual, SN, conditional BN from z, text",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "sagan",
        "t2i_sagan.models:SAGANDiscriminator",
        config="t2i_sagan.models:SAGANDiscriminatorConfig",
        test_options={"ch": 8},
        help="Self-attention discriminator (SAGAN, Zhang et al. 2019): residual, SN, projection head",
    )
