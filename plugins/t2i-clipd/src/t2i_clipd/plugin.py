"""t2i hooks: registers the ``galip`` generator, the ``clipd`` discriminator, the ``clip_sim`` and ``clip_ma_gp`` loss
terms and the ``t2i clip`` command group (``t2i clip pretrain``: :mod:`t2i_clipd.pretrain`).

The class is named by reference (``"module:Name"``): t2i imports it when the component is first built or
described, so ``t2i --help`` and ``t2i list`` load neither open-clip nor the network (the command's module
imports them only when the command runs). Its test options point at a tiny ViT config shipped with the package
(``tiny-clip-vit.json``: 32 px, patches of 8, 3 blocks of width 64) with random frozen weights, since no CLIP
weights can be assumed in a test.
"""

from __future__ import annotations

from pathlib import Path

from t2i.hookspecs import hookimpl

TINY_CLIP_CONFIG = str(Path(__file__).with_name("tiny-clip-vit.json"))


@hookimpl
def t2i_register_generators(register):
    register(
        "galip",
        "t2i_clipd.generator:GALIPGenerator",
        config="t2i_clipd.generator:GALIPGeneratorConfig",
        test_options={"model": TINY_CLIP_CONFIG, "weights": "random:0", "nf": 4, "code_ch": 8, "mid_ch": 4,
                      "map_blocks": 2, "prompt_layers": (1, 2)},
        help="GALIP's generator (Tao et al. 2023): DF-GAN fusion blocks bridged through a frozen CLIP ViT "
             "(the noise map as its patch tokens, prompts from [z; sentence]), then DF-GAN-style up blocks",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "clipd",
        "t2i_clipd.models:ClipDiscriminator",
        config="t2i_clipd.models:ClipDConfig",
        test_options={"model": TINY_CLIP_CONFIG, "weights": "random:0", "layers": (0, 1, 2),
                      "head_width": 16, "joint_width": 8},
        help="GALIP's discriminator (Tao et al. 2023): a trainable head on the token grids of a frozen CLIP ViT "
             "(model=NAME or JSON, weights=PATH; layers 1,4,8), sentence tiled on the grid; gradients reach G "
             "through CLIP",
    )


@hookimpl
def t2i_register_losses(register):
    register(
        "clip_sim",
        "t2i_clipd.objective:ClipSimTerm",
        config="t2i_clipd.objective:ClipSimConfig",
        test_options={"model": TINY_CLIP_CONFIG, "weights": "random:0"},
        help="G term (GALIP): -cos(CLIP image embedding of the generated image, CLIP embedding of its caption); "
             "GALIP's sim_w = 4 is --term clip_sim=4; needs CLIP weights",
    )
    register(
        "clip_ma_gp",
        "t2i_clipd.objective:ClipMAGPTerm",
        config="t2i_clipd.objective:ClipMAGPConfig",
        test_discriminator="clipd",
        help="D term (GALIP): matching-aware gradient penalty k*E||grad_(CLIP grids, sentence) D(real, text)||^p "
             "(k=2, p=6), the gradient taken at the frozen CLIP's features of the real images; --disc clipd only",
    )


@hookimpl
def t2i_register_commands(app):
    from .cli import clip_app

    app.add_typer(clip_app, name="clip")
