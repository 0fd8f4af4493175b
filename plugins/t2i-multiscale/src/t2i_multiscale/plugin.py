"""t2i hooks: registers the ``multiscale`` discriminator.

The class is named by reference (``"module:Name"``): t2i imports it when the component is first built or
described, so ``t2i --help`` and ``t2i list`` do not load the networks.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_discriminators(register):
    register(
        "multiscale",
        "t2i_multiscale.models:MultiScaleDiscriminator",
        config="t2i_multiscale.models:MultiScaleConfig",
        # a base that judges 16 px too, so the kit's 32 px checks and pairs have two scales (16 and 32 px)
        test_options={"base": "attngan_stage", "base_options": {"ndf": 4}},
        help="pix2pixHD's multi-scale discriminator: any registered discriminator (-D base=NAME) judging the "
             "image at the resolution and its halvings (-D scales=N), separate or shared weights",
    )
