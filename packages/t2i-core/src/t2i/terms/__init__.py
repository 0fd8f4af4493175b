"""Loss terms that run a frozen pretrained network (VGG16, CLIP) on the generated images.

They live apart from :mod:`t2i.losses` because each brings a network, its weights and its input
conventions; the engine sees them as ordinary :class:`~t2i.interfaces.LossTerm` s.
"""

from .contrastive import ContrastiveConfig, ContrastiveTerm
from .perceptual import VGG16_LAYERS, PerceptualConfig, PerceptualTerm, load_vgg16_features

__all__ = [
    "ContrastiveConfig",
    "ContrastiveTerm",
    "PerceptualConfig",
    "PerceptualTerm",
    "VGG16_LAYERS",
    "load_vgg16_features",
]
