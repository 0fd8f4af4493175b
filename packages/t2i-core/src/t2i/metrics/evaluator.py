"""t2i's own image/text evaluator for R-precision: a DAMSM-style encoder pair trained on a data set's captions.

AttnGAN's R-precision scores generated images with DAMSM (Xu et al. 2018), an image encoder and a text
encoder trained so that an image lies closer to its own caption than to others. This is the sentence-level
half of that, small enough to train on a CPU in a minute:

- text: words (lower-case ``[a-z0-9]+`` runs) -> a vocabulary built from the training captions (``<pad>``,
  ``<unk>``, then the words, sorted) -> word embeddings -> a bidirectional GRU -> both final states ->
  a linear projection to :attr:`EvaluatorRecipe.embed_dim`;
- image: uint8 RGB area-resized to :data:`INPUT_SIZE` (32) px -> five 3x3 convolutions with batch norm
  (three of stride 2, to 4x4) -> flatten (keeps *where*: captions say where things are) -> two linear
  layers to the same size;
- loss: symmetric InfoNCE over the batch on cosine similarities divided by ``temperature`` (DAMSM's
  sentence loss, whose gamma_3 = 10 is a temperature of 0.1), both directions averaged. Two images of a
  batch that share a caption are not counted as each other's negatives. Light pixel noise is added to the
  training images so that the image encoder tolerates imperfect, generated pixels.

Deterministic: the recipe and the seed decide the weights (on the CPU, one thread). Trained on the data
set's ``train`` split at one resolution and validated by R-precision on real ``test`` images (up to
:data:`VAL_SIZE`), the ceiling a generator can reach under this evaluator.

The file (safetensors) holds the weights, the vocabulary, the recipe, and a key: data set name, options and
resolution, recipe, :data:`VERSION`. :func:`ensure_evaluator` reuses a file whose key matches and rebuilds the
default cache file when it does not; metrics check that the data set and resolution match the reference
split they score. Default file: ``<cache>/evaluators/evaluator-<data>-<R>px-v<VERSION>.safetensors``, with
``<cache>`` = ``$T2I_CACHE_DIR``, else ``~/.cache/t2i``. Training holds a lock on the file, so parallel study
jobs or DDP ranks that need the same evaluator train it once and the others load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..fileio import atomic_path, cache_lock
from ..interfaces import Dataset
from ..paths import default_cache_dir
from ..weights import module_sha256

__all__ = [
    "VERSION", "INPUT_SIZE", "VAL_SIZE", "EvaluatorRecipe", "Evaluator", "tokenize", "build_vocabulary",
    "train_evaluator", "save_evaluator", "load_evaluator", "ensure_evaluator", "default_evaluator_path",
    "evaluator_key", "shapes_evaluator",
]

VERSION = 1  # bump when the code changes what a recipe trains: it is part of every file's key
INPUT_SIZE = 32
VAL_SIZE = 1000
_FORMAT = "t2i-evaluator"
_WORD = re.compile(r"[a-z0-9]+")
Trunk = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class EvaluatorRecipe:
    """Everything that decides the evaluator's weights besides the data; part of its key."""

    seed: int = 0
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3  # Adam, one-cycle schedule
    embed_dim: int = 128
    word_dim: int = 64
    gru_hidden: int = 96  # per direction
    trunk: Trunk = ((16, 1), (16, 2), (32, 1), (32, 2), (64, 2))
    image_hidden: int = 256
    temperature: float = 0.1
    noise_max: float = 0.05  # per-image Gaussian pixel noise std ~ U(0, noise_max), on [0, 1] pixels
    max_words: int = 32

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "embed_dim", "word_dim", "gru_hidden", "image_hidden", "max_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"evaluator {name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise UsageError(f"evaluator batch_size must be >= 2 (a contrastive loss needs negatives), got {self.batch_size}")
        if self.seed < 0:
            raise UsageError(f"evaluator seed must be >= 0, got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trunk": [list(layer) for layer in self.trunk], "input_size": INPUT_SIZE}


# -- text --------------------------------------------------------------------------------------------
def tokenize(caption: str) -> list[str]:
    """``"A red circle, on the left"`` -> ``["a", "red", "circle", "on", "the", "left"]``."""
    return _WORD.findall(caption.lower())


def build_vocabulary(captions: Sequence[str]) -> list[str]:
    """``["<pad>", "<unk>", *sorted words of the captions]``."""
    return ["<pad>", "<unk>", *sorted({w for c in captions for w in tokenize(c)})]


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` + lengths ``(B,)`` -> ``(B, embed_dim)``: word embeddings, a bidirectional GRU."""

    def __init__(self, vocab_size: int, recipe: EvaluatorRecipe):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, recipe.word_dim, padding_idx=0)
        self.gru = nn.GRU(recipe.word_dim, recipe.gru_hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * recipe.gru_hidden, recipe.embed_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.clamp(min=1).cpu(),
                                                   batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (2, B, hidden): the last state of each direction
        return self.proj(torch.cat([h[0], h[1]], dim=1))


class ImageEncoder(nn.Module):
    """Prepared images ``(B, 3, 32, 32)`` in ``[0, 1]`` -> ``(B, embed_dim)``."""

    def __init__(self, recipe: EvaluatorRecipe):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 3, INPUT_SIZE
        for c_out, stride in recipe.trunk:
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in, side = c_out, side // stride
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, recipe.image_hidden), nn.ReLU(True),
                                  nn.Linear(recipe.image_hidden, recipe.embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x * 2 - 1))


class Evaluator(nn.Module):
    """The encoder pair, its vocabulary and its key: ``encode_images`` / ``encode_text`` give unit vectors."""

    def __init__(self, vocabulary: Sequence[str], recipe: EvaluatorRecipe, key: dict[str, Any]):
        super().__init__()
        self.vocabulary = list(vocabulary)
        self.recipe = recipe
        self.key = key
        self.resolution = int(key["data"]["resolution"])
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.text = TextEncoder(len(self.vocabulary), recipe)
        self.image = ImageEncoder(recipe)
        self.info: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def token_ids(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Captions -> (ids ``(B, L)`` padded with 0, lengths ``(B,)``); unknown words -> ``<unk>``."""
        rows = [[self.index.get(w, 1) for w in tokenize(c)][: self.recipe.max_words] for c in captions]
        length = max((len(r) for r in rows), default=1) or 1
        ids = torch.zeros(len(rows), length, dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        return ids, torch.tensor([len(r) for r in rows], dtype=torch.int64)

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 ``(B, R, R, 3)`` -> float ``(B, 3, 32, 32)`` in ``[0, 1]`` (area-resized) on the device."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"evaluator: expected uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        x = images.to(self.device).permute(0, 3, 1, 2).float().div_(255)
        return x if x.shape[-1] == INPUT_SIZE else F.interpolate(x, size=INPUT_SIZE, mode="area")

    @torch.no_grad()
    def encode_images(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """uint8 images -> L2-normalised ``(B, embed_dim)`` float32 on the CPU (eval mode)."""
        was = self.training
        self.eval()
        try:
            parts = [F.normalize(self.image(self.prepare(images[i : i + batch_size])), dim=1).cpu()
                     for i in range(0, len(images), batch_size)]
        finally:
            self.train(was)
        return torch.cat(parts) if parts else torch.empty(0, self.recipe.embed_dim)

    @torch.no_grad()
    def encode_text(self, captions: Sequence[str], batch_size: int = 1000) -> Tensor:
        """Captions -> L2-normalised ``(B, embed_dim)`` float32 on the CPU (eval mode)."""
        was = self.training
        self.eval()
        try:
            parts = []
            for i in range(0, len(captions), batch_size):
                ids, lengths = self.token_ids(captions[i : i + batch_size])
                parts.append(F.normalize(self.text(ids.to(self.device), lengths), dim=1).cpu())
        finally:
            self.train(was)
        return torch.cat(parts) if parts else torch.empty(0, self.recipe.embed_dim)

    def protocol(self) -> dict[str, Any]:
        """Where the evaluator came from, for a metric's protocol."""
        return {
            "evaluator_file": self.info.get("file", ""),
            "evaluator_sha256": self.info.get("sha256", ""),
            "evaluator_data": self.key["data"],
            "evaluator_recipe_hash": _digest(self.key),
            "evaluator_real_r_precision": self.info.get("real_r_precision"),
        }


# -- training ----------------------------------------------------------------------------------------
def evaluator_key(data_name: str, data_options: dict[str, Any], resolution: int, recipe: EvaluatorRecipe,
                  data_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a saved evaluator must match to be reused: the data set, its options and resolution, the recipe."""
    data: dict[str, Any] = {"name": data_name, "options": dict(data_options), "resolution": int(resolution)}
    for field_name in ("spec_version", "version"):  # a data set's own format version, where it has one
        if data_info and field_name in data_info:
            data[field_name] = data_info[field_name]
    return {"format": _FORMAT, "version": VERSION, "data": data, "recipe": recipe.to_dict()}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_evaluator(
    data: Dataset,
    *,
    data_name: str,
    data_options: dict[str, Any] | None = None,
    resolution: int = 32,
    recipe: EvaluatorRecipe | None = None,
    device: str | torch.device = "cpu",
    log: Any = None,
) -> Evaluator:
    """Train an evaluator on ``data``'s ``train`` split; validate it on ``test`` (R-precision on real images)."""
    from .retrieval import r_precision_of

    recipe = recipe or EvaluatorRecipe()
    device = torch.device(device)
    start = time.perf_counter()
    train = data.load("train", resolution)
    if len(train) < 2:
        raise UsageError(f"evaluator: the train split of {data_name} has {len(train)} image(s); it needs at least 2")
    key = evaluator_key(data_name, data_options or {}, resolution, recipe, train.info)
    with _one_cpu_thread(device):
        gen = torch.Generator().manual_seed(recipe.seed)
        with torch.random.fork_rng(devices=[]):  # initialise from the seed; the global RNG is left as it was
            torch.manual_seed(recipe.seed)
            model = Evaluator(build_vocabulary(train.captions), recipe, key)
        model.to(device).train()
        tokens, lengths = model.token_ids(train.captions)
        tokens = tokens.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps, pct_start=0.1)
        batch = min(recipe.batch_size, len(train))
        order = torch.empty(0, dtype=torch.int64)
        for step in range(recipe.steps):
            if len(order) < batch:  # epochs of seeded permutations
                order = torch.cat([order, torch.randperm(len(train), generator=gen)])
            rows, order = order[:batch], order[batch:]
            pick = (torch.rand(batch, generator=gen) * train.caption_counts[rows]).long()
            caption = train.caption_ids[rows, pick]
            x = model.prepare(train.images[rows])
            noise = torch.randn(x.shape, generator=gen) * (recipe.noise_max * torch.rand(batch, 1, 1, 1, generator=gen))
            x = (x + noise.to(device)).clamp_(0, 1)
            img = F.normalize(model.image(x), dim=1)
            txt = F.normalize(model.text(tokens[caption], lengths[caption]), dim=1)
            logits = img @ txt.T / recipe.temperature
            same = (caption[:, None] == caption[None, :]) & ~torch.eye(batch, dtype=torch.bool)
            logits = logits.masked_fill(same.to(device), float("-inf"))
            target = torch.arange(batch, device=device)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if log is not None and (step + 1) % max(1, recipe.steps // 10) == 0:
                log(f"step {step + 1}/{recipe.steps}: loss {loss.item():.4f}")
        model.eval()
        train_seconds = time.perf_counter() - start
        info: dict[str, Any] = {"train_seconds": round(train_seconds, 1), "train_size": len(train),
                                "vocabulary_size": len(model.vocabulary), "final_loss": round(loss.item(), 4)}
        if "test" in data.splits:
            test = data.load("test", resolution)
            if len(test) >= 2:
                n = min(VAL_SIZE, len(test))
                try:
                    result = r_precision_of(model, test, n=n, negatives=min(99, n - 1), folds=min(10, n), seed=0)
                    info.update(real_r_precision=round(result["real"], 4), real_r_precision_std=round(result["real_std"], 4),
                                val_size=n, val_negatives=min(99, n - 1))
                except UsageError as exc:  # too few distinct captions in the test split to validate
                    info["validation"] = f"skipped: {exc}"
    model.info = {**info, "sha256": module_sha256(model)}
    return model


# -- files -------------------------------------------------------------------------------------------
def default_evaluator_path(data_name: str, resolution: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache>/evaluators/evaluator-<data>-<R>px-v<VERSION>.safetensors``."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "evaluators" / f"evaluator-{data_name}-{resolution}px-v{VERSION}.safetensors"


def save_evaluator(model: Evaluator, path: str | os.PathLike) -> Path:
    """Write weights, vocabulary, recipe, key and info to one safetensors file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": _FORMAT, "key": json.dumps(model.key, sort_keys=True), "vocabulary": json.dumps(model.vocabulary),
                "info": json.dumps({k: v for k, v in model.info.items() if k != "file"})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    model.info["file"] = str(path)
    return path


def load_evaluator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Evaluator:
    """Read an evaluator file; a missing or unreadable one is a :class:`UsageError` naming the file."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"evaluator file {path} does not exist; make one with: t2i evaluator train --data NAME --out {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if metadata.get("format") != _FORMAT:
            raise ValueError("not a t2i evaluator file")
        key = json.loads(metadata["key"])
        if key.get("version") != VERSION:
            raise ValueError(f"made by evaluator version {key.get('version')}, this t2i reads version {VERSION}")
        recipe = _recipe_from_dict(key["recipe"])
        model = Evaluator(json.loads(metadata["vocabulary"]), recipe, key)
        model.load_state_dict(tensors, strict=True)
        info = json.loads(metadata.get("info", "{}"))
    except Exception as exc:  # truncated, foreign or stale: whatever safetensors, json or torch raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"evaluator file {path} cannot be used ({first}); train it again with t2i evaluator train") from None
    model.to(device).eval()
    model.info = {**info, "file": str(path), "sha256": module_sha256(model)}
    return model


def _recipe_from_dict(values: dict[str, Any]) -> EvaluatorRecipe:
    names = {f.name for f in dataclasses.fields(EvaluatorRecipe)}
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs["trunk"] = tuple(tuple(layer) for layer in kwargs.get("trunk", EvaluatorRecipe.trunk))
    return EvaluatorRecipe(**kwargs)


def read_key(path: Path) -> dict[str, Any] | None:
    """The key stored in an evaluator file, or ``None`` when the file is missing or not readable as one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["key"]) if metadata.get("format") == _FORMAT else None
    except Exception:
        return None


def ensure_evaluator(
    data: Dataset,
    *,
    data_name: str,
    data_options: dict[str, Any],
    resolution: int,
    recipe: EvaluatorRecipe,
    out: str | os.PathLike | None = None,
    force: bool = False,
    device: str | torch.device = "cpu",
    log: Any = None,
) -> tuple[Evaluator, bool]:
    """The evaluator for this data set, resolution and recipe: ``(evaluator, trained_now)``.

    ``out`` (default: :func:`default_evaluator_path`) is reused when its key matches. When it holds another
    key: the default cache file is rebuilt; a file the user named is only replaced with ``force``.
    """
    path = Path(out).expanduser() if out else default_evaluator_path(data_name, resolution)
    probe = data.load("train", resolution)  # the data set's own version fields are part of the key
    wanted = evaluator_key(data_name, data_options, resolution, recipe, probe.info)
    with cache_lock(path):  # checked under the lock: another process may be training this very file
        if path.exists() and not force:
            have = read_key(path)
            if have == wanted:
                return load_evaluator(path, device), False
            if out is not None:
                why = "it is not a t2i evaluator file" if have is None else _difference(have, wanted)
                raise UsageError(f"{path} exists and holds another evaluator ({why}); pass --force to replace it, "
                                 f"or choose another --out")
        if log is not None:
            log(f"training the evaluator for {data_name} at {resolution} px ({recipe.steps} steps); file: {path}")
        model = train_evaluator(data, data_name=data_name, data_options=data_options, resolution=resolution,
                                recipe=recipe, device=device, log=log)
        save_evaluator(model, path)
    return model, True


def _difference(have: dict[str, Any], wanted: dict[str, Any]) -> str:
    for part in ("version", "data", "recipe"):
        if have.get(part) != wanted.get(part):
            a, b = have.get(part), wanted.get(part)
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                return f"its {part} differs in {', '.join(keys)}"
            return f"its {part} differs"
    return "its key differs"


def shapes_evaluator(resolution: int, cache_dir: str | os.PathLike | None = None) -> Evaluator:
    """The default evaluator of the built-in Shapes data (default options and recipe), trained once and cached."""
    from ..data.shapes import Shapes, ShapesConfig
    from ..options import config_to_dict

    path = default_evaluator_path("shapes", resolution, cache_dir)
    if path.is_file() and read_key(path) is not None:
        return load_evaluator(path)
    with cache_lock(path):
        if path.is_file() and read_key(path) is not None:  # trained by another process while this one waited
            return load_evaluator(path)
        cfg = ShapesConfig()
        print(f"t2i: training the Shapes R-precision evaluator for {resolution} px, once (about a minute); cache: {path}",
              file=sys.stderr, flush=True)
        model = train_evaluator(Shapes(cfg), data_name="shapes", data_options=config_to_dict(cfg), resolution=resolution,
                                recipe=EvaluatorRecipe())
        save_evaluator(model, path)
    return model
