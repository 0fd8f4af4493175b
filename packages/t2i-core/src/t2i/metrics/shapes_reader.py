"""The Shapes attribute reader: a small CNN that reads shape, colour, background, size and position back
from an image of the built-in Shapes data set (``specs/shapes.md``).

It is t2i's own evaluator, so every number it produces must be reproducible: it is trained from a fixed
recipe (:class:`ReaderRecipe`) and a seed, saved once per resolution, and reused.

What it learns from. Shapes has a finite universe: 72 object masks (4 shapes x 2 sizes x 9 positions) x 31
allowed (colour, background) pairs = 2,232 distinct images per resolution (:func:`universe`). The reader
trains on all of them, the held-out (shape, colour) pairs included (it judges generated images of held-out
captions too), balanced by construction, each seen about 20 times under fresh random augmentation that
imitates GAN artefacts: Gaussian pixel noise, a 3x3 box blur mixed in, brightness and per-channel colour
jitter, and a shift of at most one pixel. No flips and no crops: position and orientation (the triangle
points up) are attributes.

Architecture. The input is resized with ``F.interpolate(mode="area")`` to :data:`INPUT_SIZE` (32) px: a box
filter like the data set's own anti-aliasing, so a 64 px image becomes nearly the 32 px rendering of the same
scene and one small network serves every resolution (each resolution still gets its own weights, as it sees
slightly different pixels; 16 px input is upsampled). Then five 3x3 convolutions with batch norm and ReLU
(:attr:`ReaderRecipe.trunk`: 16-16-32-32-64 channels, three of stride 2: 32 -> 4 px), a flatten of the 4x4
map (not a global pooling: the map keeps *where*, which the position head needs), one hidden linear layer
(the reader's feature vector, :meth:`ShapesReader.features`) and five linear heads.

Training runs on one CPU thread: a network this small gains little from more, small multi-threaded kernels
run several times slower on a machine shared with a training run, and one thread gives the same weights
whatever the machine's core count.

Accuracy. Real images are all in the training universe, so clean accuracy only says that the reader learned
its task; it also records its accuracy on the same images under fresh augmentation
(``val_accuracy_augmented``), which says how far to trust it on imperfect, generated pixels.

Cache: ``<cache>/evaluators/shapes-reader-{R}px-v{VERSION}-{hash}.safetensors``, where ``<cache>`` is the
``cache_dir`` argument, else ``$T2I_CACHE_DIR``, else ``~/.cache/t2i``, and the hash covers the recipe,
:data:`VERSION` and the data set's ``SPEC_VERSION``. Bump :data:`VERSION` whenever this file changes what a
recipe trains. Training holds a lock on the cache file: parallel study jobs or DDP ranks train it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.shapes import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPEC_VERSION,
    Shapes,
    ShapesConfig,
    render,
)
from ..errors import UsageError
from ..fileio import atomic_path, cache_lock
from ..paths import default_cache_dir
from ..weights import module_sha256

__all__ = [
    "VERSION",
    "INPUT_SIZE",
    "ATTRIBUTES",
    "VAL_SIZE",
    "ReaderRecipe",
    "ShapesReader",
    "universe",
    "augment",
    "train_reader",
    "fit_reader",
    "load_reader",
    "reader_path",
]

VERSION = 1  # bump when the code changes what a recipe trains: it keys the cache file
INPUT_SIZE = 32
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "background": tuple(BACKGROUNDS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
}
VAL_SIZE = 2000  # real test images (the Shapes test split, data seed 0) the reader is validated on
_FORMAT = "t2i-shapes-reader"
Trunk = tuple[tuple[int, int], ...]  # (width, stride) of each 3x3 convolution


@dataclass(frozen=True)
class ReaderRecipe:
    """Everything that decides the reader's weights, besides :data:`VERSION`; hashed into its file name."""

    resolution: int
    seed: int = 0
    steps: int = 700
    batch_size: int = 64
    lr: float = 3e-3  # Adam, one-cycle schedule
    trunk: Trunk = ((16, 1), (16, 2), (32, 1), (32, 2), (64, 2))
    hidden: int = 128
    noise_max: float = 0.08  # per-image Gaussian pixel noise std ~ U(0, noise_max), on [0, 1] pixels
    blur_prob: float = 0.5  # probability of mixing in a 3x3 box blur, with weight ~ U(0, 1)
    brightness: float = 0.1  # per-image gain ~ U(1 - b, 1 + b)
    offset: float = 0.05  # per-image offset ~ U(-o, o), plus per-channel offset ~ U(-o/2, o/2)
    max_shift: int = 1  # whole-pixel shift at INPUT_SIZE, replicate padding

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "trunk": [list(layer) for layer in self.trunk],
            "version": VERSION,
            "spec_version": SPEC_VERSION,
            "input_size": INPUT_SIZE,
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# -- the network -------------------------------------------------------------------------------------
class ShapesReader(nn.Module):
    """uint8 Shapes images ``(N, R, R, 3)`` -> the five attribute codes (:meth:`predict`).

    ``info`` says where the weights came from: recipe, file name, sha256 of the weights, validation accuracy.
    """

    def __init__(self, resolution: int, trunk: Trunk = ReaderRecipe.trunk, hidden: int = 128):
        super().__init__()
        self.resolution = _check_resolution(resolution)
        layers: list[nn.Module] = []
        c_in, side = 3, INPUT_SIZE
        for c_out, stride in trunk:
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in, side = c_out, side // stride
        self.trunk = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU(True))
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(v)) for name, v in ATTRIBUTES.items()})
        self.info: dict[str, Any] = {}

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 ``(N, R, R, 3)`` -> float ``(N, 3, 32, 32)`` in ``[0, 1]`` (area-resized)."""
        r = self.resolution
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (r, r, 3):
            got = f"{images.dtype} {tuple(images.shape)}"
            raise UsageError(f"shapes reader: expected uint8 images of shape (N, {r}, {r}, 3), got {got}")
        x = images.permute(0, 3, 1, 2).float().div_(255)
        return x if r == INPUT_SIZE else F.interpolate(x, size=INPUT_SIZE, mode="area")

    def features(self, x: Tensor) -> Tensor:
        """Prepared images (``[0, 1]``, 32 px) -> the hidden feature vector ``(N, hidden)``."""
        return self.hidden(self.trunk(x * 2 - 1))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Prepared images -> logits per attribute."""
        h = self.features(x)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 500) -> dict[str, Tensor]:
        """uint8 images ``(N, R, R, 3)`` -> ``{attribute: int64 (N,)}`` codes (CPU); eval mode, in batches."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: dict[str, list[Tensor]] = {name: [] for name in ATTRIBUTES}
        try:
            for start in range(0, len(images), batch_size):
                logits = self(self.prepare(images[start : start + batch_size].to(device)))
                for name in ATTRIBUTES:
                    out[name].append(logits[name].argmax(1).cpu())
        finally:
            self.train(was_training)
        empty = torch.empty(0, dtype=torch.int64)
        return {name: torch.cat(parts) if parts else empty for name, parts in out.items()}


def _check_resolution(resolution: Any) -> int:
    ok = isinstance(resolution, int) and not isinstance(resolution, bool) and resolution >= 16
    if not ok or resolution & (resolution - 1):
        raise UsageError(f"shapes reader: resolution must be a power of two >= 16, got {resolution!r}")
    return resolution


# -- training ----------------------------------------------------------------------------------------
def universe(resolution: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Every distinct Shapes image at ``resolution``: uint8 ``(2232, R, R, 3)`` and its attribute codes."""
    images, codes = [], []
    for s, shape in enumerate(SHAPES):
        for c, colour in enumerate(COLOURS):
            for b, background in enumerate(BACKGROUNDS):
                if COLOURS[colour] == BACKGROUNDS[background]:  # the data set never draws white on white
                    continue
                for z, size in enumerate(SIZES):
                    for p, position in enumerate(POSITIONS):
                        images.append(render(shape, colour, background, size, position, resolution))
                        codes.append((s, c, b, z, p))
    table = torch.tensor(codes, dtype=torch.int64)
    return torch.from_numpy(np.stack(images)), {name: table[:, i] for i, name in enumerate(ATTRIBUTES)}


def augment(x: Tensor, recipe: ReaderRecipe, gen: torch.Generator) -> Tensor:
    """Imitate GAN artefacts on prepared images ``(N, 3, 32, 32)`` in ``[0, 1]``; draws from ``gen`` only.

    Random numbers are drawn on the CPU, so the draws are the same on any device.
    """
    n = x.shape[0]

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=gen).to(x.device)

    if recipe.max_shift:  # one slice per distinct shift, not per image
        m, side = recipe.max_shift, 2 * recipe.max_shift + 1
        padded = F.pad(x, (m, m, m, m), mode="replicate")
        shifts = torch.randint(0, side * side, (n,), generator=gen).to(x.device)
        out = torch.empty_like(x)
        for k in range(side * side):
            dy, dx = divmod(k, side)
            rows = shifts == k
            out[rows] = padded[rows, :, dy : dy + INPUT_SIZE, dx : dx + INPUT_SIZE]
        x = out
    blurred = _box_blur(x)
    w = uniform(n, 1, 1, 1) * (uniform(n, 1, 1, 1) < recipe.blur_prob)
    x = x * (1 - w) + blurred * w
    gain = 1 + recipe.brightness * (2 * uniform(n, 1, 1, 1) - 1)
    offset = recipe.offset * (2 * uniform(n, 1, 1, 1) - 1) + recipe.offset / 2 * (2 * uniform(n, 3, 1, 1) - 1)
    noise = torch.randn(x.shape, generator=gen).to(x.device) * (recipe.noise_max * uniform(n, 1, 1, 1))
    return (x * gain + offset + noise).clamp_(0, 1)


def _box_blur(x: Tensor) -> Tensor:
    """3x3 mean, replicate padding, as two sums of shifted slices (several times faster than avg_pool2d)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    rows = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) / 9


def train_reader(
    resolution: int,
    *,
    seed: int = 0,
    steps: int = ReaderRecipe.steps,
    batch_size: int = ReaderRecipe.batch_size,
    device: str | torch.device = "cpu",
) -> ShapesReader:
    """Train a reader for ``resolution``: the default :class:`ReaderRecipe`, with these changes."""
    resolution = _check_resolution(resolution)
    return fit_reader(ReaderRecipe(resolution, seed=seed, steps=steps, batch_size=batch_size), device=device)


def fit_reader(recipe: ReaderRecipe, *, device: str | torch.device = "cpu") -> ShapesReader:
    """Train a reader from ``recipe``: the same recipe on the same device gives the same weights.

    The CPU (one thread) is the reference. The result's ``info`` holds the recipe, the training time and the
    validation accuracy, clean and augmented, on :data:`VAL_SIZE` real test images.
    """
    resolution = _check_resolution(recipe.resolution)
    start = time.perf_counter()
    with _one_cpu_thread(device):
        images, codes = universe(resolution)
        gen = torch.Generator().manual_seed(recipe.seed)
        with torch.random.fork_rng(devices=[]):  # initialise from the seed; the global RNG is left as it was
            torch.manual_seed(recipe.seed)
            reader = ShapesReader(resolution, recipe.trunk, recipe.hidden)
        reader.to(device).train()
        x_all, y_all = reader.prepare(images.to(device)), {name: v.to(device) for name, v in codes.items()}
        opt = torch.optim.Adam(reader.parameters(), lr=recipe.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=recipe.steps, pct_start=0.15)
        order = torch.empty(0, dtype=torch.int64)
        for _ in range(recipe.steps):
            if len(order) < recipe.batch_size:  # epochs of seeded permutations: every image equally often
                order = torch.cat([order, torch.randperm(len(images), generator=gen)])
            idx, order = order[: recipe.batch_size].to(device), order[recipe.batch_size :]
            logits = reader(augment(x_all[idx], recipe, gen))
            loss = sum(F.cross_entropy(logits[name], y_all[name][idx]) for name in ATTRIBUTES)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        reader.eval()
        train_seconds = time.perf_counter() - start
        clean, augmented = validate(reader, recipe)
    reader.info = {
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe.digest(),
        "val_accuracy": clean,
        "val_accuracy_augmented": augmented,
        "val_size": VAL_SIZE,
        "train_seconds": round(train_seconds, 1),
        "sha256": module_sha256(reader),
    }
    return reader


@contextlib.contextmanager
def _one_cpu_thread(device: str | torch.device) -> Iterator[None]:
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def validate(reader: ShapesReader, recipe: ReaderRecipe) -> tuple[dict[str, float], dict[str, float]]:
    """Per-attribute accuracy on :data:`VAL_SIZE` real test images: clean, and augmented (fixed seed 1234)."""
    test = Shapes(ShapesConfig(train_size=1, test_size=VAL_SIZE)).load("test", reader.resolution)
    clean = _accuracy(reader.predict(test.images), test.attributes)
    reader.eval()
    device = next(reader.parameters()).device
    gen = torch.Generator().manual_seed(1234)
    predicted: dict[str, list[Tensor]] = {name: [] for name in ATTRIBUTES}
    for start in range(0, len(test), 500):
        logits = reader(augment(reader.prepare(test.images[start : start + 500].to(device)), recipe, gen))
        for name in ATTRIBUTES:
            predicted[name].append(logits[name].argmax(1).cpu())
    augmented = _accuracy({name: torch.cat(parts) for name, parts in predicted.items()}, test.attributes)
    return clean, augmented


def _accuracy(predicted: dict[str, Tensor], truth: dict[str, Tensor]) -> dict[str, float]:
    return {name: round((predicted[name] == truth[name]).double().mean().item(), 4) for name in ATTRIBUTES}


# -- the cache ---------------------------------------------------------------------------------------
def reader_path(resolution: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the default reader of ``resolution`` is (or will be) saved."""
    digest = ReaderRecipe(resolution=_check_resolution(resolution)).digest()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "evaluators" / f"shapes-reader-{resolution}px-v{VERSION}-{digest}.safetensors"


def load_reader(resolution: int, cache_dir: str | os.PathLike | None = None) -> ShapesReader:
    """The default reader of ``resolution``: read from the cache, or trained (default recipe) and saved there.

    A file that cannot be read, or does not hold this recipe's weights, is trained again and replaced.
    """
    path = reader_path(resolution, cache_dir)
    reader = _read(path, resolution)
    if reader is None:
        with cache_lock(path):
            reader = _read(path, resolution)  # trained by another process while this one waited for the lock
            if reader is None:
                print(f"t2i: training the Shapes attribute reader for {resolution} px, once (about half a minute); "
                      f"cache: {path}", file=sys.stderr, flush=True)  # fmt: skip
                reader = train_reader(resolution)
                _write(path, reader)
    reader.info["file"] = path.name
    return reader


def _write(path: Path, reader: ShapesReader) -> None:
    """Save atomically (a reader of the cache never sees half a file)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in reader.state_dict().items()}
    metadata = {"format": _FORMAT, **{k: json.dumps(v) for k, v in reader.info.items() if k != "file"}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _read(path: Path, resolution: int) -> ShapesReader | None:
    """The reader saved at ``path``, or ``None`` when it is missing, unreadable or not this recipe's."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    recipe = ReaderRecipe(resolution=resolution)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if metadata.get("format") != _FORMAT:
            return None
        info = {k: json.loads(v) for k, v in metadata.items() if k != "format"}
        if info.get("recipe_hash") != recipe.digest():
            return None
        reader = ShapesReader(resolution, recipe.trunk, recipe.hidden)
        reader.load_state_dict(tensors, strict=True)
    except Exception:  # truncated, garbled or foreign: whatever safetensors, json or torch raise, train again
        return None
    reader.eval()
    reader.info = {**info, "sha256": module_sha256(reader)}
    return reader
