"""Self-attention GAN (SAGAN, Zhang et al. 2019) for t2i: a generator and a discriminator named ``sagan``."""

from .models import (
    CondBatchNorm2d,
    SAGANDiscriminator,
    SAGANDiscriminatorConfig,
    SAGANGenerator,
    SAGANGeneratorConfig,
    SelfAttention,
)

__all__ = [
    "SAGANGenerator",
    "SAGANGeneratorConfig",
    "SAGANDiscriminator",
    "SAGANDiscriminatorConfig",
    "SelfAttention",
    "CondBatchNorm2d",
]
