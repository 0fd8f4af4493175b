"""t2i hooks: registers the ``dfgan`` generator, discriminator and adversarial loss.

The classes are named by reference (``"module:Name"``): t2i imports them when a component is first
built or described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_generators(register):
    register(
        "dfgan",
        "t2i_dfgan.models:DFGANGenerator",
        config="t2i_dfgan.models:DFGANGeneratorConfig",
        test_options={"nf": 4},
        help="DF-GAN generator (Tao et al. 2022): up blocks with deep fusion (affine from [z; sentence]); "
             "truncated noise when sampling",
    )


@hookimpl
def t2i_register_discriminators(register):
    register(
        "dfgan",
        "t2i_dfgan.models:DFGANDiscriminator",
        config="t2i_dfgan.models:DFGANDiscriminatorConfig",
        test_options={"nf": 4},
        help="DF-GAN discriminator (Tao et al. 2022): gated residual trunk (NetD), sentence tiled at 4x4 "
             "(NetC), one-way output; pair with --loss dfgan --term matching_aware=0.5 --term ma_gp=1",
    )


@hookimpl
def t2i_register_losses(register):
    register(
        "dfgan",
        "t2i_dfgan.objective:DFGANLoss",
        config="t2i_dfgan.objective:DFGANLossConfig",
        help="DF-GAN's objective with --term matching_aware=0.5 --term ma_gp=1: a base loss (hinge) whose "
             "D term on generated images is weighted 0.5: relu(1-real) + 0.5 relu(1+fake); G -fake",
    )
