"""StyleGAN2 for t2i (Karras et al., CVPR 2020), conditioned on text as StyleGAN-T and LAFITE do: the
generator and discriminator ``stylegan`` and the G term ``path_length``.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "StyleGANGenerator": "generator",
    "StyleGANGeneratorConfig": "generator",
    "StyleGANDiscriminator": "discriminator",
    "StyleGANDiscriminatorConfig": "discriminator",
    "PathLengthTerm": "regularizers",
    "PathLengthConfig": "regularizers",
})
