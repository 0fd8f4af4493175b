"""A frozen open-clip model with its tokenizer and image normalisation, for the ``clip`` text encoder, the
contrastive loss term and the ``clip_score`` / ``r_precision`` metrics: one loader, one weights policy.

``model`` is an open-clip model name (``ViT-B-32``, ``ViT-B-32-quickgelu``, ``RN50`` ...; ``open_clip.
list_models()``) or the path of a JSON model config (``{"embed_dim": ..., "vision_cfg": ..., "text_cfg":
...}``; tests use tiny random ones). Weights, in order: ``weights=PATH`` -> ``$T2I_CLIP_WEIGHTS`` ->
``pretrained=TAG`` through open-clip's own cache (Hugging Face hub), downloading when online.
OpenAI's weights were trained with QuickGELU: use a ``-quickgelu`` model name or ``quick_gelu=True``
with them, or the features are silently wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .errors import UsageError
from .weights import WeightsNotFound, file_sha256, offline

__all__ = ["ClipBundle", "load_clip", "ENV_CLIP_WEIGHTS"]

ENV_CLIP_WEIGHTS = "T2I_CLIP_WEIGHTS"


@dataclass
class ClipBundle:
    """A frozen CLIP: ``encode_text(captions)`` and ``encode_image(uint8 or [-1, 1] images)``, both L2-normalised."""

    model: nn.Module
    tokenizer: Callable[[list[str]], Tensor]
    name: str
    weights: str  # file path or "tag:<pretrained tag>"
    weights_sha256: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else int(
            getattr(self.model, "embed_dim", 0)
        )

    def protocol(self) -> dict[str, Any]:
        return {"clip_model": self.name, "clip_weights": self.weights, "clip_weights_sha256": self.weights_sha256}

    def encode_text(self, captions: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(captions)).to(device)
        return nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_tokens(self, tokens: Tensor, *, words: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Token ids ``(B, context)`` from :attr:`tokenizer` -> (L2-normalised sentence embeddings ``(B, embed_dim)``,
        and with ``words`` the text transformer's per-token outputs before pooling, through ``ln_final`` and the
        text projection, ``(B, context, embed_dim)``, not normalised, with their ``(B, context)`` mask: ``True``
        from the start token up to the end token, the one CLIP pools). One pass; on the tokens' device."""
        device = next(self.model.parameters()).device
        captured: list[Tensor] = []
        ln_final = getattr(self.model, "ln_final", None)
        if words and ln_final is None:
            raise UsageError(f"CLIP model '{self.name}' has no ln_final layer to read token features from")
        handle = ln_final.register_forward_hook(lambda m, i, out: captured.append(out)) if words and ln_final else None
        try:
            sentence = nn.functional.normalize(self.model.encode_text(tokens.to(device)).float(), dim=-1)
        finally:
            if handle is not None:
                handle.remove()
        if not words:
            return sentence.to(tokens.device), None, None
        x = captured[-1]
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, nn.Linear):
            x = proj(x)
        elif proj is not None:
            x = x @ proj
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        last = tokens.shape[1] - 1 - (tokens != 0).flip(1).int().argmax(1)  # the end token: the last non-padding id
        mask = positions[None, :] <= last[:, None]
        return sentence.to(tokens.device), x.float().to(tokens.device), mask

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)`` in [-1, 1] -> CLIP's input (differentiable for floats)."""
        if images.dtype == torch.uint8:
            x = images.permute(0, 3, 1, 2).float() / 255.0
        else:
            x = (images.float() + 1.0) / 2.0
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                          align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def encode_image(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        x = self.preprocess(images.to(device))
        return nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)


def _model_name(model: str) -> str:
    """Register a JSON config file with open-clip and return its model name (the file's stem)."""
    import open_clip

    path = Path(model).expanduser()
    if model.endswith(".json"):
        if not path.is_file():
            raise UsageError(f"CLIP model config {path} does not exist")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(model, open_clip.list_models(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else "; see open_clip.list_models()"
        raise UsageError(f"unknown CLIP model '{model}'{hint}")
    return model


def load_clip(
    model: str = "ViT-B-32",
    *,
    weights: str | os.PathLike | None = None,
    pretrained: str | None = "openai",
    quick_gelu: bool = False,
    device: str | torch.device = "cpu",
) -> ClipBundle:
    """The frozen CLIP named by ``model``, with weights resolved as the module docstring says; never random."""
    import open_clip

    name = _model_name(model)
    if weights is None and os.environ.get(ENV_CLIP_WEIGHTS):
        weights = os.environ[ENV_CLIP_WEIGHTS]
    if weights is not None and str(weights) != "":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"CLIP weights: weights={path} is not a file")
        source, sha = str(path), file_sha256(path)
        try:
            net = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=quick_gelu, device=device)
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"CLIP weights {path} do not fit model '{name}': {first[:300]}") from None
    elif pretrained:
        how = f"pass weights=PATH (an open_clip_pytorch_model.bin for {name}) or set {ENV_CLIP_WEIGHTS}"
        if offline():
            raise WeightsNotFound(f"CLIP weights {name}/{pretrained} not available offline: {how}")
        try:
            net = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu, device=device)
        except Exception as exc:  # unknown tag, no network, no cache: the user needs the same advice
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsNotFound(f"CLIP weights {name}/{pretrained} could not be loaded ({first[:200]}): {how}") from None
        source, sha = f"tag:{pretrained}", ""
    else:
        raise WeightsNotFound(f"CLIP model '{name}' needs weights: pass weights=PATH, set {ENV_CLIP_WEIGHTS}, or a pretrained tag")
    net.eval().requires_grad_(False)
    visual = getattr(net, "visual", None)
    size = getattr(visual, "image_size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return ClipBundle(net, open_clip.get_tokenizer(name), name, source, sha, size, mean, std)
