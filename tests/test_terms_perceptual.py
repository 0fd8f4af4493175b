"""The ``perceptual`` term: VGG16 weights resolution, what it measures, and that training G with it lowers
the feature gap it measures. The VGG16 weights are random ones this file writes (torchvision's key names),
truncated after the deepest layer the tests use, so nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import t2i
from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, StepOutputs
from t2i.losses import HingeLoss
from t2i.terms.perceptual import VGG16_FILE, VGG16_LAYERS, PerceptualConfig, PerceptualTerm, vgg16_trunk
from t2i.testing import check_loss

LAYERS = ("relu1_2", "relu2_2")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    trunk = vgg16_trunk(VGG16_LAYERS["relu2_2"])
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in trunk.state_dict().items()}, path)
    return path


def term(path, **options) -> PerceptualTerm:
    return PerceptualTerm(PerceptualConfig(weights=str(path), **{"layers": LAYERS, "resize": 0, **options}))


def test_layer_names_are_torchvisions_indices():
    assert [VGG16_LAYERS[n] for n in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")] == [3, 8, 15, 22, 29]
    trunk = vgg16_trunk(29)
    assert isinstance(trunk[29], nn.ReLU) and isinstance(trunk[4], nn.MaxPool2d) and trunk[28].out_channels == 512


def test_missing_weights_offline_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("T2I_VGG16_WEIGHTS", "T2I_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UsageError) as info:
        PerceptualTerm(PerceptualConfig(layers=LAYERS))
    message = str(info.value)
    assert "\n" not in message and VGG16_FILE in message and "T2I_VGG16_WEIGHTS" in message


def test_weights_from_the_environment_and_a_file_that_does_not_fit(vgg_file, tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_VGG16_WEIGHTS", str(vgg_file))
    assert PerceptualTerm(PerceptualConfig(layers=LAYERS, resize=0)).vgg[0].weight.requires_grad is False
    with pytest.raises(UsageError, match=r"lack .* tensors of torchvision's vgg16 trunk up to layer 15"):
        PerceptualTerm(PerceptualConfig(layers=("relu3_3",)))
    with pytest.raises(UsageError, match="unknown VGG16 layer"):
        t2i.registry("losses").make_config("perceptual", {"layers": "relu9_9"})


def test_what_it_measures(vgg_file):
    t = term(vgg_file)
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    assert t.distance(real, real).item() == 0.0
    assert t.distance(torch.zeros_like(real), real).item() > 0  # grey images are far from the reals
    assert [f.shape[-1] for f in term(vgg_file, resize=48).features(real)] == [48, 24]  # resized before VGG
    gram = term(vgg_file, compare="gram")
    assert gram.distance(real, real).item() == 0.0 and gram.distance(real.roll(1, 0), real).item() > 0


class TinyG(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 3 * 16 * 16), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, 3, 16, 16)


@pytest.mark.parametrize("compare", ["features", "gram"])
def test_training_g_with_it_lowers_the_gap_it_measures_under_bf16(vgg_file, compare):
    torch.manual_seed(0)
    g, t = TinyG(), term(vgg_file, compare=compare)
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    z = torch.randn(4, 8)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    gaps = []
    for _ in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fake = g(z)
        out = StepOutputs(None, DiscOutput(torch.zeros(4)), real, fake, torch.zeros(4, 2), HingeLoss())
        loss = t.g_loss(out)
        assert loss.dtype == torch.float32 and loss.requires_grad
        opt.zero_grad()
        loss.backward()
        opt.step()
        gaps.append(loss.item())
    assert gaps[-1] < 0.8 * gaps[0], gaps


def test_passes_the_conformance_kit_and_trains_in_the_engine(vgg_file):
    check_loss("perceptual", {"weights": str(vgg_file), "layers": list(LAYERS), "resize": 0})
