"""t2i-sagan: both networks through the conformance kit (t2i.testing) with and without self-attention, then
what the kit cannot know: widths, attention placement and its gate, spectral norm, options, torch.compile."""

from __future__ import annotations

import tomllib

import pytest
import torch

from t2i.testing import check_discriminator, check_generator, check_training_step
from t2i_sagan import (
    SAGANDiscriminator,
    SAGANDiscriminatorConfig,
    SAGANGenerator,
    SAGANGeneratorConfig,
    SelfAttention,
)

TEXT_DIM = 16
B = 4
RESOLUTIONS = (32, 64, 128)


def make_g(resolution=32, **options):
    options.setdefault("ch", 8)
    return SAGANGenerator(SAGANGeneratorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def make_d(resolution=32, **options):
    options.setdefault("ch", 8)
    return SAGANDiscriminator(SAGANDiscriminatorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def inputs(g, batch=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.z_dim, generator=gen), torch.randn(batch, TEXT_DIM, generator=gen)


def attentions(model):
    return [m for m in model.modules() if isinstance(m, SelfAttention)]


def set_gamma(model, value):
    with torch.no_grad():
        for m in attentions(model):
            m.gamma.fill_(value)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract (t2i.testing) ------------------------------------------------------------------

ATTENTION = {  # id -> (options, resolutions checked): the default (16), none, and two attention layers
    "default": ({}, (32, 64)),  # 128 px: see test_with_attention_open_outputs_are_finite...
    "none": ({"attn_res": ()}, (32,)),
    "16-32": ({"attn_res": (16, 32)}, (64,)),
}


@pytest.mark.parametrize("variant", list(ATTENTION))
def test_generator_conforms(variant):
    options, resolutions = ATTENTION[variant]
    check_generator("sagan", options, resolutions=resolutions)  # with the registered ch=8


@pytest.mark.parametrize("variant", list(ATTENTION))
def test_discriminator_conforms(variant):
    options, resolutions = ATTENTION[variant]
    check_discriminator("sagan", options, resolutions=resolutions)


def test_trains_with_the_engine_and_records_its_options(tmp_path):
    result = check_training_step("sagan", "sagan", run_dir=tmp_path / "run")
    config = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert config["generator"]["options"] == {"ch": 8, "z_dim": 128, "attn_res": [16]}


# -- the architecture ------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_with_attention_open_outputs_are_finite_and_features_follow_the_widths(resolution):
    g, d = make_g(resolution), make_d(resolution)
    assert (g.resolution, g.text_dim, g.z_dim) == (resolution, TEXT_DIM, 128)
    set_gamma(g, 0.5), set_gamma(d, 0.5)  # the kit sees gamma at 0 (and nudged): open the attention path
    z, text = inputs(g)
    x = g(z, text)
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    out = d(x, text, mismatched_text=text.roll(1, dims=0))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.mismatched_logits).all()
    n_blocks = {32: 3, 64: 4, 128: 5}[resolution]
    assert [f.shape[-1] for f in out.features] == [resolution // 2 ** (i + 1) for i in range(n_blocks)]
    assert out.features[-1].shape[1] == 8 * resolution // 8  # ch * R/8 channels at 4x4


def test_widths_and_attention_placement():
    g, d = make_g(64, attn_res=(16, 32)), make_d(64, attn_res=(8,))
    assert g.fc.out_features == 8 * 8 * 16  # 4x4 map of 8 ch at 64 px
    assert [b.conv2.out_channels for b in g.blocks] == [32, 16, 8, 8]
    assert [type(a).__name__ for a in g.attn] == ["Identity", "SelfAttention", "SelfAttention", "Identity"]
    assert [type(a).__name__ for a in d.attn] == ["Identity", "Identity", "SelfAttention", "Identity"]
    att = g.attn[1]  # 16x16, 16 channels: q/k C/8, v C/2
    assert [m.out_channels for m in (att.theta, att.phi, att.g, att.o)] == [2, 2, 8, 16]


def test_every_conv_and_linear_is_spectrally_normalised():
    for model in (make_g(64), make_d(64)):
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert layers and all("weight" in getattr(m, "parametrizations", {}) for m in layers)
    names = [n for n, _ in make_g().named_parameters()]
    assert "fc.parametrizations.weight.original" in names  # spectral norm's trainable weight
    cbn = make_g().blocks[0].norm1  # BigGAN's ccbn: its own state-dict names, no bias
    assert [n for n, _ in cbn.named_children()] == ["bn", "scale", "shift"] and cbn.scale.bias is None


@pytest.mark.parametrize("cls", [make_g, make_d])
@pytest.mark.parametrize(
    "resolution, attn_res", [(32, (32,)), (32, (4,)), (64, (64,)), (64, (12,)), (128, (8, 128))]
)
def test_attention_outside_the_network_is_refused(cls, resolution, attn_res):
    with pytest.raises(ValueError, match=r"attn_res .*intermediate resolution of the \d+ px network"):
        cls(resolution, attn_res=attn_res)


def test_attn_res_from_the_command_line_and_registry():
    import t2i

    generators, discriminators = t2i.registry("generators"), t2i.registry("discriminators")
    g = generators.create("sagan", {"ch": "8", "attn_res": "16,32"}, resolution=64, text_dim=TEXT_DIM)
    assert g.cfg.attn_res == (16, 32) and len(attentions(g)) == 2
    none = discriminators.create("sagan", {"ch": "8", "attn_res": ""}, resolution=32, text_dim=TEXT_DIM)
    assert attentions(none) == []
    assert generators.owner("sagan").startswith("t2i-sagan")
    assert discriminators.owner("sagan").startswith("t2i-sagan")
    assert {row[0] for row in generators.describe("sagan")["fields"]} == {"ch", "z_dim", "attn_res"}
    with pytest.raises(ValueError, match="attn_res"):
        generators.create("sagan", {"attn_res": "64"}, resolution=64, text_dim=TEXT_DIM)


@pytest.mark.parametrize(
    "cls, options",
    [
        (SAGANGeneratorConfig, dict(ch=0)),
        (SAGANGeneratorConfig, dict(z_dim=-1)),
        (SAGANGeneratorConfig, dict(attn_res=(16, 0))),
        (SAGANDiscriminatorConfig, dict(ch=0)),
        (SAGANDiscriminatorConfig, dict(attn_res=("a",))),
    ],
)
def test_config_validation(cls, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        cls(**options)


# -- the attention gate, torch.compile --------------------------------------------------------------


def test_gamma_starts_at_zero_and_attention_changes_the_output_once_it_is_not():
    g, d = make_g(64, attn_res=(16, 32)).eval(), make_d(64, attn_res=(16, 32)).eval()
    assert all(m.gamma.item() == 0 for m in attentions(g) + attentions(d))
    z, text = inputs(g)
    real = torch.rand(B, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        image, logits = g(z, text), d(real, text).logits
        set_gamma(g, 1.0), set_gamma(d, 1.0)
        assert not torch.allclose(g(z, text), image)
        assert not torch.allclose(d(real, text).logits, logits)


def test_the_closed_gate_learns_from_the_start():
    g, d = make_g(64, attn_res=(16, 32)), make_d(64, attn_res=(16, 32))
    z, text = inputs(g)
    out = d(g(z, text), text, mismatched_text=text.roll(1, dims=0))
    (out.logits.mean() + out.mismatched_logits.mean()).backward()
    # gamma = 0 at init: gamma itself learns, the attention layers behind it wait until it moves
    assert all(m.gamma.grad is not None and m.gamma.grad != 0 for m in attentions(g) + attentions(d))
def test_forward_under_torch_compile():
    g, d = make_g(attn_res=(16,)).eval(), make_d(attn_res=(16,)).eval()
    set_gamma(g, 0.5), set_gamma(d, 0.5)
    z, text = inputs(g)
    with torch.no_grad():
        image = g(z, text)
        compiled = torch.compile(g, backend="eager")(z, text)
        out = torch.compile(d, backend="eager")(image, text, text.roll(1, dims=0))
        assert torch.allclose(compiled, image, atol=1e-5)
        assert torch.allclose(out.logits, d(image, text).logits, atol=1e-5)
