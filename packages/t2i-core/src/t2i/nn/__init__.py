"""Building blocks for generator and discriminator plugins, so a model file is just the architecture.

What the built-in plugins share, in one documented place (as ``timm.layers`` is for timm's models)::

    from t2i.nn import CondBatchNorm2d, check_context, doubling_width, map_sizes, trunk_features

- :mod:`t2i.nn.sizes`: the build context every factory receives (:func:`check_context` refuses a
  resolution the network does not declare, or a bad ``text_dim``, with a one-line ``ValueError``), the
  feature-map sizes between 4x4 and the image (:func:`map_sizes`) and DCGAN's width schedule, doubled
  per halving of the resolution (:func:`doubling_width`).
- :mod:`t2i.nn.norm`: conditional batch norm (:class:`CondBatchNorm2d`: BatchNorm whose scale and shift
  come from a condition vector such as ``[z; text]``) and :class:`PlainBatchNorm2d`, which has the same
  call signature, so one block class can be built with either (:func:`batch_norm`).
- :mod:`t2i.nn.trunk`: :func:`trunk_features`, a discriminator trunk's output and the intermediate
  features :meth:`t2i.interfaces.Discriminator.image_features` returns.

Options are validated with :mod:`t2i.options` (``require_positive``, ``require_choices``).

A discriminator written with them::

    class MyDiscriminator(Discriminator):
        resolutions = (32, 64, 128)

        def __init__(self, cfg=None, *, resolution=64, text_dim=128):
            super().__init__()
            cfg = cfg or MyConfig()
            check_context(type(self), resolution, text_dim)
            self.cfg, self.resolution, self.text_dim = cfg, resolution, text_dim
            sizes = map_sizes(resolution)[-2::-1]                    # R/2, ..., 8, 4
            widths = [doubling_width(cfg.ch, resolution, r) for r in sizes]
            self.blocks = nn.ModuleList(down_block(i, o) for i, o in zip([3] + widths[:-1], widths))
            self.head = nn.Linear(widths[-1] + text_dim, 1)

        def image_features(self, image):
            return trunk_features(image, self.blocks)

        def condition(self, h, text):
            return self.head(torch.cat([h.mean(dim=(2, 3)), text], dim=1)).flatten()
"""

from .norm import CondBatchNorm2d, PlainBatchNorm2d, batch_norm
from .sizes import check_context, doubling_width, doublings, map_sizes
from .trunk import trunk_features

__all__ = [
    "CondBatchNorm2d",
    "PlainBatchNorm2d",
    "batch_norm",
    "check_context",
    "doublings",
    "map_sizes",
    "doubling_width",
    "trunk_features",
]
