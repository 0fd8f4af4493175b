"""DF-GAN (Tao et al., CVPR 2022) for t2i: generator and discriminator ``dfgan`` and the adversarial loss
``dfgan`` (DF-GAN's objective with ``--term matching_aware=0.5 --term ma_gp=1``).

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DFGANGenerator": "models",
    "DFGANGeneratorConfig": "models",
    "DFGANDiscriminator": "models",
    "DFGANDiscriminatorConfig": "models",
    "Affine": "models",
    "DFBlock": "models",
    "GBlock": "models",
    "DBlock": "models",
    "dfgan_width": "models",
    "truncate_noise": "models",
    "parameter_count": "models",
    "DFGANLoss": "objective",
    "DFGANLossConfig": "objective",
})
