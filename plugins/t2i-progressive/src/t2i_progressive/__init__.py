"""Progressive growing (Karras et al. 2018) for t2i: generator and discriminator ``progressive``.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ProgressiveGenerator": "models",
    "ProgressiveGeneratorConfig": "models",
    "ProgressiveDiscriminator": "models",
    "ProgressiveDiscriminatorConfig": "models",
    "GrowthSchedule": "schedule",
    "GrowthClock": "schedule",
    "FULLY_GROWN": "schedule",
    "stage_resolutions": "schedule",
    "EqualizedConv2d": "models",
    "EqualizedLinear": "models",
})
