"""t2i hooks: registers the ``stylegan`` generator and discriminator and the ``path_length`` term.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_generators(register):
    register(
        "stylegan",
        "t2i_stylegan.generator:StyleGANGenerator",
        config="t2i_stylegan.generator:StyleGANGeneratorConfig",
        test_options={"channel_base": 256, "channel_max": 32, "w_dim": 32, "mapping_layers": 2},
        help="StyleGAN2 generator conditioned on text (StyleGAN-T/LAFITE): mapping of [z; text] to w, modulated "
             "and demodulated convolutions, noise inputs, skip or resnet output, style mixing, truncation psi",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "stylegan",
        "t2i_stylegan.discriminator:StyleGANDiscriminator",
        config="t2i_stylegan.discriminator:StyleGANDiscriminatorConfig",
        test_options={"channel_base": 256, "channel_max": 32},
        help="StyleGAN2 residual discriminator with minibatch standard deviation and a projection (or concat) "
             "text head; pair with --term r1=... (every=16 for lazy R1)",
    )


@hookimpl
def t2i_register_losses(register):
    register(
        "path_length",
        "t2i_stylegan.regularizers:PathLengthTerm",
        config="t2i_stylegan.regularizers:PathLengthConfig",
        test_generator="stylegan",
        test_options={"every": 1},  # the kit's 2-step run checks its last step logged the term; lazy steps are tested
        help="G term: StyleGAN2's path-length regularisation (lazy, every k steps, scaled by k), "
             "for generators with mapping/synthesis (stylegan)",
    )
