"""A multi-scale discriminator for t2i, named ``multiscale``: any registered discriminator at several scales.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "MultiScaleConfig": "models",
    "MultiScaleDiscriminator": "models",
    "pyramid": "models",
    "resolutions_for": "models",
    "first_difference": "models",
    "tie_parameters": "models",
})
