"""AttnGAN (Xu et al., CVPR 2018) for t2i: generator and discriminator ``attngan``, the adversarial loss
``attngan`` and the term ``unconditional`` (AttnGAN's joint conditional/unconditional objective), DAMSM as the
term ``damsm`` and the text encoder ``damsm``, and the command ``t2i damsm pretrain``.

The names below are imported on first use, so loading the plugin (``t2i --help``, ``t2i list``) does
not import the networks.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "AttnGANGenerator": "models",
    "AttnGANGeneratorConfig": "models",
    "AttnGANDiscriminator": "models",
    "AttnGANDiscriminatorConfig": "models",
    "StageDiscriminator": "models",
    "StageDiscriminatorConfig": "models",
    "ConditioningAugmentation": "models",
    "WordAttention": "models",
    "InitStage": "models",
    "NextStage": "models",
    "stage_sizes": "models",
    "parameter_count": "models",
    "AttnGANLoss": "objective",
    "AttnGANLossConfig": "objective",
    "UnconditionalTerm": "objective",
    "UnconditionalConfig": "objective",
    "DamsmTerm": "damsm",
    "DamsmTermConfig": "damsm",
    "DamsmText": "damsm",
    "DamsmTextConfig": "damsm",
    "words_loss": "damsm",
    "sent_loss": "damsm",
    "same_caption_mask": "damsm",
    "attngan_vocabulary": "damsm",
    "pretrain_damsm": "pretrain",
})
