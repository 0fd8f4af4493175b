"""Several image scales: a generator with two outputs (16 and 32 px), a discriminator per scale, a pyramid.

The networks are test-only and tiny (a few thousand parameters), defined here and registered through a
throwaway plugin, so the engine is tested on the contract alone (:mod:`t2i.engine.scales`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import t2i
from t2i import plugins
from t2i.engine.scales import ScalePairing, check_scales, downsample
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, Discriminator, Generator

from t2i_test_helpers import tiny_config


@dataclass
class TwoScaleConfig:
    ngf: int = 8


class TwoScaleG(Generator):
    """z + text -> a 16 px image and, from the same features, a 32 px one (AttnGAN's stages, in miniature)."""

    resolutions = (32,)
    z_dim = 8

    def __init__(self, cfg: TwoScaleConfig, resolution: int, text_dim: int):
        super().__init__()
        self.resolution, self.text_dim, w = resolution, text_dim, cfg.ngf
        self.fc = nn.Linear(self.z_dim + text_dim, w * 16 * 16)
        self.to_16 = nn.Conv2d(w, 3, 3, padding=1)
        self.up = nn.Conv2d(w, w, 3, padding=1)
        self.to_32 = nn.Conv2d(w, 3, 3, padding=1)

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.resolution // 2, self.resolution)

    def forward(self, z, text):
        h = F.leaky_relu(self.fc(torch.cat([z, text], 1)).view(z.shape[0], -1, 16, 16), 0.2)
        h32 = F.leaky_relu(self.up(F.interpolate(h, scale_factor=2.0)), 0.2)
        return [torch.tanh(self.to_16(h)), torch.tanh(self.to_32(h32))]


class ScaleNet(nn.Module):
    """One scale's judge: two strided convs, then a projection head with the text."""

    def __init__(self, width: int, text_dim: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, width, 4, 2, 1), nn.Conv2d(width, width, 4, 2, 1)])
        self.out = nn.Linear(width, 1)
        self.embed = nn.Linear(text_dim, width)

    def image_features(self, image):
        features, h = [], image
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            features.append(h)
        return h.mean((2, 3)), features

    def condition(self, h, text):
        return self.out(h).squeeze(1) + (self.embed(text) * h).sum(1)


@dataclass
class PerScaleConfig:
    ndf: int = 8
    weights: tuple[float, ...] = (1.0, 1.0)


class PerScaleD(Discriminator):
    """A judge per scale (16 and 32 px); ``scale_weights`` from its config (``weights``)."""

    resolutions = (32,)

    def __init__(self, cfg: PerScaleConfig, resolution: int, text_dim: int):
        super().__init__()
        self.resolution, self.text_dim = resolution, text_dim
        self.nets = nn.ModuleList([ScaleNet(cfg.ndf, text_dim) for _ in self.scales])
        self.scale_weights = tuple(cfg.weights)

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.resolution // 2, self.resolution)

    def image_features(self, image):
        return self.nets[-1].image_features(image)

    def condition(self, h, text):
        return self.nets[-1].condition(h, text)

    def forward(self, images, text, mismatched_text=None, **_):
        assert [x.shape[-1] for x in images] == list(self.scales)
        outs = []
        for net, image in zip(self.nets, images):
            h, features = net.image_features(image)
            mismatched = None if mismatched_text is None else net.condition(h, mismatched_text)
            outs.append(DiscOutput(net.condition(h, text), features, mismatched))
        return outs


@pytest.fixture()
def registered():
    plugin = types.ModuleType("multiscaleplugin")
    plugin.t2i_register_generators = t2i.hookimpl(
        lambda register: register("two_scale", TwoScaleG, config=TwoScaleConfig))
    plugin.t2i_register_discriminators = t2i.hookimpl(
        lambda register: register("per_scale", PerScaleD, config=PerScaleConfig))
    plugins.register_plugin(plugin, name="multiscaleplugin")
    yield


def _config(generator: str = "two_scale", discriminator: str = "per_scale", weights=(1.0, 1.0), **train):
    g = {"name": generator, "options": {"ngf": 8} if generator == "two_scale" else {"ngf": 8, "conditioning": "affine"}}
    d = {"name": discriminator, "options": {"ndf": 8, "weights": list(weights)} if discriminator == "per_scale" else {}}
    return tiny_config(generator=g, discriminator=d,
                       train={"steps": 2, "checkpoint_every": 0, "ema": 0.0, **train}, loss={"terms": {"r1": 1.0}})


def test_scales_pair_and_downsample_by_area():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(downsample(x, 2), F.avg_pool2d(x, 2)) and downsample(x, 4) is x
    g = TwoScaleG(TwoScaleConfig(), 32, 16)
    d = PerScaleD(PerScaleConfig(), 32, 16)
    pairing = ScalePairing(g, d)
    out = g(torch.randn(2, 8), torch.randn(2, 16))
    assert [x.shape[-1] for x in pairing.fakes(out)] == [16, 32] and pairing.names == ["@16", "@32"]
    assert [x.shape[-1] for x in pairing.reals(torch.zeros(2, 3, 32, 32))] == [16, 32]
    assert [x.shape[-1] for x in pairing.fakes(out[-1])] == [16, 32]  # a single output: its pyramid


def test_incompatible_scales_are_refused_in_one_line():
    g = TwoScaleG(TwoScaleConfig(), 32, 16)
    d = PerScaleD(PerScaleConfig(), 32, 16)
    d.__class__ = type("EightD", (PerScaleD,), {"scales": property(lambda self: (8, 32))})
    with pytest.raises(UsageError, match=r"include \[8\], which the generator does not output"):
        check_scales(g, d)
    d.__class__ = type("OddD", (PerScaleD,), {"scales": property(lambda self: (12, 32))})
    single = types.SimpleNamespace(resolution=32, scales=(32,))
    with pytest.raises(UsageError, match="must divide the generator's resolution 32"):
        check_scales(single, d)


def test_two_outputs_judged_per_scale_with_weighted_losses(registered, tmp_path):
    trainer = Trainer(_config(weights=(1.0, 3.0)), tmp_path / "run", quiet=True, tensorboard=False)
    assert trainer.gan_step.scales.weights == (1.0, 3.0)
    logs = trainer.train_step()
    for side in ("d", "g"):
        for key in ("adv", "total"):
            small, large = logs[f"{side}/{key}@16"], logs[f"{side}/{key}@32"]
            # the combined value is the weighted mean over the scales
            assert torch.allclose(logs[f"{side}/{key}"], (small + 3 * large) / 4, atol=1e-6), (side, key)
    assert "d/r1@16" in logs and "d/r1@32" in logs  # the gradient penalty at each scale
    parts = logs["d/adv@16"] + logs["d/matching_aware@16"] + logs["d/r1@16"]  # the tiny recipe's term and r1
    assert torch.allclose(logs["d/total@16"], parts, atol=1e-6)


@pytest.mark.slow
def test_a_multi_scale_run_trains_samples_the_final_scale_and_resumes_exactly(registered, tmp_path):
    straight = Trainer(_config(steps=4, checkpoint_every=2), tmp_path / "a", quiet=True, tensorboard=False)
    result = straight.fit()
    assert result.status == "finished"
    grid = straight.write_samples()
    from PIL import Image

    assert Image.open(grid).width >= 8 * 32  # eight 32 px columns: the final scale
    Trainer(_config(steps=2, checkpoint_every=2), tmp_path / "b", quiet=True, tensorboard=False).fit()
    Trainer(_config(steps=4, checkpoint_every=2), tmp_path / "b", resume=True, quiet=True, tensorboard=False).fit()
    for name in ("generator", "discriminator"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_single_output_generator_against_a_multi_scale_discriminator(registered, tmp_path):
    trainer = Trainer(_config(generator="dcgan"), tmp_path / "run", quiet=True, tensorboard=False)
    seen = []
    trainer.D.register_forward_hook(lambda m, args, out: seen.append([x.shape[-1] for x in args[0]]))
    logs = trainer.train_step()
    assert seen and all(s == [16, 32] for s in seen)  # the pyramid of G's image and of the real batch
    assert torch.isfinite(logs["g/adv@16"]) and torch.isfinite(logs["d/adv@32"])


def test_a_multi_output_generator_against_a_single_scale_discriminator(registered, tmp_path):
    trainer = Trainer(_config(discriminator="dcgan"), tmp_path / "run", quiet=True, tensorboard=False)
    seen = []
    trainer.D.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-1]))
    logs = trainer.train_step()
    assert seen and set(seen) == {32}  # the final image only
    assert "d/adv@32" not in logs and torch.isfinite(logs["d/adv"])
