"""``clip``: the text tower of a frozen open-clip model; embeddings L2-normalised, as CLIP compares them.

``model`` is any open-clip model name (``ViT-B-32``, ``ViT-B-32-quickgelu``, ``ViT-B-16`` ...) or the path of
a JSON model config; weights come from ``weights=PATH``, else ``$T2I_CLIP_WEIGHTS``, else the ``pretrained``
tag through open-clip's cache (downloaded when online). Offline without weights the encoder refuses to build,
naming what to pass. OpenAI's weights were trained with QuickGELU: use a ``-quickgelu`` model name or
``quick_gelu = true`` with them, or the embeddings are silently wrong. See :mod:`t2i.clip`.

Like ``minilm``, the model is frozen and its "tokens" are the final embeddings: :meth:`tokenize` runs the
text tower (batched, no gradients) and :meth:`forward` is the identity. The engine computes them once per
data set and keeps them on disk (``cache_embeddings``). The model is not a submodule, so checkpoints stay
small; :meth:`extra_state` records the model and the sha256 of its weights file, and a checkpoint made with
other weights is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..clip import ClipBundle, load_clip
from ..errors import UsageError
from ..interfaces import TextEncoder

__all__ = ["ClipTextConfig", "ClipTextEncoder"]

_BATCH = 256  # captions per text-tower call


@dataclass
class ClipTextConfig:
    model: str = field(default="ViT-B-32", metadata={"help": "open-clip model name or JSON config path"})
    pretrained: str = field(default="openai", metadata={"help": "open-clip pretrained tag, used when no weights file is given"})
    weights: str = field(default="", metadata={"help": "CLIP weights file (else $T2I_CLIP_WEIGHTS, else the pretrained tag)"})
    quick_gelu: bool = field(default=False, metadata={"help": "QuickGELU activations: needed for OpenAI's weights unless the model name ends in -quickgelu"})
    device: str = field(default="cpu", metadata={"help": "device the text tower runs on while embedding the captions"})


class ClipTextEncoder(TextEncoder):
    """A frozen CLIP text tower. ``tokenize`` returns the normalised embeddings; ``forward`` is the identity."""

    trainable = False
    cache_embeddings = True

    def __init__(self, cfg: ClipTextConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClipTextConfig()
        self.bundle: ClipBundle = load_clip(self.cfg.model, weights=self.cfg.weights or None,
                                            pretrained=self.cfg.pretrained or None, quick_gelu=self.cfg.quick_gelu,
                                            device=self.cfg.device)
        self.dim = self.bundle.embed_dim

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        captions = list(captions)
        if not captions:
            return torch.empty(0, self.dim)
        with torch.no_grad():
            rows = [self.bundle.encode_text(captions[i : i + _BATCH]) for i in range(0, len(captions), _BATCH)]
        return torch.cat(rows).float().cpu()

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"clip: expected rows of tokenize() with {self.dim} columns, got shape {tuple(tokens.shape)}")
        return tokens

    def extra_state(self) -> dict[str, Any]:
        return {"model": self.bundle.name, "weights": self.bundle.weights, "weights_sha256": self.bundle.weights_sha256,
                "quick_gelu": self.cfg.quick_gelu}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        saved, now = state.get("weights_sha256"), self.bundle.weights_sha256
        if saved and now and saved != now:
            raise UsageError(f"the checkpoint's clip text encoder used other weights ({state.get('weights')}, sha256 "
                             f"{saved[:12]}) than {self.bundle.weights} now ({now[:12]}); use the same weights")
