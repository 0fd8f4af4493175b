"""t2i-specnorm: the SNGAN networks and the ``sn`` wrapper through the conformance kit (t2i.testing), then
what the kit cannot know: the trunk, where spectral norm goes and what it does, the wrapper's options."""

from __future__ import annotations

import tomllib

import pytest
import torch
from torch import nn

import t2i
from t2i.interfaces import Discriminator
from t2i.testing import check_discriminator, check_generator, check_training_step
from t2i_specnorm import (
    SNDiscriminator,
    SNGANDiscriminator,
    SNGANDiscriminatorConfig,
    SNGANGenerator,
    SNGANGeneratorConfig,
    SNWrapperConfig,
    apply_spectral_norm,
    is_spectrally_normalised,
)
from t2i.options import parse_option_string

TEXT_DIM = 16
B = 4
RESOLUTIONS = (32, 64, 128)
CONDITIONING = ("projection", "concat")


def make_g(resolution=32, **options):
    options.setdefault("ch", 8)
    return SNGANGenerator(SNGANGeneratorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def make_d(resolution=32, **options):
    options.setdefault("ch", 8)
    return SNGANDiscriminator(SNGANDiscriminatorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def make_sn(resolution=32, base="dcgan", **base_options):
    if base == "dcgan":
        base_options.setdefault("ndf", 8)
    return t2i.registry("discriminators").create(
        "sn", {"base": base, "base_options": base_options}, resolution=resolution, text_dim=TEXT_DIM
    )


def inputs(g, batch=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.z_dim, generator=gen), torch.randn(batch, TEXT_DIM, generator=gen)


def sigma(module: nn.Module) -> float:
    """Largest singular value of the weight the layer uses, reshaped as spectral norm reshapes it."""
    w = module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        w = w.transpose(0, 1)
    return torch.linalg.matrix_norm(w.flatten(1), ord=2).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


PROJECTION_DCGAN = "ndf=8,norm=none,conditioning=projection"  # as it comes from -D base_options=...


# -- the interface contract (t2i.testing) ------------------------------------------------------------------


def test_generator_conforms():
    check_generator("specnorm")  # 32, 64 and 128 px, with the registered ch=8


@pytest.mark.parametrize(
    "name, options",
    [
        ("specnorm", {"conditioning": "projection"}),
        ("specnorm", {"conditioning": "concat", "n_power_iterations": 2}),
        ("sn", {}),  # the registered test options: dcgan, ndf=8, norm=none
        ("sn", {"base_options": PROJECTION_DCGAN}),
    ],
    ids=["projection", "concat", "sn-dcgan", "sn-dcgan-projection"],
)
def test_discriminator_conforms(name, options):
    # 128 px: test_the_trunk_ends_with_a_block_at_4x4 (and sn declares more than its base builds)
    check_discriminator(name, options, resolutions=(32, 64))


@pytest.mark.parametrize(
    "generator, discriminator, d_options",
    [("specnorm", "specnorm", None), ("dcgan", "sn", {"base": "dcgan", "base_options": PROJECTION_DCGAN})],
    ids=["specnorm", "sn-dcgan"],
)
def test_trains_with_the_engine(tmp_path, generator, discriminator, d_options):
    run_dir = tmp_path / "run"
    result = check_training_step(generator, discriminator, discriminator_options=d_options, run_dir=run_dir)
    if discriminator == "sn":  # written back in full: the run's config.toml records the base's options
        config = tomllib.loads((result.run_dir / "config.toml").read_text())
        assert config["discriminator"]["options"]["base_options"]["conditioning"] == "projection"


# -- SNGAN networks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("conditioning", CONDITIONING)
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_the_trunk_ends_with_a_block_at_4x4(resolution, conditioning):
    g, d = make_g(resolution), make_d(resolution, conditioning=conditioning)
    assert (g.resolution, g.text_dim, g.z_dim) == (resolution, TEXT_DIM, 128)
    out = d(torch.rand(B, 3, resolution, resolution) * 2 - 1, torch.randn(B, TEXT_DIM))
    sizes = [f.shape[-1] for f in out.features]
    assert sizes == [resolution // 2 ** (i + 1) for i in range(len(sizes) - 1)] + [4]  # ..., 4, then 4 again
    assert out.features[-1].shape[1] == 8 * resolution // 8


def test_spectral_norm_in_d_only_with_its_power_iterations():
    d, g = make_d(64, n_power_iterations=3, conditioning="concat"), make_g(64)
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(is_spectrally_normalised(m) for m in layers)
    assert {m.parametrizations.weight[0].n_power_iterations for m in layers} == {3}
    assert not any(is_spectrally_normalised(m) for m in g.modules())  # SNGAN: no SN in G
    assert "out.parametrizations.weight.original" in dict(d.named_parameters())  # SN's trainable weight


@pytest.mark.parametrize(
    "cls, options",
    [
        (SNGANGeneratorConfig, dict(ch=0)),
        (SNGANGeneratorConfig, dict(z_dim=0)),
        (SNGANDiscriminatorConfig, dict(ch=-1)),
        (SNGANDiscriminatorConfig, dict(n_power_iterations=0)),
        (SNGANDiscriminatorConfig, dict(conditioning="cbn")),
        (SNWrapperConfig, dict(n_power_iterations=0)),
        (SNWrapperConfig, dict(base_options="=32")),
    ],
)
def test_config_validation(cls, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        cls(**options)


def test_cbn_starts_as_plain_batchnorm_and_the_text_acts_from_the_start():
    g = make_g()
    cbns = [m for m in g.modules() if type(m).__name__ == "CondBatchNorm2d"]
    assert cbns and all((p == 0).all() for m in cbns for p in [*m.gamma.parameters(), *m.beta.parameters()])
    g.eval()
    z, text = inputs(g)
    with torch.no_grad():
        assert not torch.allclose(g(z, text), g(z, torch.randn_like(text)))  # through the 4x4 map


def test_forward_under_torch_compile():
    g, d = make_g().eval(), make_d(conditioning="concat").eval()
    z, text = inputs(g, batch=2)
    with torch.no_grad():
        image = g(z, text)
        assert torch.allclose(torch.compile(g, backend="eager")(z, text), image, atol=1e-5)
        logits = torch.compile(d, backend="eager")(image, text, text.roll(1, dims=0)).logits
        assert torch.allclose(logits, d(image, text).logits, atol=1e-5)


# -- the sn wrapper ------------------------------------------------------------------------------------------


def test_sn_wrapper_spectrally_normalises_dcgan():
    reg = t2i.registry("discriminators")
    raw = reg.create("dcgan", {"ndf": 8, "norm": "none"}, resolution=32, text_dim=TEXT_DIM)
    d = make_sn(norm="none")
    assert isinstance(d, SNDiscriminator) and type(d.base) is type(raw)
    convs_and_linears = [n for n, m in d.base.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert d.normalised == convs_and_linears and len(convs_and_linears) == 6
    assert all(abs(sigma(m) - 1) > 0.3 for m in raw.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    precise = reg.create("sn", {"base_options": {"ndf": 8, "norm": "none"}, "n_power_iterations": 5},
                         resolution=32, text_dim=TEXT_DIM)
    text = torch.randn(B, TEXT_DIM)
    for _ in range(5):  # training-mode passes run the power iterations (15 more ran when wrapping)
        d(torch.rand(B, 3, 32, 32) * 2 - 1, text)
        precise(torch.rand(B, 3, 32, 32) * 2 - 1, text)
    for name in d.normalised:
        assert sigma(d.base.get_submodule(name)) == pytest.approx(1.0, abs=0.06), name  # 1 iteration per pass
        assert sigma(precise.base.get_submodule(name)) == pytest.approx(1.0, abs=0.01), name
    out = d(torch.rand(B, 3, 32, 32), text, mismatched_text=text.roll(1, dims=0))
    assert out.logits.shape == (B,) and out.mismatched_logits.shape == (B,) and len(out.features) == 3


def test_sn_wrapper_leaves_what_is_normalised_and_copies_capabilities():
    already = make_sn(spectral_norm=True)  # dcgan's own SN on every conv/linear: nothing to add
    assert already.normalised == []
    batch = make_sn(norm="batch")  # BatchNorm is left as it is
    assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
    specnorm = make_sn(64, base="specnorm", ch=8)
    assert specnorm.normalised == [] and specnorm.resolutions == SNGANDiscriminator.resolutions
    assert (specnorm.progressive, specnorm.provides_features) == (False, True)

    class Progressive(Discriminator):  # a stand-in for a growing discriminator: flags and hooks pass through
        resolutions, progressive, provides_features = (16,), True, False

        def __init__(self, cfg=None, *, resolution, text_dim):
            super().__init__()
            self.lin, self.seen = nn.Linear(3, 1), []

        def on_train_step(self, step, images_seen):
            self.seen.append(images_seen)

        def image_features(self, image):
            return image.mean(dim=(2, 3)), []

        def condition(self, h, text):
            return self.lin(h).flatten()

    reg = t2i.registry("discriminators")
    reg.register("fake-progressive", Progressive)
    try:
        d = make_sn(16, base="fake-progressive")
        assert (d.resolutions, d.progressive, d.provides_features) == ((16,), True, False)
        assert d.normalised == ["lin"]
        d.on_train_step(3, 48)
        assert d.base.seen == [48]
        assert d(torch.rand(2, 3, 16, 16), torch.randn(2, TEXT_DIM)).logits.shape == (2,)
    finally:
        reg.unregister("fake-progressive")


def test_sn_wrapper_options_and_errors():
    assert parse_option_string("ndf=32,norm=none") == {"ndf": "32", "norm": "none"}
    assert parse_option_string("ch=8,attn_res=16,32") == {"ch": "8", "attn_res": "16,32"}
    assert parse_option_string("") == {}
    with pytest.raises(ValueError, match="base_options: expected KEY=VALUE"):
        parse_option_string("=3")
    reg = t2i.registry("discriminators")
    d = reg.create("sn", {"base_options": "ndf=8,norm=none"}, resolution=64, text_dim=TEXT_DIM)
    assert d.cfg.base_options == {  # written back in full, so a run's config.toml records the base's defaults
        "ndf": 8, "text_proj_dim": 128, "norm": "none", "spectral_norm": False, "conditioning": "concat"
    }
    with pytest.raises(ValueError, match=r"supports resolutions 32, 64, 128"):
        reg.create("sn", {"base_options": {"ndf": 8}}, resolution=16, text_dim=TEXT_DIM)
    with pytest.raises(ValueError, match=r"base: unknown discriminator 'dcgn'; did you mean 'dcgan'"):
        reg.create("sn", {"base": "dcgn"}, resolution=32, text_dim=TEXT_DIM)
    with pytest.raises(ValueError, match=r"base: discriminator 'dcgan': unknown key 'ngf'"):
        reg.create("sn", {"base_options": "ngf=8"}, resolution=32, text_dim=TEXT_DIM)
    with pytest.raises(t2i.ConfigError, match=r"'sn' cannot wrap itself"):
        reg.create("sn", {"base": "sn"}, resolution=32, text_dim=TEXT_DIM)
    assert reg.owner("sn").startswith("t2i-specnorm") and reg.owner("specnorm").startswith("t2i-specnorm")
    assert t2i.registry("generators").owner("specnorm").startswith("t2i-specnorm")


def test_apply_spectral_norm_on_any_module():
    net = nn.Sequential(
        nn.Embedding(10, 6), nn.ConvTranspose2d(6, 4, 4, 2, 1), nn.Linear(4, 3), nn.BatchNorm2d(4)
    )
    assert apply_spectral_norm(net, n_power_iterations=2) == ["0", "1", "2"]
    assert apply_spectral_norm(net) == []  # idempotent
    for _ in range(5):
        net[0](torch.arange(10)), net[1](torch.randn(1, 6, 3, 3)), net[2](torch.randn(2, 4))
    assert all(sigma(net[i]) == pytest.approx(1.0, abs=0.02) for i in range(3))
    zero = nn.Linear(4, 4)
    nn.init.zeros_(zero.weight)
    with pytest.raises(ValueError, match="all-zero weight"):
        apply_spectral_norm(nn.Sequential(zero))
