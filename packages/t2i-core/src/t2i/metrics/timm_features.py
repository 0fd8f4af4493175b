"""Any timm model as a feature extractor: ``timm:<model name>``, and ``dinov2`` for the DINOv2 backbone that
recent evaluation studies recommend.

``dinov2`` is DINOv2 ViT-L/14 (``vit_large_patch14_dinov2.lvd142m``, Oquab et al. 2023) at 224 px, the
feature space of FD_DINOv2 in Stein et al. 2023 ("Exposing flaws of generative model evaluation metrics",
the ``dgm-eval`` code): images resized to 224 px (bicubic), ImageNet mean/std, the final-norm CLS token
(1024-d). For the smaller backbone, ask for ``timm:vit_small_patch14_dinov2.lvd142m`` (384-d; at its
pretrained 518 px unless ``image_size`` says otherwise).

Preprocessing, for every model: uint8 ``(B, H, W, 3)`` -> ``[0, 1]`` -> resized to the model's input size
(``image_size``, else the pretrained config's ``input_size``) with the config's interpolation
(antialiased) -> normalised with the config's mean and std. The feature is the model's pooled output with
the classifier removed (``num_classes=0``): :attr:`TimmFeatures.dims` is ``{"features": D}``.

Weights. The model is created with ``pretrained=False`` and its weights loaded from one file, found in
this order: ``weights=PATH`` -> ``$T2I_DINOV2_WEIGHTS`` (``dinov2``) or ``$T2I_TIMM_WEIGHTS``
(``timm:...``) -> ``$T2I_WEIGHTS_DIR`` and torch hub's ``checkpoints`` folder, by the file names timm and
torch hub use (``dinov2_vitl14_pretrain.pth``, ``<model>.safetensors``) -> the Hugging Face cache
(``models--timm--<model>/snapshots/*/model.safetensors``) -> a download when online. The file may be a
timm state dict or the original release (DINOv2's own ``.pth`` is converted by timm's
``checkpoint_filter_fn``); every parameter of the model must come from it, or loading fails: never
random weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..weights import WeightsNotFound, file_sha256, resolve_weights

__all__ = ["TimmFeatures", "DINOV2_MODEL", "DINOV2_IMAGE_SIZE", "make_timm_extractor", "make_dinov2_extractor",
           "timm_weights", "load_timm_weights"]

DINOV2_MODEL = "vit_large_patch14_dinov2.lvd142m"
DINOV2_IMAGE_SIZE = 224
ENV_DINOV2 = "T2I_DINOV2_WEIGHTS"
ENV_TIMM = "T2I_TIMM_WEIGHTS"


class TimmFeatures:
    """A frozen timm model: uint8 images ``(B, H, W, 3)`` -> ``{"features": float32 (B, D)}`` on the CPU.

    ``device`` is where the network runs; ``batch_size`` how many images go through it at once.
    """

    def __init__(
        self,
        model: str,
        *,
        weights: str | os.PathLike | None = None,
        image_size: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        name: str | None = None,
        env: str = ENV_TIMM,
    ):
        self.model_name = model
        self.name = name or f"timm:{model}"
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise UsageError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        _check_model_name(model)
        # the file first: a missing one is reported before a large network is built for nothing
        self.weights_path = timm_weights(model, explicit=weights, env=env, what=self.name)
        self.net = _create(model, image_size)
        cfg = self.net.pretrained_cfg
        self.image_size = int(image_size or cfg["input_size"][-1])
        self.interpolation = str(cfg.get("interpolation") or "bicubic")
        if self.interpolation not in ("bicubic", "bilinear"):
            self.interpolation = "bicubic"
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
        load_timm_weights(self.net, self.weights_path, model)
        self.net.eval().requires_grad_(False).to(self.device)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.dims = {"features": int(self.net.num_features)}

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 ``(B, H, W, 3)`` -> the model's normalised float input ``(B, 3, S, S)``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{self.name}: expected uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).permute(0, 3, 1, 2).float().div_(255)
        s = self.image_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode=self.interpolation, align_corners=False, antialias=True).clamp_(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        parts = [self.net(self.preprocess(images[i : i + self.batch_size])).float().cpu()
                 for i in range(0, len(images), self.batch_size)]
        empty = torch.empty(0, self.dims["features"])
        return {"features": torch.cat(parts) if parts else empty}

    def protocol(self) -> dict[str, Any]:
        return {
            "extractor": self.name,
            "timm_model": self.model_name,
            "weights": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "input_size": self.image_size,
            "resize": f"{self.interpolation}, antialiased, from uint8 RGB in [0, 1]",
            "mean": list(self.mean),
            "std": list(self.std),
            "feature": f"pooled output, classifier removed ({self.dims['features']}-d)",
            "timm_version": _timm_version(),
        }

    def cache_key(self) -> dict[str, Any]:
        return {
            "extractor": self.name,
            "timm_model": self.model_name,
            "weights_sha256": self.weights_sha256,
            "input_size": self.image_size,
            "resize": self.interpolation,
        }


def make_timm_extractor(model: str = "", **opts: Any) -> TimmFeatures:
    """``make_extractor("timm:<model>")``: any timm model; options ``weights``, ``image_size``, ``device``."""
    if not model:
        raise UsageError("extractor 'timm' needs a model name: timm:<model>, e.g. timm:resnet50.a1_in1k")
    return TimmFeatures(model, **opts)


def make_dinov2_extractor(**opts: Any) -> TimmFeatures:
    """``make_extractor("dinov2")``: DINOv2 ViT-L/14 at 224 px (Stein et al. 2023); ``$T2I_DINOV2_WEIGHTS``."""
    opts.setdefault("image_size", DINOV2_IMAGE_SIZE)
    return TimmFeatures(DINOV2_MODEL, name="dinov2", env=ENV_DINOV2, **opts)


# -- creating the network ----------------------------------------------------------------------------
def _check_model_name(model: str) -> None:
    import timm

    if not timm.models.is_model(model):
        import difflib

        close = difflib.get_close_matches(model, timm.list_models(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "; see timm.list_models()"
        raise UsageError(f"unknown timm model '{model}'{hint}")


def _create(model: str, image_size: int | None) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0}
    if image_size is not None:
        if image_size < 8:
            raise UsageError(f"timm:{model}: image_size must be >= 8, got {image_size}")
        kwargs["img_size"] = int(image_size)  # ViTs build their position embeddings for it
    try:
        return timm.create_model(model, **kwargs)
    except TypeError:  # a CNN takes no img_size: it runs at any size
        kwargs.pop("img_size", None)
        return timm.create_model(model, **kwargs)


def _timm_version() -> str:
    import timm

    return timm.__version__


# -- weights -----------------------------------------------------------------------------------------
def _hf_cache_root() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def _hf_cached_file(hf_hub_id: str) -> Path | None:
    """``model.safetensors`` (or ``pytorch_model.bin``) of ``hf_hub_id`` in the Hugging Face cache, if any."""
    snapshots = _hf_cache_root() / f"models--{hf_hub_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    for name in ("model.safetensors", "pytorch_model.bin"):
        found = sorted(p for p in snapshots.glob(f"*/{name}") if p.is_file())
        if found:
            return found[-1]
    return None


def timm_weights(model: str, *, explicit: str | os.PathLike | None = None, env: str = ENV_TIMM,
                 what: str | None = None) -> Path:
    """The weights file of timm ``model``, resolved as the module docstring says, or :class:`WeightsNotFound`."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model)
    url = (cfg.url or "") if cfg is not None else ""
    hf_hub_id = (cfg.hf_hub_id or "") if cfg is not None else ""
    full = f"{cfg.architecture}.{cfg.tag}" if cfg is not None and cfg.tag else model  # test_vit -> test_vit.r160_in1k
    names = [Path(url).name] if url else []
    names += [f"{full}.safetensors", f"{full}.pth"] + ([f"{model}.safetensors"] if model != full else [])
    if url:
        download = url
    elif hf_hub_id:
        download = f"https://huggingface.co/{hf_hub_id}/resolve/main/model.safetensors"
    else:
        download = None
    what = what or f"timm:{model}"
    kwargs: dict[str, Any] = dict(filenames=names, explicit=explicit, env=env)
    if (explicit is not None and str(explicit) != "") or os.environ.get(env):
        return resolve_weights(what, **kwargs)
    try:
        return resolve_weights(what, **kwargs, url=None)  # T2I_WEIGHTS_DIR, torch hub
    except WeightsNotFound:
        cached = _hf_cached_file(hf_hub_id) if hf_hub_id else None
        if cached is not None:
            return cached
        if download is None:
            raise
    return resolve_weights(what, **kwargs, url=download)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint: the user needs the file name
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read weights file {path}: {first[:200]}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_timm_weights(net: nn.Module, path: Path, model: str) -> None:
    """Load ``path`` into ``net``; every parameter must come from the file (a classifier may be left over)."""
    state = _read_state_dict(path)
    convert = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    try:
        if convert is not None:
            state = convert(state, net)
        result = net.load_state_dict(state, strict=False)
    except Exception as exc:  # shape mismatches and conversion failures: the file is for another model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"weights file {path} does not fit timm model '{model}': {first[:300]}") from None
    classifier = str(net.pretrained_cfg.get("classifier") or "head")
    heads = (classifier, "head", "fc", "classifier", "mask_token")
    unexpected = [k for k in result.unexpected_keys if not k.split(".")[0] in heads and not k.startswith(f"{classifier}.")]
    if result.missing_keys or unexpected:
        what = (f"missing {', '.join(result.missing_keys[:3])}" if result.missing_keys
                else f"unexpected {', '.join(unexpected[:3])}")
        raise UsageError(f"weights file {path} does not fit timm model '{model}' ({what}, ...)")
