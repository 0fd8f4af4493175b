"""Text-conditional DCGAN for t2i: a GAN-INT-CLS generator and discriminator, registered as ``dcgan``."""

from .models import (
    CondBatchNorm2d,
    DCGANDiscriminator,
    DCGANDiscriminatorConfig,
    DCGANGenerator,
    DCGANGeneratorConfig,
)

__all__ = [
    "DCGANGenerator",
    "DCGANGeneratorConfig",
    "DCGANDiscriminator",
    "DCGANDiscriminatorConfig",
    "CondBatchNorm2d",
]
