"""t2i-clipd's ``galip`` generator: the kit's checks (alone and against clipd and DF-GAN's D), the frozen ViT
bridge (not a parameter, not saved, in eval mode, and on the gradient path of the prompt layer), GALIP's layer
shapes (their parameter count, by formula) and option errors. CLIP: the package's tiny ViT, random weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from t2i.testing import check_generator, check_pair
from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: one thread here)
from t2i_clipd import TINY_CLIP_CONFIG, GALIPGenerator, GALIPGeneratorConfig, parameter_count

TEXT_DIM = 16
TINY = {"model": TINY_CLIP_CONFIG, "weights": "random:0", "nf": 4, "code_ch": 8, "mid_ch": 4, "map_blocks": 2,
        "prompt_layers": (1, 2)}


def make_g(resolution=32, **options):
    return GALIPGenerator(GALIPGeneratorConfig(**(TINY | options)), resolution=resolution, text_dim=TEXT_DIM)


def test_generator_conforms():
    check_generator("galip", resolutions=(32,))  # 64 px: one more up block (count test)


def test_trains_against_clipd():
    """GALIP's pair (galip x every discriminator: tests/test_conformance.py's pair check)."""
    check_pair("galip", "clipd")


def test_the_vit_is_frozen_outside_the_module_and_on_the_gradient_path():
    torch.manual_seed(0)
    g = make_g()
    assert not {id(p) for p in g.vit.visual.parameters()} & {id(p) for p in g.parameters()}
    assert not any("visual" in k for k in g.state_dict())
    g.train()
    assert not g.vit.visual.training
    z, text = torch.randn(2, g.z_dim), torch.randn(2, TEXT_DIM)
    g(z, text).square().mean().backward()
    # the prompts reach the image only through the frozen ViT's blocks
    assert g.fc_prompt.weight.grad is not None and g.fc_prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.vit.visual.parameters())


def _authors_count(nf: int, z: int, text: int, width: int, grid: int, resolution: int, code_ch: int, mid_ch: int,
                   map_blocks: int, prompts: int) -> int:
    """GALIP's NetG from its layer shapes (code/models/GALIP.py): fc_code, CLIP_Adapter (M_Blocks, conv_fuse,
    fc_prompt, conv), G_Blocks with DF-GAN's widths, to_rgb."""
    def n(*layers: nn.Module) -> int:
        return sum(p.numel() for layer in layers for p in layer.parameters())

    cond = z + text

    def dfblk(c: int) -> int:  # DFBLK: two Affines, each with a gamma and a beta MLP (Linear, ReLU, Linear)
        return 2 * 2 * n(nn.Linear(cond, c), nn.Linear(c, c))

    def shortcut(i: int, o: int) -> int:
        return n(nn.Conv2d(i, o, 1)) if i != o else 0

    def m_block(i: int, m: int, o: int) -> int:  # conv1, fuse1, conv2, fuse2
        return n(nn.Conv2d(i, m, 3), nn.Conv2d(m, o, 3)) + dfblk(m) + dfblk(o) + shortcut(i, o)

    def g_block(i: int, o: int) -> int:  # fuse1, c1, fuse2, c2
        return dfblk(i) + n(nn.Conv2d(i, o, 3), nn.Conv2d(o, o, 3)) + dfblk(o) + shortcut(i, o)

    chs = [nf * min(2**i, 8) for i in range(resolution.bit_length() - 2)][::-1]  # get_G_in_out_chs
    return (n(nn.Linear(z, code_ch * grid * grid)) + map_blocks * m_block(code_ch, mid_ch, code_ch)
            + n(nn.Conv2d(code_ch, width, 5), nn.Conv2d(width, 8 * nf, 5), nn.Linear(cond, width * prompts))
            + sum(g_block(i, o) for i, o in zip(chs[:-1], chs[1:])) + n(nn.Conv2d(nf, 3, 3)))


def test_parameter_count_is_the_authors_formula():
    g = make_g(64)
    assert parameter_count(g) == _authors_count(4, 100, TEXT_DIM, 64, 4, 64, 8, 4, 2, 2)
    # GALIP's CUB setting (nf 64, z 100, CLIP sentence 512, ViT-B/32: width 768, grid 7, 256 px): README's figure
    assert _authors_count(64, 100, 512, 768, 7, 256, 64, 32, 4, 8) == 51_830_211


@pytest.mark.parametrize("options, match", [(dict(prompt_layers=(1, 5)), "blocks 0..2"),
                                            (dict(prompt_layers=(2, 1)), "increasing")])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        make_g(**options)
