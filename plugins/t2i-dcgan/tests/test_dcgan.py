"""t2i-dcgan: every variant through the conformance kit (t2i.testing), then what the kit cannot know: the
architecture (widths, conditional BN, DF-GAN fusion, conditioning augmentation), options and registration."""

from __future__ import annotations

import copy

import pytest
import torch

from t2i.testing import check_discriminator, check_generator, check_training_step
from t2i_dcgan import (
    DCGANDiscriminator,
    DCGANDiscriminatorConfig,
    DCGANGenerator,
    DCGANGeneratorConfig,
)
from t2i_dcgan.models import Affine, FusionBlock

TEXT_DIM = 16
B = 4
RESOLUTIONS = (32, 64, 128)
G_CONDITIONING = ("concat", "cbn", "affine")
G_VARIANTS = {  # id -> DCGANGeneratorConfig options
    "concat": dict(conditioning="concat"),
    "cbn": dict(conditioning="cbn"),
    "affine": dict(conditioning="affine"),
    "concat-ca": dict(conditioning="concat", ca_dim=8),
    "affine-ca": dict(conditioning="affine", ca_dim=8),
}
D_VARIANTS = {  # id -> DCGANDiscriminatorConfig options
    "concat": dict(conditioning="concat"),
    "projection": dict(conditioning="projection"),
    "projection-sn": dict(conditioning="projection", norm="none", spectral_norm=True),
    "concat-sn-bn": dict(conditioning="concat", spectral_norm=True),
    "hybrid-sn": dict(conditioning="hybrid", norm="none", spectral_norm=True),
}


def make_g(resolution=32, **options):
    options.setdefault("ngf", 8)
    return DCGANGenerator(DCGANGeneratorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def make_d(resolution=32, **options):
    options.setdefault("ndf", 8)
    return DCGANDiscriminator(DCGANDiscriminatorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def inputs(g, batch=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.z_dim, generator=gen), torch.randn(batch, TEXT_DIM, generator=gen)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract, for every variant (t2i.testing) ------------------------------------------------


@pytest.mark.parametrize("variant", list(G_VARIANTS))
def test_generator_conforms(variant):
    check_generator("dcgan", G_VARIANTS[variant])  # 32, 64 and 128 px, with the registered ngf=8


@pytest.mark.parametrize("variant", list(D_VARIANTS))
def test_discriminator_conforms(variant):
    check_discriminator("dcgan", D_VARIANTS[variant])


@pytest.mark.parametrize(
    "g_cond, d_variant", [("concat", "concat"), ("cbn", "projection-sn"), ("affine-ca", "projection-sn")]
)
def test_trains_with_the_engine(g_cond, d_variant):
    check_training_step(
        "dcgan", "dcgan", generator_options=G_VARIANTS[g_cond], discriminator_options=D_VARIANTS[d_variant]
    )


# -- the architecture -------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_discriminator_features_are_the_trunk_maps_down_to_4x4(resolution):
    d = make_d(resolution)
    out = d(torch.rand(B, 3, resolution, resolution) * 2 - 1, torch.randn(B, TEXT_DIM))
    assert len(out.features) == {32: 3, 64: 4, 128: 5}[resolution]
    sizes = [f.shape[-1] for f in out.features]
    assert sizes == [resolution // 2 ** (i + 1) for i in range(len(sizes))]  # shallow to deep...
    assert sizes[-1] == 4  # ... ending at the 4x4 map


@pytest.mark.parametrize(
    "cls, options",
    [
        (DCGANGeneratorConfig, dict(ngf=0)),
        (DCGANGeneratorConfig, dict(z_dim=-1)),
        (DCGANGeneratorConfig, dict(conditioning="film")),
        (DCGANGeneratorConfig, dict(ca_dim=-1)),
        (DCGANGeneratorConfig, dict(ca_dim=True)),
        (DCGANDiscriminatorConfig, dict(ndf=0)),
        (DCGANDiscriminatorConfig, dict(norm="layer")),
        (DCGANDiscriminatorConfig, dict(conditioning="cbn")),
        (DCGANDiscriminatorConfig, dict(spectral_norm="yes")),
    ],
)
def test_config_validation(cls, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        cls(**options)


def test_widths_follow_dcgan():
    g, d = make_g(64, ngf=8), make_d(64, ndf=8)
    assert (g.resolution, g.text_dim, g.z_dim) == (64, TEXT_DIM, 100)
    assert g.fc.out_features == 8 * 8 * 16  # 4x4 map of ngf * 8 at 64 px
    assert [b.conv.out_channels for b in g.blocks] == [32, 16, 8]
    assert [b[0].out_channels for b in d.blocks] == [8, 16, 32, 64]
    assert not isinstance(d.blocks[0][1], torch.nn.BatchNorm2d)  # no norm on the first layer
    assert all(isinstance(b[1], torch.nn.BatchNorm2d) for b in d.blocks[1:])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in make_d(64, norm="none").modules())


def test_cbn_starts_as_plain_batchnorm():
    g = make_g(conditioning="cbn")
    for m in g.modules():
        if m.__class__.__name__ == "CondBatchNorm2d":
            assert not m.bn.affine
            assert all((p == 0).all() for p in [*m.gamma.parameters(), *m.beta.parameters()])


def test_affine_has_fusion_blocks_that_start_as_identity():
    g = make_g(64, conditioning="affine")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    fusions = [g.fc_fuse, *(b.fuse for b in g.blocks)]  # every map from 4x4 to R/2, as DF-GAN's blocks
    assert all(isinstance(f, FusionBlock) for f in fusions)
    assert [f.affine0.gamma[0].out_features for f in fusions] == [64, 32, 16, 8]
    assert sum(isinstance(m, Affine) for m in g.modules()) == 2 * len(fusions)  # two affine layers per block
    x, c = torch.randn(B, 64, 4, 4), torch.randn(B, g.fc.in_features)
    for m in (g.fc_fuse.affine0, g.fc_fuse.affine1):
        assert all((p == 0).all() for lin in (m.gamma[-1], m.beta[-1]) for p in lin.parameters())
        assert torch.equal(m(x, c), x)
    leaky = torch.nn.functional.leaky_relu
    assert torch.allclose(g.fc_fuse(x, c), leaky(leaky(x, 0.2), 0.2))
    image = g(*inputs(g))
    assert 0.01 < image.std() < 0.9  # no BN: the init keeps the features from vanishing or saturating


@pytest.mark.parametrize("conditioning", G_CONDITIONING)
def test_conditioning_augmentation(conditioning):
    g = make_g(conditioning=conditioning, ca_dim=8)
    assert not hasattr(g, "text_proj") and g.ca.out_features == 16
    assert make_g(conditioning=conditioning).ca_stats is None
    z, text = inputs(g)
    assert g.ca_stats is None
    with torch.no_grad():
        a, b = g(z, text), g(z, text)
        mu, logvar = g.ca_stats
        assert mu.shape == logvar.shape == (B, 8)
        assert not torch.allclose(a, b)  # training: c_text = mu + sigma * eps
        torch.manual_seed(1)
        c1 = g(z, text)
        torch.manual_seed(1)
        assert torch.equal(c1, g(z, text))  # eps comes from the global RNG, which the engine checkpoints
        g.eval()
        assert torch.equal(g(z, text), g(z, text))  # eval: c_text = mu
        assert torch.equal(g.text_condition(text), g.ca_stats[0])
    g.train()
    g(z, text)
    assert g.ca_stats[0].requires_grad  # the KL term trains the CA layer through them
    clone = copy.deepcopy(g)  # a copy leaves the graph-attached statistics behind
    assert clone.ca_stats is None and g.ca_stats is not None


# -- registration ----------------------------------------------------------------------------------------


def test_plugin_hooks_register_both_components():
    from t2i.registry import Registry
    from t2i_dcgan import plugin

    for kind, hook, cls in [
        ("generators", plugin.t2i_register_generators, DCGANGenerator),
        ("discriminators", plugin.t2i_register_discriminators, DCGANDiscriminator),
    ]:
        reg = Registry(kind)
        hook(reg.register)
        assert reg.names() == ["dcgan"] and reg.get("dcgan").help
        key = "ngf" if cls is DCGANGenerator else "ndf"
        model = reg.create("dcgan", {key: "8", "conditioning": "concat"}, resolution=32, text_dim=TEXT_DIM)
        assert isinstance(model, cls) and getattr(model.cfg, key) == 8


def test_registered_through_t2i():
    import t2i

    generators, discriminators = t2i.registry("generators"), t2i.registry("discriminators")
    g = generators.create("dcgan", {"ngf": "8"}, resolution=32, text_dim=TEXT_DIM)
    d = discriminators.create(
        "dcgan", {"ndf": "8", "spectral_norm": "true"}, resolution=32, text_dim=TEXT_DIM
    )
    assert isinstance(g, DCGANGenerator) and g.cfg.ngf == 8
    assert isinstance(d, DCGANDiscriminator) and d.cfg.spectral_norm is True
    assert generators.owner("dcgan").startswith("t2i-dcgan")
    assert discriminators.owner("dcgan").startswith("t2i-dcgan")
    fields = {row[0] for row in generators.describe("dcgan")["fields"]}
    assert fields == {"ngf", "z_dim", "text_proj_dim", "conditioning", "ca_dim"}
