"""t2i hooks: registers the ``dcgan`` generator and discriminator.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_generators(register):
    register(
        "dcgan",
        "t2i_dcgan.models:DCGANGenerator",
        config="t2i_dcgan.models:DCGANGeneratorConfig",
        help="Text-conditional DCGAN generator (GAN-INT-CLS, Reed et al. 2016); conditional BN, DF-GAN "
        "affine fusion or StackGAN conditioning augmentation as options",
        test_options={"ngf": 8},
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "dcgan",
        "t2i_dcgan.models:DCGANDiscriminator",
        config="t2i_dcgan.models:DCGANDiscriminatorConfig",
        help="DCGAN discriminator with a GAN-INT-CLS concat head or a projection head (Miyato & Koyama 2018)",
        test_options={"ndf": 8},
    )
