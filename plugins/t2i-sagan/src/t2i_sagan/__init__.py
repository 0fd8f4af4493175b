"""Self-attention GAN (SAGAN, Zhang et al. 2019) for t2i: a generator and a discriminator named ``sagan``.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "SAGANGenerator": "models",
    "SAGANGeneratorConfig": "models",
    "SAGANDiscriminator": "models",
    "SAGANDiscriminatorConfig": "models",
    "SelfAttention": "models",
    "CondBatchNorm2d": "models",
})
