"""Spectral normalisation for t2i: SNGAN networks named ``specnorm`` and the ``sn`` discriminator wrapper.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SNGANGenerator": "models",
    "SNGANGeneratorConfig": "models",
    "SNGANDiscriminator": "models",
    "SNGANDiscriminatorConfig": "models",
    "SNDiscriminator": "wrapper",
    "SNWrapperConfig": "wrapper",
    "apply_spectral_norm": "wrapper",
    "is_spectrally_normalised": "wrapper",
})
