"""t2i-dfgan: the networks and the objective through the conformance kit (t2i.testing), then what the kit
cannot know: the authors' widths and block counts, the parameter counts of the paper's settings, the fusion
layers' identity start, no unused parameters, the paper's D objective spelled out, truncated sampling."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import t2i
from t2i.engine.step import weighted_losses
from t2i.interfaces import StepOutputs
from t2i.testing import check_discriminator, check_generator, check_loss, check_training_step
from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: one thread here)
from t2i_dfgan import (
    Affine,
    DFGANDiscriminator,
    DFGANDiscriminatorConfig,
    DFGANGenerator,
    DFGANGeneratorConfig,
    DFGANLoss,
    DFGANLossConfig,
    parameter_count,
    truncate_noise,
)

TEXT_DIM = 16
B = 4

# The authors' NetG and NetD + NetC (tobran/DF-GAN, code/models/GAN.py) at z 100 and sentence 256, less the
# shortcut convs their D blocks build and never use (see README.md, "Parameter counts").
PAPER_COUNTS = {  # (resolution, nf) -> (G, D)
    (256, 32): (9_744_131, 6_717_766),  # CUB and COCO
    (64, 32): (4_868_867, 3_440_964),
}
RECIPE = Path(__file__).parents[1] / "recipes" / "dfgan.toml"
OBJECTIVE = {"loss": "dfgan", "terms": {"matching_aware": 0.5, "ma_gp": 1.0}}


def make_g(resolution=32, **options):
    options.setdefault("nf", 4)
    return DFGANGenerator(DFGANGeneratorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def make_d(resolution=32, **options):
    options.setdefault("nf", 4)
    return DFGANDiscriminator(DFGANDiscriminatorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


def inputs(g, batch=B, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.z_dim, generator=gen), torch.randn(batch, TEXT_DIM, generator=gen)


def open_gates(d, value=0.5):
    with torch.no_grad():
        for block in d.blocks:
            block.gamma.fill_(value)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract (t2i.testing) ------------------------------------------------------------------


def test_generator_conforms():
    check_generator("dfgan", resolutions=(32, 64))  # at the registered nf=4; 128 and 256 px: shapes below


def test_discriminator_conforms():
    check_discriminator("dfgan", resolutions=(32, 64))


def test_hybrid_head_conforms_and_adds_the_projection_term():
    """``head=hybrid`` (not in the paper): NetC's logit plus ``embed(sentence) . mean-pooled 4x4 features``."""
    check_discriminator("dfgan", resolutions=(32,), options={"nf": 4, "head": "hybrid"})
    d = DFGANDiscriminator(DFGANDiscriminatorConfig(nf=4, head="hybrid"), resolution=32, text_dim=8)
    image, text = torch.randn(3, 3, 32, 32), torch.randn(3, 8)
    h, _ = d.image_features(image)
    projection = (d.embed(text) * h.mean(dim=(2, 3))).sum(dim=1)
    concat_only = d.head(torch.cat([h, text[:, :, None, None].expand(-1, -1, 4, 4)], dim=1)).flatten()
    torch.testing.assert_close(d.condition(h, text), concat_only + projection)
    assert DFGANDiscriminatorConfig().head == "concat"  # the paper's


def test_objective_conforms():
    check_loss("dfgan", train=False)  # its real training step is the one below, with DF-GAN's networks


def test_the_recipe_trains_with_the_engine_and_records_its_options(tmp_path):
    """The plugin's recipe (the paper's objective and optimiser): two real steps at the kit's tiny widths."""
    recipe = tomllib.loads(RECIPE.read_text())
    loss = recipe["loss"]
    result = check_training_step(
        "dfgan", "dfgan", run_dir=tmp_path / "run",
        generator_options=recipe["generator"]["options"] | {"nf": 4}, discriminator_options={"nf": 4},
        loss=loss["adversarial"], loss_options=loss["options"], terms=loss["terms"],
        term_options=loss["term_options"], train=recipe["train"] | {"batch_size": 8},
    )
    assert {"d/adv", "d/matching_aware", "d/ma_gp", "g/adv"} <= set(result.last)
    config = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert config["generator"]["options"] == {"nf": 4, "z_dim": 100, "truncation": True, "trunc_rate": 0.88}
    assert config["loss"]["adversarial"] == "dfgan" and config["loss"]["terms"] == OBJECTIVE["terms"]
    assert config["loss"]["options"] == {"base": "hinge", "fake_weight": 0.5}
    train = config["train"]
    assert (train["lr_g"], train["lr_d"], train["betas"]) == (1e-4, 4e-4, [0.0, 0.9])


def test_the_shapes_recipe_trains_with_the_engine_and_records_its_options(tmp_path):
    """recipes/shapes-32.toml (the README's 30-minute Shapes run): two real steps at tiny widths."""
    recipe = tomllib.loads((RECIPE.parent / "shapes-32.toml").read_text())
    loss = recipe["loss"]
    result = check_training_step(
        "dfgan", "dfgan", run_dir=tmp_path / "run", resolution=recipe["data"]["resolution"],
        generator_options=recipe["generator"]["options"] | {"nf": 4},
        discriminator_options=recipe["discriminator"]["options"] | {"nf": 4},
        loss=loss["adversarial"], loss_options=loss["options"], terms=loss["terms"],
        term_options=loss["term_options"], train=recipe["train"] | {"batch_size": 8},
    )
    assert {"d/adv", "d/matching_aware", "d/ma_gp", "g/adv"} <= set(result.last)
    config = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert config["discriminator"]["options"]["head"] == "hybrid"
    assert config["loss"]["terms"] == {"matching_aware": 0.5, "ma_gp": 0.1}
    assert (config["train"]["lr_g"], config["train"]["lr_d"]) == (2e-4, 4e-4)


# -- the architecture ------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution, nf", [(64, 4), (128, 2), (256, 2)])
def test_output_shapes_and_the_authors_widths(resolution, nf):
    g, d = make_g(resolution, nf=nf), make_d(resolution, nf=nf)
    blocks = {64: 4, 128: 5, 256: 6}[resolution]  # log2(R) - 2
    # the authors' get_G_in_out_chs / get_D_in_out_chs: nf * min(2^i, 8) from the image inwards
    widths = [nf * min(2**i, 8) for i in range(blocks + 1)]  # image ... 4x4
    assert [b.conv2.out_channels for b in g.blocks] == widths[::-1][1:]
    assert g.fc.out_features == 8 * nf * 16
    assert [b.residual[0].out_channels for b in d.blocks] == widths[1:]
    z, text = inputs(g, batch=2)
    with torch.no_grad():
        image = g(z, text)
        assert image.shape == (2, 3, resolution, resolution)
        assert torch.isfinite(image).all() and image.abs().max() <= 1
        out = d(image, text, mismatched_text=text.roll(1, dims=0))
    assert out.logits.shape == out.mismatched_logits.shape == (2,)
    assert [f.shape[1:] for f in out.features] == [
        (w, resolution // 2 ** (i + 1), resolution // 2 ** (i + 1)) for i, w in enumerate(widths[1:])
    ]


@pytest.mark.parametrize("resolution, nf", list(PAPER_COUNTS))
def test_parameter_counts_at_the_paper_settings(resolution, nf):
    with torch.device("meta"):  # counting needs no weights
        g = DFGANGenerator(DFGANGeneratorConfig(nf=nf), resolution=resolution, text_dim=256)
        d = DFGANDiscriminator(DFGANDiscriminatorConfig(nf=nf), resolution=resolution, text_dim=256)
    assert (parameter_count(g), parameter_count(d)) == PAPER_COUNTS[resolution, nf]
    # NetC, the head: conv3x3 (8 nf + 256 -> 2 nf) and conv4x4 (2 nf -> 1), no biases
    assert parameter_count(d.head) == (8 * nf + 256) * 2 * nf * 9 + 2 * nf * 16


def test_defaults_are_the_papers():
    g, d = DFGANGeneratorConfig(), DFGANDiscriminatorConfig()
    assert (g.nf, g.z_dim, g.truncation, g.trunc_rate, d.nf) == (32, 100, True, 0.88, 32)
    assert (DFGANLossConfig().base, DFGANLossConfig().fake_weight) == ("hinge", 0.5)


def test_shortcut_convs_exist_only_where_the_width_changes():
    g, d = make_g(256, nf=2), make_d(256, nf=2)
    assert [type(b.shortcut).__name__ for b in g.blocks] == ["Identity"] * 3 + ["Conv2d"] * 3
    assert [type(b.shortcut).__name__ for b in d.blocks] == ["Conv2d"] * 3 + ["Identity"] * 3


def test_fusion_starts_as_the_identity_and_the_gates_closed():
    affine = Affine(8, 5)
    x, c = torch.randn(3, 5, 4, 4), torch.randn(3, 8)
    assert torch.equal(affine(x, c), x)
    assert all(b.gamma.item() == 0 for b in make_d().blocks)


def test_gate_init_opens_the_down_blocks_from_the_start():
    d = make_d(gate_init=1.0)
    assert all(b.gamma.item() == 1 for b in d.blocks)
    block, h = d.blocks[0], d.conv_img(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(block(h), F.avg_pool2d(block.shortcut(h), 2) + block.residual(h))


def test_every_parameter_takes_part_in_every_step():
    """No parameter is left out of the graph, even with the gates closed (DDP: no find_unused_parameters)."""
    g, d = make_g(64), make_d(64)
    z, text = inputs(g)
    out = d(g(z, text), text, mismatched_text=text.roll(1, dims=0))
    (out.logits.mean() + out.mismatched_logits.mean()).backward()
    unused = [n for n, p in [*g.named_parameters(), *d.named_parameters()] if p.grad is None]
    assert unused == []


def test_the_affine_condition_is_z_and_sentence():
    g = make_g()
    assert g.blocks[0].fuse1.affine0.scale[0].in_features == g.z_dim + TEXT_DIM


# -- the objective ---------------------------------------------------------------------------------------


def test_objective_is_the_papers():
    """hinge(real) + (hinge(fake) + hinge(mismatched)) / 2 + 2 E||grad_(x, e) D||^6, by registered parts."""
    g, d = make_g(), make_d()
    open_gates(d)
    z, text = inputs(g)
    real = (torch.rand(B, 3, 32, 32) * 2 - 1).requires_grad_(True)
    text = text.requires_grad_(True)
    with torch.no_grad():
        fake = g(z, text)
    losses = t2i.registry("losses")
    adversarial = losses.create("dfgan")
    terms = [(name, w, losses.create(name)) for name, w in OBJECTIVE["terms"].items()]
    real_out, fake_out = d(real, text, text.roll(1, 0)), d(fake, text)
    out = StepOutputs(real=real_out, fake=fake_out, real_images=real, fake_images=fake, text=text,
                      adversarial=adversarial)
    _, total = weighted_losses(adversarial, terms, out, "d")

    grads = torch.autograd.grad(real_out.logits.sum(), (real, text), retain_graph=True)
    norm = torch.cat([gr.flatten(1) for gr in grads], dim=1).norm(dim=1)
    expected = (F.relu(1 - real_out.logits).mean()
                + (F.relu(1 + fake_out.logits).mean() + F.relu(1 + real_out.mismatched_logits).mean()) / 2
                + 2.0 * norm.pow(6).mean())
    assert torch.allclose(total, expected, rtol=1e-5)
    assert torch.allclose(adversarial.g_loss(out), -fake_out.logits.mean())


def test_objective_wraps_any_adversarial_loss_and_refuses_the_rest():
    assert isinstance(DFGANLoss(DFGANLossConfig(base="bce")).base, t2i.registry("losses").get("bce").factory)
    with pytest.raises(ValueError, match="not an adversarial loss"):
        DFGANLoss(DFGANLossConfig(base="matching_aware"))
    with pytest.raises(ValueError, match="base: .*hinje"):
        DFGANLoss(DFGANLossConfig(base="hinje"))


# -- sampling with truncated noise ------------------------------------------------------------------------


def test_truncated_noise_has_the_papers_distribution():
    z = torch.randn(50_000, generator=torch.Generator().manual_seed(1))
    t = truncate_noise(z, 0.88)
    assert t.abs().max() <= 2 * 0.88
    assert (t[torch.argsort(z)].diff() >= 0).all()  # monotone: fixed noise stays fixed
    # scipy.stats.truncnorm(-2, 2).std() = 0.879626
    assert abs(t.std().item() - 0.88 * 0.879626) < 0.01 and abs(t.mean().item()) < 0.01


def test_truncation_applies_when_sampling_only():
    g = make_g()
    with torch.no_grad():
        for p in g.parameters():  # leave the identity start so that z matters everywhere
            p.add_(0.1 * torch.randn_like(p))
    z, text = inputs(g)
    with torch.no_grad():
        train = g.train()(z, text)
        sampled = g.eval()(z, text)
        assert torch.allclose(sampled, g.train()(truncate_noise(z, 0.88), text), atol=1e-6)
        assert not torch.allclose(train, sampled)
        assert type(g).supports_truncation  # t2i sample --truncation PSI reaches it
        assert torch.allclose(g.eval()(z, text, truncation=0.5), g.train()(truncate_noise(z, 0.5), text), atol=1e-6)
        g.cfg.truncation = False
        assert torch.allclose(g.eval()(z, text), train, atol=1e-6)
        assert torch.allclose(g.eval()(z, text, truncation=0.5), g.train()(truncate_noise(z, 0.5), text), atol=1e-6)


# -- options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, options",
    [
        (DFGANGeneratorConfig, dict(nf=0)),
        (DFGANGeneratorConfig, dict(z_dim=-1)),
        (DFGANGeneratorConfig, dict(trunc_rate=0.0)),
        (DFGANDiscriminatorConfig, dict(nf=0)),
        (DFGANDiscriminatorConfig, dict(head="projection")),
        (DFGANLossConfig, dict(fake_weight=0.0)),
        (DFGANLossConfig, dict(base="dfgan")),
    ],
)
def test_config_validation(cls, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        cls(**options)


@pytest.mark.parametrize("make", [make_g, make_d])
def test_unsupported_resolution_is_refused(make):
    with pytest.raises(ValueError, match="supports resolutions 32, 64, 128, 256"):
        make(16)


def test_registered_by_this_plugin():
    for kind in ("generators", "discriminators", "losses"):
        assert t2i.registry(kind).owner("dfgan").startswith("t2i-dfgan")
