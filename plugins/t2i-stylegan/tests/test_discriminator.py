"""t2i-stylegan's discriminator: the conformance kit for both heads, then what the kit cannot know: minibatch
std on batches its group does not divide, the blurred downsampling, the projection head's formula, and the
parameter counts of StyleGAN2-ADA's D at the paper's 256 px setting, counted from the authors' layer shapes."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.testing import check_discriminator
from t2i_stylegan.discriminator import (
    DownConv2d,
    MinibatchStd,
    StyleGANDiscriminator,
    StyleGANDiscriminatorConfig,
)

TEXT_DIM = 16


def make_d(resolution=32, **options):
    options = {"channel_base": 256, "channel_max": 32, **options}
    return StyleGANDiscriminator(StyleGANDiscriminatorConfig(**options), resolution=resolution, text_dim=TEXT_DIM)


@pytest.mark.parametrize("head", ["projection", "concat", "hybrid"])
def test_the_discriminator_passes_the_kit(head):
    check_discriminator("stylegan", {"head": head}, resolutions=(32,))


def test_minibatch_std_groups_a_batch_its_group_size_does_not_divide():
    layer = MinibatchStd(group_size=4)
    assert [layer.group(b) for b in (1, 2, 3, 4, 5, 6, 8)] == [1, 2, 3, 4, 1, 3, 4]
    x = torch.randn(6, 4, 2, 2)
    y = layer(x)
    assert y.shape == (6, 5, 2, 2) and torch.equal(y[:, :4], x)
    # groups of 3 take every second sample (StyleGAN2's reshape(G, -1, ...)): {0, 2, 4} and {1, 3, 5}
    for first in (0, 1):
        group = x[first::2]
        std = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[first::2, 4], std.expand(3, 2, 2), atol=1e-6)
    assert make_d()(torch.randn(3, 3, 32, 32), torch.randn(3, TEXT_DIM)).logits.shape == (3,)


def test_minibatch_std_separates_a_collapsed_batch_from_a_varied_one():
    layer = MinibatchStd(group_size=4)
    same = torch.randn(1, 8, 4, 4).expand(4, -1, -1, -1)
    assert layer(same)[:, -1].max() < 1e-3 < layer(torch.randn(4, 8, 4, 4))[:, -1].min()


def test_downsampling_blurs_then_halves():
    x = torch.full((1, 2, 8, 8), 3.0)
    for k in (1, 3):
        conv = DownConv2d(2, 1, k, down=True, bias=False, activate=False)
        y = conv(x)
        assert y.shape == (1, 1, 4, 4)
        # away from the zero padding, a constant image gives the conv of that constant (the filter sums to 1)
        expected = 3.0 * (conv.weight * conv.weight_gain).sum()
        assert torch.allclose(y[0, 0, 1:-1, 1:-1], expected.expand(2, 2), atol=1e-5)
    # a checkerboard (the highest frequency) is removed by the [1, 3, 3, 1] blur, not aliased into the output
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
    conv = DownConv2d(1, 1, 1, down=True, bias=False, activate=False)
    assert conv(board[None, None])[0, 0, 1:-1, 1:-1].abs().max() < 1e-5


@pytest.mark.parametrize("head", ["projection", "concat", "hybrid"])
def test_the_pooled_projection_adds_the_text_times_the_position_mean_of_the_4x4_map(head):
    torch.manual_seed(0)
    d = make_d(head=head, pooled_projection=True, cmap_layers=2)
    image, text = torch.randn(4, 3, 32, 32), torch.randn(4, TEXT_DIM)
    h, features = d.image_features(image)
    c4 = features[-1].shape[1]
    term = (features[-1].mean(dim=(2, 3)) * d.pool_embed(d.mapping(text))).sum(dim=1) / math.sqrt(c4)
    with_term = d.condition(h, text)
    torch.testing.assert_close(d(image, text).logits, with_term)
    pool_embed, d.pool_embed = d.pool_embed, None  # the same D without the term
    torch.testing.assert_close(with_term, d.condition(d.image_features(image)[0], text) + term)
    d.pool_embed = pool_embed
    check_discriminator("stylegan", {"head": head, "pooled_projection": True}, resolutions=(32,))


@pytest.mark.parametrize("taps", [(1,), (1, 1), (1, 2, 1), (1, 3, 3, 1), (1, 3, 6, 6, 3, 1)])
def test_the_resample_filter_sets_the_blur_and_keeps_the_halving(taps):
    x = torch.randn(2, 3, 8, 8)
    for k in (1, 3):
        assert DownConv2d(3, 2, k, down=True, taps=taps)(x).shape == (2, 2, 4, 4)
    d = make_d(resample_filter=list(taps))
    assert all(b.conv1.resample_filter.shape == (len(taps),) * 2 for b in d.blocks)
    assert d(torch.randn(2, 3, 32, 32), torch.randn(2, TEXT_DIM)).logits.shape == (2,)
    if taps == (1, 1):  # a 2x2 box: the skip path is average pooling, then the 1x1 conv
        skip = d.blocks[0].skip
        h = torch.randn(2, skip.weight.shape[1], 16, 16)
        expected = torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(h, 2), skip.weight * skip.weight_gain)
        torch.testing.assert_close(skip(h), expected)
    if taps == (1,):  # no filter: the skip path takes every other pixel, conv1 is a plain stride-2 conv
        block = d.blocks[0]
        h = torch.randn(2, block.skip.weight.shape[1], 16, 16)
        expected = torch.nn.functional.conv2d(h[:, :, ::2, ::2], block.skip.weight * block.skip.weight_gain)
        torch.testing.assert_close(block.skip(h), expected)
        conv = block.conv1
        plain = torch.nn.functional.conv2d(h, conv.weight * conv.weight_gain, conv.bias, stride=2, padding=1)
        torch.testing.assert_close(conv(h), torch.nn.functional.leaky_relu(plain, 0.2) * 2**0.5)


def test_the_default_resample_filter_is_stylegan2s_and_empty_or_negative_taps_are_refused():
    assert StyleGANDiscriminatorConfig().resample_filter == (1.0, 3.0, 3.0, 1.0)
    for taps in ([], [1, -1]):
        with pytest.raises(ValueError, match="resample_filter"):
            StyleGANDiscriminatorConfig(resample_filter=taps)


def test_the_box_filter_discriminator_passes_the_kit():
    check_discriminator("stylegan", {"resample_filter": [1, 1], "head": "hybrid"}, resolutions=(32,))


def test_the_projection_head_is_the_dot_product_with_the_mapped_text():
    torch.manual_seed(0)
    d = make_d()
    image, text = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, TEXT_DIM)
    h, features = d.image_features(image)
    assert h.shape == (2, d.cmap_dim) and len(features) == 3  # 32 -> 16 -> 8 -> 4
    expected = (h * d.mapping(text)).sum(dim=1) / math.sqrt(d.cmap_dim)
    assert torch.allclose(d(image, text).logits, expected)
    out = d(image, text, text.roll(1, 0))
    assert torch.allclose(out.mismatched_logits, d(image, text.roll(1, 0)).logits, atol=1e-6)


def test_the_hybrid_head_tiles_the_text_and_projects_on_it():
    torch.manual_seed(0)
    d = make_d(head="hybrid")
    image, text = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, TEXT_DIM)
    h, _ = d.image_features(image)
    assert h.shape[2:] == (4, 4)  # the 4x4 map (with its minibatch-std channel): the text is still to come
    cmap = d.mapping(text)
    tiled = cmap[:, :, None, None].expand(-1, -1, 4, 4)
    x = d.out(d.fc(d.conv(torch.cat([h, tiled], dim=1)).flatten(1)))
    assert x.shape == (2, d.cmap_dim)
    assert torch.allclose(d(image, text).logits, (x * cmap).sum(dim=1) / math.sqrt(d.cmap_dim), atol=1e-6)
    # the epilogue conv reads the tiled text besides the image features
    assert d.conv.weight.shape[1] == h.shape[1] + d.cmap_dim


def test_widths_follow_channel_base_and_channel_max():
    d = make_d(64, channel_base=512, channel_max=16)  # 512 / size: 8 at 64, 16 from 32 on (capped)
    assert d.fromrgb.weight.shape[0] == 8
    assert [b.conv1.weight.shape[0] for b in d.blocks] == [16, 16, 16, 16]
    assert d.cmap_dim == 16 and d.out.weight.shape == (16, 16)
    assert make_d(cmap_dim=24).out.weight.shape[0] == 24


# --------------------------------------------------------------------------------------------------
# Parameter counts: StyleGAN2-ADA's Discriminator (NVlabs/stylegan2-ada-pytorch, training/networks.py), counted
# from its layer shapes: Conv2dLayer = out*in*k*k weights + out biases (the resnet skip has no bias),
# FullyConnectedLayer = out*in + out; MinibatchStdLayer has none.


def authors_d_params(resolution: int, c_dim: int, channel_base: int, channel_max: int, mapping_layers: int = 8) -> int:
    log2 = int(math.log2(resolution))
    ch = {2**i: min(channel_base // 2**i, channel_max) for i in range(2, log2 + 1)}
    cmap = ch[4] if c_dim else 0
    total = 0
    for res in [2**i for i in range(log2, 2, -1)]:  # DiscriminatorBlock b{res}
        tmp, out = ch[res], ch[res // 2]
        if res == resolution:
            total += tmp * 3 * 1 * 1 + tmp  # fromrgb, 1x1
        total += tmp * tmp * 9 + tmp  # conv0, 3x3
        total += out * tmp * 9 + out  # conv1, 3x3, down 2
        total += out * tmp  # skip, 1x1, down 2, no bias
    c = ch[4]  # DiscriminatorEpilogue b4 (mbstd_num_channels 1)
    total += c * (c + 1) * 9 + c  # conv
    total += c * c * 16 + c  # fc
    total += c * max(cmap, 1) + max(cmap, 1)  # out
    if c_dim:  # MappingNetwork(z_dim=0, c_dim, w_dim=cmap_dim, num_layers=8): embed, then 8 FC layers
        total += c_dim * cmap + cmap + mapping_layers * (cmap * cmap + cmap)
    return total


# StyleGAN2-ADA's paper256 config (fmaps 0.5: channel_base 16384, channel_max 512) at 256 px
PAPER256 = {"channel_base": 16384, "channel_max": 512}
AUTHORS_256_UNCOND = 24_001_089  # c_dim 0
AUTHORS_256_C512 = 26_627_136  # c_dim 512 (a 512-d text embedding: CLIP ViT-B/32's size)


def test_the_authors_counts_as_written_in_the_readme():
    assert authors_d_params(256, 0, **PAPER256) == AUTHORS_256_UNCOND
    assert authors_d_params(256, 512, **PAPER256) == AUTHORS_256_C512


def test_the_parameter_count_at_256_px_equals_stylegan2_ada():
    with torch.device("meta"):  # shapes only: no memory, no random draws
        d = StyleGANDiscriminator(StyleGANDiscriminatorConfig(**PAPER256), resolution=256, text_dim=512)
    total = sum(p.numel() for p in d.parameters())
    assert total == AUTHORS_256_C512
    # less the text mapping and the projection's output layer (512 -> cmap 512), plus a 512 -> 1 output:
    # the unconditional D
    text_part = sum(p.numel() for p in d.mapping.parameters()) + sum(p.numel() for p in d.out.parameters())
    assert total - text_part + (512 + 1) == AUTHORS_256_UNCOND
