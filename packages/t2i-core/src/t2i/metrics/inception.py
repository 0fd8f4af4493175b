"""The Inception-v3 of FID, KID and IS, exactly as torch-fidelity and the TTUR/TF reference compute it.

The network is torch-fidelity's own :class:`~torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3`
(the TF graph ported layer by layer, with TF's average pooling and TF 1.x's bilinear resize to 299 x 299),
so there is no second copy of Inception to drift from the reference. It takes uint8 images and gives:

- ``pool3``: the 2048-d pool features (FID, KID);
- ``logits_unbiased``: the 1008-way logits without the bias (the IS of the TF reference and torch-fidelity).

``mode`` picks how images reach the network's 299 x 299 input (:data:`MODES`); the weights and layers are the
same in every mode:

- ``legacy_tensorflow`` (default): TF 1.x's bilinear resize of the uint8 image, then ``(x - 128) / 128``, inside
  torch-fidelity's network: the TTUR / torch-fidelity / DF-GAN numbers;
- ``clean``: clean-fid's: PIL bicubic resize with antialiasing of each channel as float32 (clipped to
  [0, 255], not re-quantised), then ``(x - 128) / 128``;
- ``legacy_pytorch``: pytorch-fid's: the image as [0, 1] floats, ``F.interpolate`` bilinear (no antialias,
  ``align_corners=False``), then ``2 x - 1``.

Weights, in this order (never random, never other weights in silence):

1. ``weights=PATH`` (the option of the metric / extractor);
2. ``$T2I_INCEPTION_WEIGHTS``;
3. ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's file name) in ``$T2I_WEIGHTS_DIR``, then in
   torch hub's ``$TORCH_HOME/hub/checkpoints`` (where torch-fidelity itself keeps it);
4. a download from torch-fidelity's release URL into that folder, unless ``T2I_OFFLINE=1``.

The file is read with ``torch.load(weights_only=True)`` (tensors only, no pickled code) and its sha256 is
recorded in every protocol. :func:`write_random_inception_weights` writes a file with the same layout and
random values: for tests and smoke runs only; numbers from it mean nothing about image quality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..weights import file_sha256, resolve_weights

__all__ = [
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "ENV_INCEPTION_WEIGHTS",
    "RESIZE_MODE",
    "MODES",
    "check_mode",
    "forward_normalised",
    "network_input",
    "InceptionFeatures",
    "resolve_inception_weights",
    "write_random_inception_weights",
]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
ENV_INCEPTION_WEIGHTS = "T2I_INCEPTION_WEIGHTS"
RESIZE_MODE = "TF1-compatible bilinear (torch-fidelity interpolate_bilinear_2d_like_tensorflow1x) to 299x299, uint8 input"

# mode -> the resize and normalisation it records (see the module docstring)
MODES = {
    "legacy_tensorflow": RESIZE_MODE + ", then (x - 128) / 128",
    "clean": "clean-fid: PIL bicubic with antialiasing to 299x299 of each channel as float32, clipped to [0, 255] "
             "(make_resizer('PIL', False, 'bicubic', (299, 299))), then (x - 128) / 128",
    "legacy_pytorch": "pytorch-fid: [0, 1] floats, F.interpolate bilinear to 299x299 "
                      "(align_corners=False, no antialias), then 2x - 1",
}  # fmt: skip
_SIZE = 299

# Our feature names -> torch-fidelity's.
_FEATURES = {"pool3": "2048", "logits_unbiased": "logits_unbiased"}
_DIMS = {"pool3": 2048, "logits_unbiased": 1008}


def resolve_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """The Inception weights file, found as the module docstring says; :class:`WeightsNotFound` otherwise."""
    return resolve_weights(
        "Inception-v3 (torch-fidelity)",
        filenames=[INCEPTION_FILE],
        explicit=weights,
        env=ENV_INCEPTION_WEIGHTS,
        url=INCEPTION_URL,
    )


def _build(state_dict: dict[str, Tensor] | None, features: list[str]) -> nn.Module:
    """torch-fidelity's module, given its weights as a state dict instead of a path or URL.

    torch-fidelity's constructor loads weights itself, from a path (``torch.load(weights_only=False)``,
    which would run pickled code) or from its URL. We hand it the already safely-loaded state dict through
    its URL loader, so it neither downloads nor unpickles; its own strict ``load_state_dict`` still checks
    every tensor name and shape. ``state_dict=None`` builds the module with its default initialisation.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    cls = tf_inception.FeatureExtractorInceptionV3
    names = [_FEATURES[f] for f in features]
    with mock.patch.object(tf_inception, "load_state_dict_from_url", lambda *a, **k: state_dict):
        if state_dict is None:
            with mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None):
                return cls("inception-v3-compat", names)
        return cls("inception-v3-compat", names)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`; a one-line UsageError naming the closest and the known ones otherwise."""
    if mode not in MODES:
        import difflib

        close = difflib.get_close_matches(mode, MODES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown Inception mode '{mode}'{hint} known: {', '.join(MODES)}")
    return mode


def _clean_resize(images: Tensor) -> Tensor:
    """clean-fid's resize: uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, 299, 299)`` in [0, 255], one channel at a time."""
    from PIL import Image

    out = np.empty((images.shape[0], _SIZE, _SIZE, 3), np.float32)
    for i, image in enumerate(images.cpu().numpy()):
        for c in range(3):
            channel = Image.fromarray(image[:, :, c].astype(np.float32), mode="F")
            out[i, :, :, c] = np.asarray(channel.resize((_SIZE, _SIZE), resample=Image.BICUBIC)).clip(0, 255)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def network_input(images: Tensor, mode: str, device: str | torch.device = "cpu") -> Tensor:
    """What the network's first convolution sees in ``clean`` / ``legacy_pytorch`` mode: uint8 ``(B, H, W, 3)`` ->
    normalised float32 ``(B, 3, 299, 299)`` on ``device``. (``legacy_tensorflow`` resizes inside the network.)"""
    if mode == "clean":
        x = _clean_resize(images).to(device)
        return (x - 128) / 128  # clean-fid's InceptionV3W: x - 128, then / 128
    if mode == "legacy_pytorch":
        x = images.to(device).permute(0, 3, 1, 2).float().div(255)  # torchvision's ToTensor
        x = F.interpolate(x, size=(_SIZE, _SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1
    raise ValueError(f"network_input covers clean and legacy_pytorch, not {mode!r}")


_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
           "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
           "Mixed_7b", "Mixed_7c", "AvgPool")  # fmt: skip


def forward_normalised(net: nn.Module, x: Tensor, features: tuple[str, ...]) -> dict[str, Tensor]:
    """torch-fidelity's forward from its normalised 299 x 299 input on (past its resize and ``(x - 128) / 128``)."""
    for name in _LAYERS:
        x = getattr(net, name)(x)
    pool3 = torch.flatten(x, 1)
    out = {"pool3": pool3}
    if "logits_unbiased" in features:
        out["logits_unbiased"] = pool3.mm(net.fc.weight.T)
    return {f: out[f].float() for f in features}


class InceptionFeatures:
    """Frozen TF-compatible Inception-v3: uint8 ``(B, H, W, 3)`` -> ``{"pool3": (B, 2048), "logits_unbiased": (B, 1008)}``.

    ``features`` picks what to compute (asking for ``pool3`` only skips the last matrix product);
    ``batch_size`` is how many images go through the network at once when called on more; ``mode`` is the
    resize and normalisation (:data:`MODES`).
    """

    name = "inception"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        features: tuple[str, ...] = ("pool3", "logits_unbiased"),
        batch_size: int = 64,
        mode: str = "legacy_tensorflow",
    ):
        self.mode = check_mode(mode)
        unknown = [f for f in features if f not in _FEATURES]
        if unknown or not features:
            raise UsageError(f"inception features: unknown {unknown or 'none asked'}; provided: {', '.join(_FEATURES)}")
        if batch_size < 1:
            raise UsageError(f"inception batch_size must be >= 1, got {batch_size}")
        self.weights_path = resolve_inception_weights(weights)
        self.weights_sha256 = file_sha256(self.weights_path)
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            why = type(exc).__name__
            raise UsageError(f"Inception weights {self.weights_path} cannot be read as a PyTorch state dict ({why})") from None
        try:
            net = _build(state, list(features))
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"{self.weights_path} does not hold torch-fidelity's Inception-v3 weights: {first}") from None
        self.device = torch.device(device)
        self.features = tuple(features)
        self.dims = {f: _DIMS[f] for f in self.features}
        self.batch_size = batch_size
        # channels_last: about 1.5x faster on CPU (oneDNN) and on tensor-core GPUs; same numbers to ~1e-6
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 ``(B, H, W, 3)`` (CPU or device) -> float32 features on the CPU, ``batch_size`` images at a time."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"Inception expects uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        parts: dict[str, list[Tensor]] = {f: [] for f in self.features}
        for start in range(0, images.shape[0], self.batch_size):
            if self.mode == "legacy_tensorflow":
                batch = images[start : start + self.batch_size].to(self.device, non_blocking=True).permute(0, 3, 1, 2)
                out = dict(zip(self.features, self.net(batch)))
            else:
                x = network_input(images[start : start + self.batch_size], self.mode, self.device)
                out = forward_normalised(self.net, x.contiguous(memory_format=torch.channels_last), self.features)
            for name, value in out.items():
                parts[name].append(value.float().cpu())
        return {f: torch.cat(v) if v else torch.empty(0, _DIMS[f]) for f, v in parts.items()}

    def protocol(self) -> dict[str, Any]:
        """Extractor, weights file and sha256, mode, resize and feature sizes, for a metric's protocol."""
        return {
            "extractor": "inception-v3-compat (torch-fidelity FeatureExtractorInceptionV3)",
            "features": dict(self.dims),
            "weights_file": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "mode": self.mode,
            "resize": MODES[self.mode],
        }

    def cache_key(self) -> dict[str, Any]:
        """What cached features of this extractor must match: name, weights hash, preprocessing."""
        import torch_fidelity

        key = {"extractor": self.name, "weights_sha256": self.weights_sha256, "resize": RESIZE_MODE,
               "torch_fidelity": torch_fidelity.__version__}
        if self.mode != "legacy_tensorflow":  # keeps the caches written before modes existed valid
            key.update(mode=self.mode, resize=MODES[self.mode])
        return key


def write_random_inception_weights(path: str | os.PathLike, seed: int = 0, fc_scale: float = 30.0) -> Path:
    """Write a state dict with torch-fidelity's Inception layout and random values; return ``path``.

    For tests and smoke runs only (the real file cannot be downloaded everywhere). Convolutions are
    He-normal so activations neither vanish nor explode through the ~90 layers; batch-norm statistics stay
    at identity; ``fc`` has weights of std ``fc_scale / sqrt(2048)`` so the logits differ enough between
    images for the Inception Score to be well away from 1.
    """
    gen = torch.Generator().manual_seed(seed)
    net = _build(None, ["pool3"])
    state = net.state_dict()
    for name, t in state.items():
        if name.endswith("conv.weight"):
            fan_in = t[0].numel()
            t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif name.endswith("bn.bias"):
            t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
        elif name == "fc.weight":
            t.copy_(torch.randn(t.shape, generator=gen) * fc_scale / t.shape[1] ** 0.5)
        elif name == "fc.bias":
            t.copy_(torch.randn(t.shape, generator=gen))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in state.items()}, out)
    return out
