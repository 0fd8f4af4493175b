"""The Inception-v3 of FID, KID and IS, exactly as torch-fidelity and the TTUR/TF reference compute it.

The network is torch-fidelity's own :class:`~torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3`
(the TF graph ported layer by layer, with TF's average pooling and TF 1.x's bilinear resize to 299 x 299),
so there is no second copy of Inception to drift from the reference. It takes uint8 images and gives:

- ``pool3``: the 2048-d pool features (FID, KID);
- ``logits_unbiased``: the 1008-way logits without the bias (the IS of the TF reference and torch-fidelity).

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

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..weights import file_sha256, resolve_weights

__all__ = [
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "ENV_INCEPTION_WEIGHTS",
    "RESIZE_MODE",
    "InceptionFeatures",
    "resolve_inception_weights",
    "write_random_inception_weights",
]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
ENV_INCEPTION_WEIGHTS = "T2I_INCEPTION_WEIGHTS"
RESIZE_MODE = "TF1-compatible bilinear (torch-fidelity interpolate_bilinear_2d_like_tensorflow1x) to 299x299, uint8 input"

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


class InceptionFeatures:
    """Frozen TF-compatible Inception-v3: uint8 ``(B, H, W, 3)`` -> ``{"pool3": (B, 2048), "logits_unbiased": (B, 1008)}``.

    ``features`` picks what to compute (asking for ``pool3`` only skips the last matrix product);
    ``batch_size`` is how many images go through the network at once when called on more.
    """

    name = "inception"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        features: tuple[str, ...] = ("pool3", "logits_unbiased"),
        batch_size: int = 64,
    ):
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
            batch = images[start : start + self.batch_size].to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            out = self.net(batch)
            for name, value in zip(self.features, out):
                parts[name].append(value.float().cpu())
        return {f: torch.cat(v) if v else torch.empty(0, _DIMS[f]) for f, v in parts.items()}

    def protocol(self) -> dict[str, Any]:
        """Extractor, weights file and sha256, resize mode and feature sizes, for a metric's protocol."""
        return {
            "extractor": "inception-v3-compat (torch-fidelity FeatureExtractorInceptionV3)",
            "features": dict(self.dims),
            "weights_file": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "resize": RESIZE_MODE,
        }

    def cache_key(self) -> dict[str, Any]:
        """What cached features of this extractor must match: name, weights hash, preprocessing."""
        import torch_fidelity

        return {"extractor": self.name, "weights_sha256": self.weights_sha256, "resize": RESIZE_MODE,
                "torch_fidelity": torch_fidelity.__version__}


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
