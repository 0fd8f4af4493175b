"""GALIP (Tao et al., CVPR 2023) for t2i: the discriminator ``clipd``, a trainable conditional head on the token
grids of a frozen CLIP ViT (any open-clip ViT; GALIP's is OpenAI's ViT-B/32); the generator ``galip``, DF-GAN's
fusion blocks bridged through the same frozen ViT; and GALIP's two loss terms: the generator's CLIP text-image
similarity ``clip_sim`` and D's gradient penalty at CLIP's features ``clip_ma_gp``. ``t2i clip pretrain``
(:func:`pretrain_clip`) trains a CLIP on a data set where no pretrained one fits.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import open-clip or the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ClipDiscriminator": "models",
    "ClipDConfig": "models",
    "DBlock": "models",
    "parameter_count": "models",
    "GALIPGenerator": "generator",
    "GALIPGeneratorConfig": "generator",
    "TappedViT": "vit",
    "load_vit": "vit",
    "RANDOM_PREFIX": "vit",
    "ClipSimTerm": "objective",
    "ClipSimConfig": "objective",
    "ClipMAGPTerm": "objective",
    "ClipMAGPConfig": "objective",
    "TINY_CLIP_CONFIG": "plugin",
    "pretrain_clip": "pretrain",
    "retrieval_accuracy": "pretrain",
})
