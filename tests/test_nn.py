"""t2i.nn, the building blocks plugins share, and the option checks for config dataclasses in t2i.options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from t2i.nn import (
    CondBatchNorm2d,
    PlainBatchNorm2d,
    batch_norm,
    check_context,
    doubling_width,
    doublings,
    map_sizes,
    trunk_features,
)
from t2i.options import require_choices


class Net(nn.Module):
    resolutions = (32, 64, 128)


# -- conditional batch norm ------------------------------------------------------------------------------


def test_cond_batch_norm_starts_as_plain_batch_norm_and_then_follows_the_condition():
    torch.manual_seed(0)
    cbn = CondBatchNorm2d(4, cond_dim=6)
    x, c = torch.randn(8, 4, 5, 5), torch.randn(8, 6)
    plain = nn.BatchNorm2d(4, affine=False)
    assert torch.equal(cbn(x, c), plain(x))  # gamma = beta = 0 at init
    with torch.no_grad():
        cbn.gamma.weight.fill_(0.1), cbn.beta.bias.fill_(0.5)
    gamma = cbn.gamma(c)[:, :, None, None]
    expected = plain(x) * (1 + gamma) + 0.5
    assert torch.allclose(cbn(x, c), expected, atol=1e-6)
    assert list(cbn.state_dict()) == [
        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
        "gamma.weight", "gamma.bias", "beta.weight", "beta.bias",
    ]


def test_cond_batch_norm_names_bias_and_wrapped_layers():
    def sn(layer):
        nn.init.orthogonal_(layer.weight)
        return spectral_norm(layer)

    cbn = CondBatchNorm2d(4, 6, bias=False, zero_init=False, wrap=sn, names=("scale", "shift"))
    assert [name for name, _ in cbn.named_children()] == ["bn", "scale", "shift"]
    assert cbn.scale.bias is None and "weight" in cbn.shift.parametrizations
    assert "scale.parametrizations.weight.original" in cbn.state_dict()
    x = torch.randn(3, 4, 2, 2)
    assert cbn(x, torch.randn(3, 6)).shape == x.shape


def test_plain_batch_norm_takes_and_ignores_a_condition():
    x = torch.randn(4, 3, 2, 2)
    norm = batch_norm(3)
    assert type(norm) is PlainBatchNorm2d and isinstance(norm, nn.BatchNorm2d)
    assert torch.equal(norm(x, torch.randn(4, 5)), nn.BatchNorm2d(3)(x))
    assert isinstance(batch_norm(3, 5), CondBatchNorm2d)
    assert isinstance(batch_norm(3, 5, names=("a", "b")).a, nn.Linear)


# -- sizes and widths ------------------------------------------------------------------------------------


def test_check_context_refuses_in_one_line_and_counts_the_doublings():
    assert check_context(Net, 64, 16) == doublings(64) == 4
    with pytest.raises(ValueError, match=r"^Net supports resolutions 32, 64, 128; got 48$"):
        check_context(Net, 48, 16)
    for text_dim in (0, True, 1.5):
        with pytest.raises(ValueError, match=r"Net: text_dim must be a positive integer"):
            check_context(Net, 32, text_dim)


def test_map_sizes_and_dcgan_widths():
    assert map_sizes(32) == [4, 8, 16, 32]
    assert map_sizes(64)[-2::-1] == [32, 16, 8, 4]  # a discriminator's maps after each down block
    assert [doubling_width(8, 64, r) for r in map_sizes(64)] == [64, 32, 16, 8, 8]
    assert [doubling_width(8, 128, r, base_size=128, max_multiple=8) for r in map_sizes(128)] == [
        64, 64, 64, 32, 16, 8
    ]


def test_trunk_features_keeps_every_block_output_after_its_extra_module():
    blocks = [lambda x: x + 1, lambda x: x * 2]
    h, features = trunk_features(torch.zeros(1), blocks)
    assert h.item() == 2 and [f.item() for f in features] == [1, 2]
    h, features = trunk_features(torch.zeros(1), blocks, after=[nn.Identity(), lambda x: -x])
    assert h.item() == -2 and [f.item() for f in features] == [1, -2]


# -- Literal and bool options ----------------------------------------------------------------------------


@dataclass
class Options:
    norm: Literal["batch", "none"] = field(default="batch", metadata={"help": "normalisation"})
    level: Literal[1, 2] = field(default=1, metadata={"help": "a numbered choice"})
    spectral_norm: bool = field(default=False, metadata={"help": "spectral norm"})
    width: int = field(default=8, metadata={"help": "not a choice"})

    def __post_init__(self) -> None:
        require_choices(self)


def test_require_choices_reads_the_choices_from_the_annotations():
    Options(norm="none", level=2, spectral_norm=True)
    with pytest.raises(ValueError, match=r"^norm must be one of 'batch', 'none', got 'layer'$"):
        Options(norm="layer")
    with pytest.raises(ValueError, match=r"^spectral_norm must be true or false, got 'yes'$"):
        Options(spectral_norm="yes")
    with pytest.raises(ValueError, match=r"^level must be one of 1, 2, got True$"):
        Options(level=True)  # True == 1, but it is not the choice 1
    cfg = Options()
    cfg.norm = "layer"
    require_choices(cfg, "spectral_norm")  # only the fields named
    with pytest.raises(TypeError, match="width is not declared as a Literal"):
        require_choices(cfg, "width")


def test_the_registry_path_gives_the_same_refusal_as_a_direct_build():
    from t2i.errors import ConfigError
    from t2i.options import build_config

    assert build_config(Options, {"norm": "none", "spectral_norm": "true"}).spectral_norm is True
    with pytest.raises(ConfigError, match="norm"):
        build_config(Options, {"norm": "layer"})
