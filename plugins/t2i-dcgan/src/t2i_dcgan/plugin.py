"""t2i hooks: registers the ``dcgan`` generator and discriminator."""

from __future__ import annotations

from t2i.hookspecs import hookimpl

from .models import DCGANDiscriminator, DCGANDiscriminatorConfig, DCGANGenerator, DCGANGeneratorConfig


@hookimpl
def t2i_register_generators(register):
    register(
        "dcgan",
        DCGANGenerator,
        config=DCGANGeneratorConfig,
        help="Text-conditional DCGAN generator (GAN-INT-CLS, Reed et al. 2016); conditional BN, DF-GAN "
        "affine fusion or StackGAN conditioning augmentation as options",
        test_options={"ngf": 8},
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "dcgan",
        DCGANDiscriminator,
        config=DCGANDiscriminatorConfig,
        help="DCGAN discriminator with a GAN-INT-CLS concat head or a projection head (Miyato & Koyama 2018)",
        test_options={"ndf": 8},
    )
