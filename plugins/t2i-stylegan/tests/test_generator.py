"""t2i-stylegan's generator: the conformance kit (t2i.testing) on each variant, then what the kit cannot know:
truncation toward w_avg (or the caption's mean w), w_avg tracking and style mixing in train mode only, noise
modes, bf16, the modulated convolution against its per-sample-weight definition, and the parameter count of
StyleGAN2-ADA's G counted from the authors' layer shapes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2i.testing import check_generator, check_training_step
from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: one thread here)
from t2i_stylegan.generator import StyleGANGenerator, StyleGANGeneratorConfig, stylegan_width
from t2i_stylegan.layers import fir_filter, modulated_conv2d, upsample2d

TEXT_DIM = 16
B = 4
TINY = {"channel_base": 256, "channel_max": 32, "w_dim": 32, "mapping_layers": 2}


def make_g(resolution: int = 32, text_dim: int = TEXT_DIM, **options) -> StyleGANGenerator:
    cfg = StyleGANGeneratorConfig(**{**TINY, **options})
    return StyleGANGenerator(cfg, resolution=resolution, text_dim=text_dim)


def inputs(g: StyleGANGenerator, batch: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.z_dim, generator=gen), torch.randn(batch, g.text_dim, generator=gen)


def warm_w_avg(g: StyleGANGenerator, steps: int = 3) -> None:
    """Move w_avg off its zero init, as training does."""
    g.train()
    with torch.no_grad():
        for i in range(steps):
            g(*inputs(g, seed=100 + i))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract (t2i.testing) ------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"architecture": "resnet"}, {"mixing_prob": 0.0}, {"text_path": "styles"}],
                         ids=["skip", "resnet", "no-mixing", "text-to-styles"])
def test_generator_conforms(options):
    check_generator("stylegan", options)


def test_generator_trains_in_the_engine():
    check_training_step(generator="stylegan", steps=1)


# -- mapping, truncation, w_avg ----------------------------------------------------------------------------


def test_mapping_and_synthesis_compose_to_forward():
    g = make_g().eval()
    z, text = inputs(g)
    ws = g.mapping(z, text)
    assert ws.shape == (B, g.num_ws, g.w_dim) and ws.dtype == torch.float32
    assert torch.equal(ws, ws[:, :1].expand_as(ws))  # w broadcast to every layer
    # 4x4's conv, 8..32's two convs each (a ToRGB shares the next block's first w), the last ToRGB
    assert g.num_ws == 1 + 3 * 2 + 1
    with torch.no_grad():
        assert torch.equal(g(z, text, noise_mode="const"), g.synthesis(ws, noise_mode="const"))


def test_truncation_psi_0_gives_the_mean_image_and_psi_1_is_identity():
    g = make_g(truncation_center="global")
    warm_w_avg(g)
    g.eval()
    z, text = inputs(g)
    z2, _ = inputs(g, seed=1)
    assert g.w_avg.abs().sum() > 0
    ws = g.mapping(z, text, truncation=0.0)
    assert torch.allclose(ws, g.w_avg.expand_as(ws))
    with torch.no_grad():
        a = g(z, text, truncation=0.0, noise_mode="const")
        b = g(z2, text[[1, 0, 3, 2]], truncation=0.0, noise_mode="const")
        assert torch.allclose(a, b, atol=1e-6)  # neither z nor the caption matters at psi 0 toward w_avg
        assert torch.equal(g(z, text, truncation=1.0, noise_mode="const"), g(z, text, noise_mode="const"))
        half = g.mapping(z, text, truncation=0.5)
        assert torch.allclose(half, 0.5 * (g.mapping(z, text) + g.w_avg), atol=1e-6)


@pytest.mark.parametrize("psi", [-0.1, 1.5, float("nan")])
def test_truncation_outside_0_1_is_refused(psi):
    g = make_g().eval()
    with pytest.raises(ValueError, match="psi"):
        g(*inputs(g), truncation=psi)


def test_text_truncation_center_keeps_the_caption():
    assert StyleGANGeneratorConfig().truncation_center == "text"  # the default: conditional truncation
    g = make_g(truncation_center="text", truncation_samples=8)
    warm_w_avg(g)
    g.eval()
    z, text = inputs(g)
    z2, _ = inputs(g, seed=1)
    with torch.no_grad():
        a, b = g(z, text, truncation=0.0, noise_mode="const"), g(z2, text, truncation=0.0, noise_mode="const")
        other = g(z, text.roll(1, 0), truncation=0.0, noise_mode="const")
    assert torch.allclose(a, b, atol=1e-6)  # z no longer matters ...
    assert (a - other).abs().amax() > 1e-3  # ... the caption still does
    center = g._map(torch.randn(8, g.z_dim, generator=torch.Generator().manual_seed(0)).repeat(B, 1),
                    text.repeat_interleave(8, 0)).view(B, 8, -1).mean(1)
    assert torch.allclose(g.mapping(z, text, truncation=0.0)[:, 0], center, atol=1e-6)


def test_w_avg_moves_in_train_mode_only():
    g = make_g(w_avg_beta=0.9)
    z, text = inputs(g)
    with torch.no_grad():
        g.eval()(z, text)
        assert torch.equal(g.w_avg, torch.zeros(g.w_dim))
        g.train().mapping(z, text)  # update_w_avg defaults to False (the path-length term's calls)
        assert torch.equal(g.w_avg, torch.zeros(g.w_dim))
        w = g._map(z, text)
        g(z, text)
    assert torch.allclose(g.w_avg, 0.1 * w.mean(0), atol=1e-6)  # mean(w).lerp(0, 0.9)
    assert "w_avg" in g.state_dict()


def test_text_to_styles_skips_the_mapping_layers_and_reaches_every_style():
    """StyleGAN-T's path: the mapping layers see z alone; w = [mapping(z); norm(text)] at every layer."""
    g = make_g(text_path="styles", truncation_center="global", w_avg_beta=0.5)
    assert g.embed is None and g.fc[0].weight.shape[1] == g.z_dim  # the first mapping layer reads z only
    assert g.w_dim == 32 + TEXT_DIM and g.w_avg.shape == (32,)
    for block in g.blocks:  # every style affine reads the text
        assert block.conv1.affine.weight.shape[1] == g.w_dim
    z, text = inputs(g)
    ws = g.mapping(z, text)
    assert ws.shape == (B, g.num_ws, g.w_dim) and torch.equal(ws, ws[:, :1].expand_as(ws))
    expected_text = text / text.square().mean(1, keepdim=True).add(1e-8).sqrt()
    torch.testing.assert_close(ws[:, 0, 32:], expected_text)
    assert torch.equal(g.mapping(z, text.roll(1, 0))[:, 0, :32], ws[:, 0, :32])  # the text does not enter the mapping
    # w_avg tracks the z part; truncation toward it keeps the caption (StyleGAN-T truncates its mapping output)
    g.train()
    with torch.no_grad():
        g(z, text)
    torch.testing.assert_close(g.w_avg, 0.5 * ws[:, 0, :32].mean(0))
    g.eval()
    at0 = g.mapping(z, text, truncation=0.0)[:, 0]
    torch.testing.assert_close(at0[:, :32], g.w_avg.expand(B, -1))
    torch.testing.assert_close(at0[:, 32:], expected_text)
    text_center = make_g(text_path="styles", truncation_samples=4)
    text_center.load_state_dict(g.state_dict())
    torch.testing.assert_close(text_center.eval().mapping(z, text, truncation=0.0)[:, 0, 32:], expected_text)


# -- style mixing, noise, precision ------------------------------------------------------------------------


def _ws_seen_by_synthesis(g: StyleGANGenerator, z, text) -> torch.Tensor:
    seen = []
    g.synthesis = lambda ws, noise_mode="random": seen.append(ws) or torch.zeros(len(ws), 3, 32, 32)
    with torch.no_grad():
        g(z, text)
    del g.synthesis
    return seen[0]


def test_style_mixing_in_train_mode_only():
    g = make_g(mixing_prob=1.0)
    z, text = inputs(g)
    rows_differ = lambda ws: (ws - ws[:, :1]).abs().amax(dim=(0, 2)) > 0  # noqa: E731
    for _ in range(5):
        mixed = rows_differ(_ws_seen_by_synthesis(g.train(), z, text))
        assert not mixed[0] and mixed.any()  # the first layer keeps z's w, the rest switch from a cutoff on
        k = int(mixed.int().argmax())
        assert mixed[k:].all()
    assert not rows_differ(_ws_seen_by_synthesis(g.eval(), z, text)).any()
    assert not rows_differ(_ws_seen_by_synthesis(make_g(mixing_prob=0.0).train(), z, text)).any()


def test_noise_modes():
    g = make_g().eval()
    with torch.no_grad():
        for block in g.blocks:  # noise strengths start at 0: give them a value
            for layer in (getattr(block, "conv0", None), block.conv1):
                if layer is not None:
                    layer.noise.strength.fill_(0.5)
        z, text = inputs(g)
        const_a, const_b = g(z, text, noise_mode="const"), g(z, text, noise_mode="const")
        random_a, random_b = g(z, text), g(z, text)  # the config's default in eval: random
        none = g(z, text, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert (random_a - random_b).abs().amax() > 1e-4
    assert (none - const_a).abs().amax() > 1e-4
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(g.mapping(z, text), noise_mode="fixed")


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_bf16_autocast_is_finite_and_close_to_fp32(architecture):
    g = make_g(64, architecture=architecture)
    z, text = inputs(g)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = g.eval()(z, text, noise_mode="const")
            train = g.train()(z, text)
        full = g.eval()(z, text, noise_mode="const")
    assert low.dtype == torch.float32 and torch.isfinite(low).all() and torch.isfinite(train).all()
    difference = (low - full).abs()
    assert difference.mean() < 0.02 and difference.amax() < 0.3  # bf16 rounding (~0.004 on average)


def test_modulated_conv_equals_convolution_with_demodulated_per_sample_weights():
    gen = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 5, 6, 6, generator=gen), torch.randn(7, 5, 3, 3, generator=gen)
    styles = torch.randn(2, 5, generator=gen)
    for demodulate in (True, False):
        expected = []
        for i in range(2):
            w = weight * styles[i][None, :, None, None]
            if demodulate:
                w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
            expected.append(F.conv2d(x[i:i + 1], w, padding=1))
        got = modulated_conv2d(x, weight, styles, demodulate=demodulate)
        assert torch.allclose(got, torch.cat(expected), atol=1e-5)


def test_upsample2d_is_upfirdn_with_the_1331_filter():
    x, f = torch.randn(2, 3, 5, 5), fir_filter()
    zero_inserted = torch.zeros(2, 3, 10, 10)
    zero_inserted[..., ::2, ::2] = x
    expected = F.conv2d(F.pad(zero_inserted, (2, 1, 2, 1)), (4 * f)[None, None].expand(3, 1, 4, 4), groups=3)
    assert torch.allclose(upsample2d(x, f), expected, atol=1e-6)
    assert torch.allclose(upsample2d(torch.ones(1, 1, 4, 4), f)[..., 2:-2, 2:-2], torch.ones(1, 1, 4, 4))


# -- widths, configs, parameter counts ---------------------------------------------------------------------


def test_widths_follow_channel_base_over_resolution():
    g = make_g(64, channel_base=512, channel_max=64)
    widths = [block.conv1.weight.shape[0] for block in g.blocks]
    assert widths == [64, 64, 32, 16, 8] == [stylegan_width(512, 64, s) for s in (4, 8, 16, 32, 64)]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="channel_base"):
        make_g(64, channel_base=32)
    with pytest.raises(ValueError, match="mixing_prob"):
        StyleGANGeneratorConfig(mixing_prob=1.5)
    with pytest.raises(ValueError, match="architecture"):
        StyleGANGeneratorConfig(architecture="orig")
    with pytest.raises(ValueError, match="resolutions"):
        make_g(48)


def stylegan2_ada_g_parameters(resolution: int, *, channel_base: int = 16384, channel_max: int = 512,
                               z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, mapping_layers: int = 8,
                               architecture: str = "skip") -> int:
    """Trainable parameters of StyleGAN2-ADA's ``training/networks.py:Generator``, from its layer shapes.

    FullyConnectedLayer(i, o): weight o x i + bias o. MappingNetwork: ``embed`` = FC(c_dim, w_dim) when
    c_dim > 0; fc0 = FC(z_dim + (w_dim if c_dim else 0), w_dim), fc1..: FC(w_dim, w_dim).
    SynthesisLayer(i, o): affine FC(w_dim, i) + weight o x i x 3 x 3 + noise_strength 1 + bias o (noise_const
    is a buffer). ToRGBLayer(i): affine FC(w_dim, i) + weight 3 x i x 1 x 1 + bias 3. SynthesisBlock: const
    o x 4 x 4 at 4x4, else conv0 (i -> o); conv1 (o -> o); a ToRGB when skip or last; resnet: skip conv
    o x i x 1 x 1, no bias. Channels: min(channel_base // res, channel_max).
    """
    fc = lambda i, o: o * i + o  # noqa: E731
    layer = lambda i, o: fc(w_dim, i) + o * i * 9 + 1 + o  # noqa: E731
    torgb = lambda i: fc(w_dim, i) + 3 * i + 3  # noqa: E731
    total = (fc(c_dim, w_dim) if c_dim else 0) + fc(z_dim + (w_dim if c_dim else 0), w_dim)
    total += (mapping_layers - 1) * fc(w_dim, w_dim)
    res, previous = 4, 0
    while res <= resolution:
        ch = min(channel_base // res, channel_max)
        total += ch * 16 if previous == 0 else layer(previous, ch)
        total += layer(ch, ch)
        total += torgb(ch) if architecture == "skip" or res == resolution else 0
        total += previous * ch if architecture == "resnet" and previous else 0
        res, previous = res * 2, ch
    return total


PAPER = {"channel_base": 16384, "channel_max": 512, "z_dim": 512, "w_dim": 512, "mapping_layers": 8}


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_parameter_count_equals_stylegan2_ada_at_256_px(architecture):
    cfg = StyleGANGeneratorConfig(**PAPER, architecture=architecture)
    g = StyleGANGenerator(cfg, resolution=256, text_dim=512)
    ours = sum(p.numel() for p in g.parameters())
    assert ours == stylegan2_ada_g_parameters(256, c_dim=512, architecture=architecture)
    text_parts = sum(p.numel() for p in g.embed.parameters()) + 512 * 512  # embed + fc0's columns for it
    assert ours - text_parts == stylegan2_ada_g_parameters(256, architecture=architecture)
    if architecture == "skip":  # the figures in README.md
        assert stylegan2_ada_g_parameters(256) == 24_767_458
        assert ours == 25_292_258


@pytest.mark.parametrize("name, resolution", [("shapes-32", 32), ("shapes-64", 64)])
def test_the_shapes_recipes_train_with_the_engine_and_record_their_options(tmp_path, name, resolution):
    """recipes/shapes-32.toml and shapes-64.toml (the README's 15-minute runs): two real steps with their
    objective, optimiser, StyleGAN-T text path and unfiltered D downsampling, at tiny widths."""
    recipe = tomllib.loads((Path(__file__).parents[1] / "recipes" / f"{name}.toml").read_text())
    assert recipe.get("data", {}).get("resolution", 32) == resolution
    assert recipe["discriminator"]["options"]["resample_filter"] == [1]
    loss, tiny = recipe["loss"], {"channel_base": 64 * resolution // 32, "channel_max": 8}
    result = check_training_step(
        "stylegan", "stylegan", run_dir=tmp_path / "run", resolution=resolution,
        generator_options=recipe["generator"]["options"] | tiny | {"w_dim": 8, "z_dim": 8},
        discriminator_options=recipe["discriminator"]["options"] | tiny,
        loss=loss["adversarial"], terms=loss["terms"], term_options=loss["term_options"],
        train=recipe["train"] | {"batch_size": 8},
    )
    assert {"d/adv", "d/matching_aware", "g/adv"} <= set(result.last)
    config = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert config["generator"]["options"]["text_path"] == "styles"
    assert config["train"]["precision"] == "fp32" and config["train"]["betas"] == [0.0, 0.99]
