"""t2i-sagan: tiny networks (ch = 8) on CPU: shapes, gradients, attention, state, a real engine step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from t2i.interfaces import DiscOutput
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


# -- shapes, ranges, options -------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_output_shapes_and_range(resolution):
    g, d = make_g(resolution), make_d(resolution)
    assert (g.resolution, g.text_dim, g.z_dim) == (resolution, TEXT_DIM, 128)
    set_gamma(g, 0.5), set_gamma(d, 0.5)  # exercise the attention path too
    z, text = inputs(g)
    x = g(z, text)
    assert x.shape == (B, 3, resolution, resolution)
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    out = d(x, text, mismatched_text=text.roll(1, dims=0))
    assert isinstance(out, DiscOutput)
    assert out.logits.shape == (B,) and out.mismatched_logits.shape == (B,)
    assert torch.isfinite(out.logits).all() and not torch.allclose(out.logits, out.mismatched_logits)
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


def test_every_config_field_has_help():
    for cls in (SAGANGeneratorConfig, SAGANDiscriminatorConfig):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls


# -- attention, gradients, state -------------------------------------------------------------------------


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


def test_gradients_reach_every_parameter():
    g, d = make_g(64, attn_res=(16, 32)), make_d(64, attn_res=(16, 32))
    z, text = inputs(g)
    out = d(g(z, text), text, mismatched_text=text.roll(1, dims=0))
    (out.logits.mean() + out.mismatched_logits.mean()).backward()
    # gamma = 0 at init: gamma itself learns, the attention layers behind it wait until it moves
    assert all(m.gamma.grad is not None and m.gamma.grad != 0 for m in attentions(g) + attentions(d))
    g.zero_grad(), d.zero_grad()
    set_gamma(g, 0.5), set_gamma(d, 0.5)
    out = d(g(z, text), text, mismatched_text=text.roll(1, dims=0))
    (out.logits.mean() + out.mismatched_logits.mean() + sum(f.mean() for f in out.features)).backward()
    names = [n for n, _ in g.named_parameters()]
    assert "fc.parametrizations.weight.original" in names  # spectral norm's trainable weight
    for name, p in [*g.named_parameters(prefix="G"), *d.named_parameters(prefix="D")]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_text_conditions_both_networks():
    g, d = make_g().eval(), make_d().eval()
    z, text = inputs(g)
    other = torch.randn_like(text)
    with torch.no_grad():
        assert not torch.allclose(g(z, text), g(z, other))
        image = g(z, text)
        assert not torch.allclose(d(image, text).logits, d(image, other).logits)


def test_state_dict_round_trip():
    g, d = make_g(), make_d()
    set_gamma(g, 0.3), set_gamma(d, -0.2)
    z, text = inputs(g)
    g(z, text), d(torch.rand(B, 3, 32, 32), text)  # move BN stats and SN vectors off their init
    torch.manual_seed(123)
    g2, d2 = make_g(), make_d()
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
        return make_g(), make_d()

    (g1, d1), (g2, d2) = build(), build()
    z, text = inputs(g1)
    assert torch.equal(g1(z, text), g2(z, text))
    image = torch.rand(B, 3, 32, 32)
    assert torch.equal(d1(image, text).logits, d2(image, text).logits)


def test_bf16_autocast_channels_last_and_batch_of_one():
    g = make_g().to(memory_format=torch.channels_last)
    d = make_d().to(memory_format=torch.channels_last)
    set_gamma(g, 0.5), set_gamma(d, 0.5)
    z, text = inputs(g, batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(g(z, text).contiguous(memory_format=torch.channels_last), text, mismatched_text=-text)
    assert torch.isfinite(out.logits.float()).all() and out.mismatched_logits.shape == (2,)
    out.logits.float().mean().backward()
    g.eval(), d.eval()
    z, text = inputs(g, batch=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        image = g(z, text)
        logits = d(image, text).logits
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image.float()).all() and logits.shape == (1,)


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


# -- a real training step through the engine ------------------------------------------------------------


def test_trains_through_the_engine(tmp_path):
    from t2i.config import resolve
    from t2i.engine.trainer import Trainer

    cfg = resolve({
        "data": {"resolution": 32, "options": {"train_size": 256, "test_size": 64}},
        "text_encoder": {"options": {"dim": 16}},
        "generator": {"name": "sagan", "options": {"ch": 8}},
        "discriminator": {"name": "sagan", "options": {"ch": 8}},
        "train": {"batch_size": 16, "steps": 2, "log_every": 1, "sample_every": 0, "checkpoint_every": 0,
                  "device": "cpu"},
        "eval": {"metrics": []},
    })
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    result = trainer.fit()
    assert result.status == "finished" and result.step == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    assert trainer.resolved.generator.options == {"ch": 8, "z_dim": 128, "attn_res": [16]}
