"""t2i: a plug-in workbench for text-to-image GANs.

Components (text encoders, generators, discriminators, losses, metrics, data sets) are registered by
plugins through pluggy hooks and created by name::

    import t2i
    G = t2i.registry("generators").create("dcgan", {"ngf": 32}, resolution=64, text_dim=128)
"""

from importlib import metadata as _metadata

from .errors import ConfigError, UsageError
from .hookspecs import hookimpl
from .plugins import registry

try:
    __version__ = _metadata.version("t2i-core")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = ["hookimpl", "registry", "UsageError", "ConfigError", "__version__"]
