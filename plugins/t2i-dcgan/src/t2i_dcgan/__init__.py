"""Text-conditional DCGAN for t2i: a GAN-INT-CLS generator and discriminator, registered as ``dcgan``.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DCGANGenerator": "models",
    "DCGANGeneratorConfig": "models",
    "DCGANDiscriminator": "models",
    "DCGANDiscriminatorConfig": "models",
    "CondBatchNorm2d": "models",
})
