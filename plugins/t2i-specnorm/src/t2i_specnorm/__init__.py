"""Spectral normalisation for t2i: SNGAN networks named ``specnorm`` and the ``sn`` discriminator wrapper."""

from .models import SNGANDiscriminator, SNGANDiscriminatorConfig, SNGANGenerator, SNGANGeneratorConfig
from .wrapper import SNDiscriminator, SNWrapperConfig, apply_spectral_norm, is_spectrally_normalised

__all__ = [
    "SNGANGenerator",
    "SNGANGeneratorConfig",
    "SNGANDiscriminator",
    "SNGANDiscriminatorConfig",
    "SNDiscriminator",
    "SNWrapperConfig",
    "apply_spectral_norm",
    "is_spectrally_normalised",
]
