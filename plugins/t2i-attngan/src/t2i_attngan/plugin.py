"""t2i hooks: registers AttnGAN's generator, discriminator, loss and terms, the DAMSM text encoder and the
``t2i damsm`` command group.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_generators(register):
    register(
        "attngan",
        "t2i_attngan.models:AttnGANGenerator",
        config="t2i_attngan.models:AttnGANGeneratorConfig",
        test_options={"ngf": 4, "z_dim": 8, "condition_dim": 4, "r_num": 1},
        help="AttnGAN generator (Xu et al. 2018): conditioning augmentation, stages of twice the size (64 -> 128 -> "
             "256 at 256 px) refined with attention over the caption's words; one image per stage; needs word features",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "attngan",
        "t2i_attngan.models:AttnGANDiscriminator",
        config="t2i_attngan.models:AttnGANDiscriminatorConfig",
        test_options={"ndf": 4},
        help="AttnGAN discriminators, one per generator stage (D_NET64/128/256), each with a conditional (sentence) "
             "and an unconditional logit; pair with --loss attngan --term unconditional=1 --term matching_aware=0.3333333333333333",
    )
    register(
        "attngan_stage",
        "t2i_attngan.models:StageDiscriminator",
        config="t2i_attngan.models:StageDiscriminatorConfig",
        test_options={"ndf": 4},
        help="One AttnGAN stage discriminator (D_NET64/128/256 by the image size) on the final image only: "
             "conditional and unconditional logits, for single-output generators (--term unconditional=1)",
    )


@hookimpl
def t2i_register_losses(register):
    register(
        "attngan",
        "t2i_attngan.objective:AttnGANLoss",
        config="t2i_attngan.objective:AttnGANLossConfig",
        help="AttnGAN's objective on the conditional logits: a base loss (bce) with D's real term weighted 1/2 and fake "
             "term 1/3; add --term unconditional=1 --term matching_aware=0.3333333333333333",
    )
    register(
        "unconditional",
        "t2i_attngan.objective:UnconditionalTerm",
        config="t2i_attngan.objective:UnconditionalConfig",
        test_discriminator="attngan_stage",
        help="D and G term on a joint discriminator's unconditional logits (AttnGAN): D real_weight*real + "
             "fake_weight*fake (1/2, 1/3), G the adversarial loss on fakes",
    )
    register(
        "damsm",
        "t2i_attngan.damsm:DamsmTerm",
        config="t2i_attngan.damsm:DamsmTermConfig",
        help="G term: DAMSM's words_loss + sent_loss (AttnGAN) of the final image against the captions, with a frozen "
             "image encoder (image_encoder=PATH); weight = LAMBDA (5 birds, 50 COCO); use with --text-encoder damsm",
    )


@hookimpl
def t2i_register_text_encoders(register):
    register(
        "damsm",
        "t2i_attngan.damsm:DamsmText",
        config="t2i_attngan.damsm:DamsmTextConfig",
        test_options={"dim": 16},
        help="DAMSM's text encoder (AttnGAN's bi-LSTM): word features and sentence, frozen, from text_encoder=PATH "
             "and captions=PATH (the authors' files or t2i damsm pretrain's); without files a random one",
    )


@hookimpl
def t2i_register_commands(app):
    from .cli import damsm_app

    app.add_typer(damsm_app, name="damsm")
