"""``clip``: the text tower of a frozen open-clip model; embeddings L2-normalised, as CLIP compares them.

``model`` is any open-clip model name (``ViT-B-32``, ``ViT-B-32-quickgelu``, ``ViT-B-16`` ...) or the path of
a JSON model config; weights come from ``weights=PATH``, else ``$T2I_CLIP_WEIGHTS``, else the ``pretrained``
tag through open-clip's cache (downloaded when online). Offline without weights the encoder refuses to build,
naming what to pass. OpenAI's weights were trained with QuickGELU: use a ``-quickgelu`` model name or
``quick_gelu = true`` with them, or the embeddings are silently wrong. See :mod:`t2i.clip`.

:meth:`~ClipTextEncoder.tokenize` returns CLIP's token ids ``(N, context)`` (77 for the OpenAI models) and
:meth:`~ClipTextEncoder.forward` runs the frozen text tower on them (no gradients, ``cfg.device``). The engine
runs it once per data set and keeps the sentence embeddings on disk (``cache_embeddings``).
:meth:`~ClipTextEncoder.forward_words` also returns the token features: the text transformer's outputs
before pooling, through ``ln_final`` and the text projection (``word_dim = embed_dim``, 512 for ViT-B-32, in
the space of the sentence embedding but not normalised), masked from the start token to the end token.

The model is not a submodule, so checkpoints stay small; :meth:`extra_state` records the model and the sha256
of its weights file, and a checkpoint made with other weights is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from ..clip import ClipBundle, load_clip
from ..errors import UsageError
from ..interfaces import TextEncoder, WordFeatures

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
    """A frozen CLIP text tower. ``tokenize`` returns CLIP's token ids; ``forward`` runs the tower on them."""

    trainable = False
    cache_embeddings = True

    def __init__(self, cfg: ClipTextConfig | None = None):
        super().__init__()
        self.cfg = cfg or ClipTextConfig()
        self.bundle: ClipBundle = load_clip(self.cfg.model, weights=self.cfg.weights or None,
                                            pretrained=self.cfg.pretrained or None, quick_gelu=self.cfg.quick_gelu,
                                            device=self.cfg.device)
        self.dim = self.bundle.embed_dim
        self.word_dim = self.bundle.embed_dim  # token features are projected like the sentence embedding

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        captions = list(captions)
        if not captions:
            return torch.zeros(0, 1, dtype=torch.long)
        return self.bundle.tokenizer(captions).long()

    def forward(self, tokens: Tensor) -> Tensor:
        return self._run(tokens, words=False)[0]

    def forward_words(self, tokens: Tensor) -> tuple[Tensor, WordFeatures]:
        """The sentence embeddings and the token features ``(B, L, embed_dim)``, ``L`` up to the batch's longest
        caption's end token, from one pass of the text tower."""
        sentence, words = self._run(tokens, words=True)
        assert words is not None
        return sentence, words

    @torch.no_grad()
    def _run(self, tokens: Tensor, *, words: bool) -> tuple[Tensor, WordFeatures | None]:
        if tokens.dtype != torch.long or tokens.dim() != 2:
            raise ValueError(f"clip: expected the token ids of tokenize(), got {tuple(tokens.shape)} {tokens.dtype}")
        if not len(tokens):
            return torch.empty(0, self.dim, device=tokens.device), (
                WordFeatures(torch.empty(0, 1, self.dim, device=tokens.device),
                             torch.ones(0, 1, dtype=torch.bool, device=tokens.device)) if words else None)
        parts = [self.bundle.encode_tokens(tokens[i : i + _BATCH], words=words) for i in range(0, len(tokens), _BATCH)]
        sentence = torch.cat([p[0] for p in parts])
        if not words:
            return sentence, None
        mask = torch.cat([p[2] for p in parts])  # type: ignore[misc]
        longest = int(mask.sum(1).max())
        features = torch.cat([p[1] for p in parts])[:, :longest]  # type: ignore[index]
        return sentence, WordFeatures(features * mask[:, :longest, None], mask[:, :longest])

    def extra_state(self) -> dict[str, Any]:
        return {"model": self.bundle.name, "weights": self.bundle.weights, "weights_sha256": self.bundle.weights_sha256,
                "quick_gelu": self.cfg.quick_gelu}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        saved, now = state.get("weights_sha256"), self.bundle.weights_sha256
        if saved and now and saved != now:
            raise UsageError(f"the checkpoint's clip text encoder used other weights ({state.get('weights')}, sha256 "
                             f"{saved[:12]}) than {self.bundle.weights} now ({now[:12]}); use the same weights")
