"""``perceptual``: a G term comparing frozen VGG16 features of each generated image and a real image.

What it compares, honestly: a text-to-image GAN has no pixel-aligned target for its output. In a G step
the engine holds a batch of real images and, for image ``i``, the caption G was given is one of real
image ``i``'s captions. The term compares VGG16 features of generated image ``i`` with those of real image
``i``. With ``compare = "features"`` (Johnson et al. 2016's content loss) this pulls each generated image
toward the layout and textures of *that one* real image of its caption: a prior toward real-looking
content, not a reconstruction (a caption fits many images; the noise is not meant to pick that one).
With ``compare = "gram"`` (Gatys et al.'s style loss) it compares Gram matrices, which ignore where
things are: a texture/colour-statistics prior that does not ask for the real image's layout.

Per layer the value is normalised like :mod:`feature matching <t2i.losses>`::

    features: mean((phi(fake) - phi(real))²) / (mean(phi(real)²) + 1e-8)
    gram:     mean((G(fake) - G(real))²)     / (mean(G(real)²) + 1e-8),  G(x) = F Fᵀ / (C H W)

averaged over the chosen layers: about 1 when the fake features are 0, 0 when they equal the real ones,
whatever the layer's scale, so a weight such as 0.1 means the same for every layer choice.

Images go from ``[-1, 1]`` to ``[0, 1]``, are resized to ``resize`` pixels (224, VGG's training size; 0
keeps the native size, much cheaper at 32-64 px) and normalised with ImageNet's mean and std. VGG16's
convolutional trunk is built only up to the deepest layer asked for, frozen, and loaded from torchvision's
checkpoint (``vgg16-397923af.pth``, keys ``features.N.weight``), resolved by :func:`t2i.weights.resolve_weights`:
``weights=PATH`` -> ``$T2I_VGG16_WEIGHTS`` -> ``$T2I_WEIGHTS_DIR`` / torch hub's checkpoints folder ->
download from torchvision's URL (unless ``T2I_OFFLINE`` is set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..interfaces import LossTerm, StepOutputs
from ..weights import resolve_weights

__all__ = ["VGG16_LAYERS", "VGG16_FILE", "VGG16_URL", "ENV_VGG16_WEIGHTS", "PerceptualConfig", "PerceptualTerm",
           "load_vgg16_features", "vgg16_trunk"]

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
ENV_VGG16_WEIGHTS = "T2I_VGG16_WEIGHTS"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's VGG16 ("D") trunk: conv widths, "M" for max-pooling; every conv is followed by a ReLU
_CFG_D: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _layer_names() -> dict[str, int]:
    """``relu<block>_<conv>`` -> index of that ReLU in ``vgg16().features`` (relu1_2 -> 3, relu3_3 -> 15)."""
    names, index, block, conv = {}, 0, 1, 0
    for item in _CFG_D:
        if item == "M":
            index, block, conv = index + 1, block + 1, 0
        else:
            conv += 1
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
    return names


VGG16_LAYERS: dict[str, int] = _layer_names()


def vgg16_trunk(last: int) -> nn.Sequential:
    """``torchvision.models.vgg16().features[: last + 1]``, built without the (large) classifier."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _CFG_D:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers[: last + 1])


def load_vgg16_features(path: str | Path, last: int) -> nn.Sequential:
    """VGG16's trunk up to layer ``last``, with weights from torchvision checkpoint ``path``, frozen in eval mode.

    The file may hold the whole network or only ``features.*`` up to ``last``; anything missing or of the
    wrong shape is a :class:`UsageError` naming the file.
    """
    trunk = vgg16_trunk(last)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip errors for a file that is not a checkpoint
        raise UsageError(f"VGG16 weights {path}: cannot read it ({type(exc).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"VGG16 weights {path}: expected a state dict (torchvision's {VGG16_FILE})")
    wanted = {k.removeprefix("features."): v for k, v in state.items()
              if k.startswith("features.") and k.split(".")[1].isdigit() and int(k.split(".")[1]) <= last}
    expected = trunk.state_dict()
    missing = [f"features.{k}" for k in expected if k not in wanted]
    if missing:
        raise UsageError(f"VGG16 weights {path} lack {len(missing)} tensors of torchvision's vgg16 trunk up to layer "
                         f"{last} (first: {missing[0]}); use torchvision's {VGG16_FILE}")
    wrong = [f"features.{k}" for k, v in expected.items() if tuple(wanted[k].shape) != tuple(v.shape)]
    if wrong:
        raise UsageError(f"VGG16 weights {path}: {wrong[0]} has shape {tuple(wanted[wrong[0].removeprefix('features.')].shape)}, "
                         f"expected {tuple(expected[wrong[0].removeprefix('features.')].shape)}")
    trunk.load_state_dict(wanted)
    return trunk.eval().requires_grad_(False)


@dataclass
class PerceptualConfig:
    layers: tuple[str, ...] = field(
        default=("relu1_2", "relu2_2", "relu3_3"),
        metadata={"help": "VGG16 ReLU outputs compared, e.g. relu1_2,relu2_2,relu3_3,relu4_3 (relu<block>_<conv>)"},
    )
    compare: Literal["features", "gram"] = field(
        default="features",
        metadata={"help": "features: per-position features (content; follows the real image's layout); "
                          "gram: Gram matrices (style statistics, layout-free)"},
    )
    resize: int = field(default=224, metadata={"help": "resize images to this many pixels before VGG (0: native size)"})
    weights: str = field(default="", metadata={"help": f"VGG16 checkpoint ({VGG16_FILE}); else ${ENV_VGG16_WEIGHTS}, the hub cache, or a download"})

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers must name at least one VGG16 layer")
        unknown = [name for name in self.layers if name not in VGG16_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layer(s) {', '.join(unknown)}; choose from {', '.join(VGG16_LAYERS)}")
        if self.resize < 0:
            raise ValueError(f"resize must be >= 0, got {self.resize}")


def _gram(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class PerceptualTerm(LossTerm):
    """G term: VGG16 feature (or Gram) distance between generated image i and real image i of the batch,
    the real image whose caption G was given; normalised per layer (see the module docstring)."""

    eps = 1e-8

    def __init__(self, cfg: PerceptualConfig | None = None):
        super().__init__()
        self.cfg = cfg or PerceptualConfig()
        self.taps = sorted({VGG16_LAYERS[name] for name in self.cfg.layers})
        path = resolve_weights("VGG16 (torchvision)", filenames=[VGG16_FILE], explicit=self.cfg.weights or None,
                               env=ENV_VGG16_WEIGHTS, url=VGG16_URL)
        self.vgg = load_vgg16_features(path, self.taps[-1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualTerm":
        super().train(mode)
        self.vgg.eval()  # frozen: always in eval mode
        return self

    def features(self, images: Tensor) -> list[Tensor]:
        """Images in [-1, 1] -> the chosen layers' activations, shallow to deep (differentiable)."""
        if self.mean.device != images.device:  # the engine does not move terms; follow the images
            self.to(images.device)
        x = (images.float() + 1.0) / 2.0  # float32 in, whatever G produced under autocast
        size = self.cfg.resize
        if size and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
        x = (x - self.mean) / self.std
        out, taps = [], set(self.taps)
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out

    def distance(self, fake: Tensor, real: Tensor) -> Tensor:
        """The per-layer normalised distance, averaged over layers (float32)."""
        with torch.no_grad():
            real_feats = self.features(real.detach())
        values = []
        for f, r in zip(self.features(fake), real_feats):
            f, r = f.float(), r.float()
            if self.cfg.compare == "gram":
                f, r = _gram(f), _gram(r)
            values.append((f - r).pow(2).mean() / (r.pow(2).mean() + self.eps))
        return torch.stack(values).mean()

    def g_loss(self, out: StepOutputs) -> Tensor:
        return self.distance(out.fake_images, out.real_images)
