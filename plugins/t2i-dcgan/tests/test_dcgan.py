"""t2i-dcgan: tiny networks (ngf = ndf = 8) on CPU: shapes, gradients, conditioning, a short training run."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from t2i.interfaces import DiscOutput
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


def wake_fusion_blocks(g):
    """Nudge the zero-initialised last layers of the fusion blocks' MLPs: at init they pass no gradient
    back to the MLPs' first layers (the gradient of a product with a zero weight)."""
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, Affine):
                for lin in (m.gamma[-1], m.beta[-1]):
                    lin.weight.normal_(0.0, 0.05)
    return g


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- shapes and ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize("conditioning", G_CONDITIONING)
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_generator_output(resolution, conditioning):
    g = make_g(resolution, conditioning=conditioning)
    assert (g.resolution, g.text_dim, g.z_dim) == (resolution, TEXT_DIM, 100)
    x = g(*inputs(g))
    assert x.shape == (B, 3, resolution, resolution)
    assert torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("variant", list(D_VARIANTS))
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_discriminator_output(resolution, variant):
    d = make_d(resolution, **D_VARIANTS[variant])
    image = torch.rand(B, 3, resolution, resolution) * 2 - 1
    text = torch.randn(B, TEXT_DIM)
    out = d(image, text, mismatched_text=text.roll(1, dims=0))
    assert isinstance(out, DiscOutput)
    assert out.logits.shape == (B,) and torch.isfinite(out.logits).all()
    assert out.mismatched_logits is not None and out.mismatched_logits.shape == (B,)
    assert not torch.allclose(out.logits, out.mismatched_logits)
    assert len(out.features) == {32: 3, 64: 4, 128: 5}[resolution]
    assert [f.shape[-1] for f in out.features][-1] == 4  # shallow to deep, ending at the 4x4 map
    assert d(image, text).mismatched_logits is None


@pytest.mark.parametrize("cls", [DCGANGenerator, DCGANDiscriminator])
@pytest.mark.parametrize("resolution", [16, 48, 256])
def test_unsupported_resolution(cls, resolution):
    with pytest.raises(ValueError, match=r"32, 64, 128"):
        cls(resolution=resolution, text_dim=TEXT_DIM)


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


def test_every_config_field_has_help():
    for cls in (DCGANGeneratorConfig, DCGANDiscriminatorConfig):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls


def test_widths_follow_dcgan():
    g, d = make_g(64, ngf=8), make_d(64, ndf=8)
    assert g.fc.out_features == 8 * 8 * 16  # 4x4 map of ngf * 8 at 64 px
    assert [b.conv.out_channels for b in g.blocks] == [32, 16, 8]
    assert [b[0].out_channels for b in d.blocks] == [8, 16, 32, 64]
    assert not isinstance(d.blocks[0][1], torch.nn.BatchNorm2d)  # no norm on the first layer
    assert all(isinstance(b[1], torch.nn.BatchNorm2d) for b in d.blocks[1:])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in make_d(64, norm="none").modules())


# -- gradients, conditioning, state ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "g_cond, d_variant",
    [
        ("concat", "concat"),
        ("cbn", "projection"),
        ("cbn", "projection-sn"),
        ("affine", "projection-sn"),
        ("concat-ca", "concat"),
        ("affine-ca", "hybrid-sn"),
    ],
)
def test_gradients_reach_every_parameter(g_cond, d_variant):
    g, d = wake_fusion_blocks(make_g(**G_VARIANTS[g_cond])), make_d(**D_VARIANTS[d_variant])
    z, text = inputs(g)
    out = d(g(z, text), text, mismatched_text=text.roll(1, dims=0))
    (out.logits.mean() + out.mismatched_logits.mean() + sum(f.mean() for f in out.features)).backward()
    for name, p in [*g.named_parameters(prefix="G"), *d.named_parameters(prefix="D")]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


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


@pytest.mark.parametrize(
    "g_cond, d_variant",
    [("concat", "concat"), ("cbn", "projection"), ("affine", "projection"), ("affine-ca", "concat")],
)
def test_text_conditions_the_output(g_cond, d_variant):
    g, d = make_g(**G_VARIANTS[g_cond]).eval(), make_d(**D_VARIANTS[d_variant]).eval()
    z, text = inputs(g)
    other = torch.randn_like(text)
    with torch.no_grad():
        assert not torch.allclose(g(z, text), g(z, other))
        image = g(z, text)
        assert not torch.allclose(d(image, text).logits, d(image, other).logits)


@pytest.mark.parametrize(
    "g_cond, d_variant", [("cbn", "concat"), ("concat", "projection-sn"), ("affine-ca", "projection")]
)
def test_state_dict_round_trip(g_cond, d_variant):
    g, d = make_g(**G_VARIANTS[g_cond]), make_d(**D_VARIANTS[d_variant])
    z, text = inputs(g)
    g(z, text), d(torch.rand(B, 3, 32, 32), text)  # move BN running stats and SN vectors off their init
    torch.manual_seed(123)
    g2, d2 = make_g(**G_VARIANTS[g_cond]), make_d(**D_VARIANTS[d_variant])
    g2.load_state_dict(g.state_dict())
    d2.load_state_dict(d.state_dict())
    for m in (g, d, g2, d2):
        m.eval()
    with torch.no_grad():
        image = g(z, text)
        assert torch.equal(image, g2(z, text))
        assert torch.equal(d(image, text).logits, d2(image, text).logits)


def test_deterministic_under_manual_seed():
    def build():
        torch.manual_seed(7)
        return make_g(conditioning="cbn"), make_d(**D_VARIANTS["projection-sn"])

    (g1, d1), (g2, d2) = build(), build()
    z, text = inputs(g1)
    assert torch.equal(g1(z, text), g2(z, text))
    image = torch.rand(B, 3, 32, 32)
    assert torch.equal(d1(image, text).logits, d2(image, text).logits)


@pytest.mark.parametrize(
    "g_cond, d_variant", [("concat", "concat"), ("cbn", "projection-sn"), ("affine-ca", "projection-sn")]
)
def test_batch_of_one_eval_autocast_channels_last(g_cond, d_variant):
    g = make_g(**G_VARIANTS[g_cond]).to(memory_format=torch.channels_last).eval()
    d = make_d(**D_VARIANTS[d_variant]).to(memory_format=torch.channels_last).eval()
    z, text = inputs(g, batch=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        image = g(z, text)
        out = d(image.contiguous(memory_format=torch.channels_last), text, mismatched_text=-text)
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image.float()).all()
    assert out.logits.shape == (1,) and out.mismatched_logits.shape == (1,)
    assert torch.isfinite(out.logits.float()).all()
    g.train(), d.train()
    z, text = inputs(g, batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(g(z, text), text)
    out.logits.float().mean().backward()


# -- a tiny training run -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "g_cond, d_variant", [("concat", "concat"), ("cbn", "projection-sn"), ("affine-ca", "projection-sn")]
)
def test_few_hinge_steps_stay_finite(g_cond, d_variant):
    g, d = make_g(**G_VARIANTS[g_cond]), make_d(**D_VARIANTS[d_variant])
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.9))
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    text = torch.randn(8, TEXT_DIM)
    before = [p.detach().clone() for p in g.parameters()]
    for _ in range(3):
        z = torch.randn(8, g.z_dim)
        out_real = d(real, text, mismatched_text=text.roll(1, dims=0))
        out_fake = d(g(z, text).detach(), text)
        loss_d = (
            torch.relu(1 - out_real.logits).mean()
            + 0.5 * torch.relu(1 + out_fake.logits).mean()
            + 0.5 * torch.relu(1 + out_real.mismatched_logits).mean()
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = -d(g(z, text), text).logits.mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert all(torch.isfinite(p).all() for p in [*g.parameters(), *d.parameters()])
    assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters()))


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
