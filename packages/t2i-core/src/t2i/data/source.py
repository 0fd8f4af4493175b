"""What the data sets read from disk (``folder``, ``cub``, ``oxford``, ``coco``) have in common.

A data set on disk is read in two stages:

1. **Index** (every load, cheap): each format's :meth:`DiskDataset.index` lists the split's images as
   :class:`Item` records (a key, the image file, its captions, an optional crop box) and notes every
   problem it meets in :class:`Problems`: a caption file that is missing, empty or not UTF-8, a caption
   of thousands of words, a duplicate key, a manifest path that leaves the data root, a symlink loop.
   Bad items are dropped there. Structural problems (no images at all, a split file naming images that
   do not exist) raise :class:`~t2i.errors.UsageError` instead: the run refuses to start.
2. **Image cache** (first use only): :mod:`t2i.data.image_cache` decodes, crops and resizes every image
   once into a memory-mapped uint8 file; images that cannot be decoded are dropped and reported there.

Policy for captions (the same in every format): whitespace is collapsed, empty lines are ignored, a
file that is not valid UTF-8 is decoded with U+FFFD replacement characters, and a caption longer than
``max_caption_words`` words is cut there. Each of these is reported, and an image left with no caption
is skipped.
"""

from __future__ import annotations

import abc
import errno
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import UsageError
from ..interfaces import CaptionedImages, Dataset
from .image_cache import CachedImages, cached_images
from .items import Item, Problem, Problems

__all__ = [
    "IMAGE_SUFFIXES",
    "Item",
    "Problem",
    "Problems",
    "SplitIndex",
    "DiskDataConfig",
    "DiskDataset",
    "read_caption_file",
    "clean_captions",
    "walk_files",
    "leaves_root",
    "link_problem",
    "LINK_OUTSIDE",
    "safe_relative",
    "stat_items",
    "unit_hash",
]

_WARNED: set[str] = set()

LINK_OUTSIDE = "link leaves the data root"  # the problem kind of a symlink that points outside the root
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class SplitIndex:
    """A split's items (sorted by key) and the problems met while listing them."""

    items: list[Item]
    problems: Problems = field(default_factory=Problems)
    listed: int = 0  # items the source named before bad ones were dropped


# -- captions ---------------------------------------------------------------------------------------------
def clean_captions(lines: list[str], where: str, problems: Problems, max_words: int) -> list[str]:
    """Collapse whitespace, drop empty lines, cut captions longer than ``max_words`` words (reported)."""
    out = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if len(words) > max_words:
            problems.add("caption truncated", where, f"{len(words)} words cut to {max_words}")
            words = words[:max_words]
        out.append(" ".join(words))
    return out


def decode_text(data: bytes, where: str, problems: Problems) -> str:
    """UTF-8 (a BOM is dropped); anything else is decoded with replacement characters and reported."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.add("non-UTF-8 caption", where, f"byte {exc.start}: decoded with replacement characters")
        return data.decode("utf-8", errors="replace")


def read_caption_file(path: Path, problems: Problems, max_words: int, limit: int = 0) -> list[str]:
    """The captions in ``path`` (one per line; the first ``limit`` when ``limit > 0``); problems reported."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.add("missing caption file", path)
        return []
    except OSError as exc:
        kind = "symlink loop" if exc.errno == errno.ELOOP else "unreadable caption file"
        problems.add(kind, path, exc.strerror or str(exc))
        return []
    captions = clean_captions(decode_text(data, str(path), problems).splitlines(), str(path), problems, max_words)
    if not captions:
        problems.add("empty caption file", path)
    return captions[:limit] if limit > 0 else captions


# -- files --------------------------------------------------------------------------------------------------
def leaves_root(real_root: Path, path: Path) -> bool:
    """Whether ``path``, its symlinks followed, lies outside ``real_root`` (an already resolved folder)."""
    try:
        return not path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a symlink loop: reported where the file is opened
        return False


def link_problem(path: Path) -> str:
    """The detail of a "link leaves the data root" problem: where the link points."""
    return f"points to {os.path.realpath(path)}; skipped"


def walk_files(root: Path, problems: Problems, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Files under ``root`` (following symlinks that stay inside it), sorted. A symlink loop is reported, not
    followed twice; a symlink to a file or folder outside ``root`` is reported and not followed."""
    out: list[Path] = []
    real_root = root.resolve()
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as exc:
            problems.add("symlink loop" if exc.errno == errno.ELOOP else "unreadable folder", folder, exc.strerror or "")
            continue
        if (st.st_dev, st.st_ino) in seen:
            problems.add("symlink loop", folder, "folder already visited")
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.add("unreadable folder", folder, exc.strerror or "")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError as exc:
                problems.add("symlink loop" if exc.errno == errno.ELOOP else "unreadable file", path, exc.strerror or "")
                continue
            wanted = is_dir or suffixes is None or path.suffix.lower() in suffixes
            if wanted and entry.is_symlink() and leaves_root(real_root, path):
                problems.add(LINK_OUTSIDE, path, link_problem(path))
                continue
            if is_dir:
                stack.append(path)
            elif is_file and (suffixes is None or path.suffix.lower() in suffixes):
                out.append(path)
            elif entry.is_symlink():  # neither file nor folder: a loop, or pointing at nothing
                try:
                    os.stat(path)
                except OSError as exc:
                    kind = "symlink loop" if exc.errno == errno.ELOOP else "broken symlink"
                    problems.add(kind, path, exc.strerror or "")
    return sorted(out)


def stat_items(items: list[Item], problems: Problems, where: str, listed_in: str) -> list[Item]:
    """Items whose image file exists (size and mtime filled in). An image that is a symlink loop or not a
    file is reported and dropped; images that do not exist at all are structural: :class:`UsageError`."""
    out, missing = [], []
    for item in items:
        try:
            st = item.path.stat()
        except FileNotFoundError:
            missing.append(item.path)
            continue
        except OSError as exc:
            kind = "symlink loop" if exc.errno == errno.ELOOP else "unreadable image"
            problems.add(kind, item.path, exc.strerror or str(exc))
            continue
        if not os.path.isfile(item.path):
            problems.add("unreadable image", item.path, "not a regular file")
            continue
        item.size, item.mtime_ns = st.st_size, st.st_mtime_ns
        out.append(item)
    if missing:
        raise UsageError(f"{where}: {listed_in} names {len(missing)} image(s) that do not exist "
                         f"(first: {missing[0]}); is the data set complete?")
    return out


def safe_relative(root: Path, name: str) -> Path | None:
    """``root / name`` for a relative ``name`` that stays inside ``root`` (lexically), else ``None``."""
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return None
    normal = os.path.normpath(name.replace("\\", "/"))
    if normal == ".." or normal.startswith("../") or normal == ".":
        return None
    return root / normal


def unit_hash(key: str, seed: int) -> float:
    """A stable number in [0, 1) for ``key`` under ``seed`` (sha256): the seeded train/test assignment."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / 16**15


# -- the data set ---------------------------------------------------------------------------------------------
@dataclass
class DiskDataConfig:
    """Options every data set read from disk has."""

    root: str = field(default="", metadata={"help": "the data set's folder (--data KIND:PATH sets it)"})
    max_images: int = field(default=0, metadata={"help": "use the first N images of each split, by key (0: all)"})
    max_caption_words: int = field(default=100, metadata={"help": "cut longer captions to this many words (reported)"})
    min_image_side: int = field(default=8, metadata={"help": "skip images whose (cropped) shorter side is below this"})
    cache_dir: str = field(default="", metadata={"help": "image cache folder ('' = $T2I_CACHE_DIR/images or ~/.cache/t2i/images)"})
    workers: int = field(default=0, metadata={"help": "threads decoding images while the cache is built (0: one per CPU)"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar or warning lines while loading"})

    def __post_init__(self) -> None:
        if not str(self.root).strip():
            raise ValueError("needs root=PATH (or --data KIND:PATH)")
        for name in ("max_images", "min_image_side", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_caption_words < 1:
            raise ValueError(f"max_caption_words must be >= 1, got {self.max_caption_words}")


class DiskDataset(Dataset):
    """A data set whose images and captions are files under ``cfg.root``; subclasses implement :meth:`index`."""

    name: ClassVar[str] = "disk"

    def __init__(self, cfg: DiskDataConfig):
        self.cfg = cfg
        self.root = Path(cfg.root).expanduser()
        if not self.root.is_dir():
            raise UsageError(f"{self.name}: data root {self.root} does not exist or is not a folder")
        self._indexes: dict[str, SplitIndex] = {}

    # -- what subclasses provide -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _index(self, split: str) -> SplitIndex:
        """List the split's items; drop and report bad ones; raise UsageError for structural problems."""

    def preprocessing(self) -> dict[str, Any]:
        """Settings that change the cached pixels (they key the cache): crop boxes, fitting."""
        return {"fit": "center_crop", "min_image_side": self.cfg.min_image_side}

    # -- the Dataset interface ---------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.name} at {self.root}"

    def index(self, split: str) -> SplitIndex:
        """The split's items (memoised), at most ``max_images`` of them, each with an existing image file."""
        if split not in self.splits:
            raise UsageError(f"{self.name}: unknown split {split!r}; splits: {', '.join(self.splits)}")
        if split not in self._indexes:
            index = self._index(split)
            dropped = max(0, index.listed - len(index.items))  # named by the source, dropped as bad
            index.items.sort(key=lambda item: item.key)
            if self.cfg.max_images:
                index.items = index.items[: self.cfg.max_images]
            index.listed = len(index.items) + dropped
            if not index.items:
                raise UsageError(f"{self.name} {split} split at {self.root}: no usable images"
                                 + (f" ({index.problems.summary()})" if len(index.problems) else ""))
            self._indexes[split] = index
        return self._indexes[split]

    def cache(self, split: str, resolution: int, *, rebuild: bool = False) -> CachedImages:
        """The split's image cache at ``resolution``, built now if missing, stale or ``rebuild``."""
        if not isinstance(resolution, int) or isinstance(resolution, bool) or not 4 <= resolution <= 2048:
            raise UsageError(f"{self.name}: resolution must be an integer in 4..2048, got {resolution!r}")
        index = self.index(split)
        cache = cached_images(
            index.items, dataset=self.name, root=self.root, split=split, resolution=resolution,
            preprocessing=self.preprocessing(), cache_dir=self.cfg.cache_dir or None,
            workers=self.cfg.workers, quiet=self.cfg.quiet, index_problems=index.problems, rebuild=rebuild,
        )
        if cache.count == 0:
            raise UsageError(f"{self.name} {split}: none of the {len(index.items)} images could be decoded "
                             f"({cache.problems.summary()}); report: {cache.report_path}")
        return cache

    def problems(self, split: str, resolution: int) -> Problems:
        """Every problem of the split: found while listing it and while caching it at ``resolution``."""
        return Problems(self.index(split).problems.items + self.cache(split, resolution).problems.items)

    def load(self, split: str, resolution: int) -> CaptionedImages:
        cache = self.cache(split, resolution)
        index = self.index(split)
        problems = Problems(index.problems.items + cache.problems.items)
        skipped = index.listed - cache.count
        if len(problems) and not self.cfg.quiet and str(cache.report_path) not in _WARNED:
            _WARNED.add(str(cache.report_path))  # once per cache and process
            print(f"t2i: warning: {self.name} {split}: {skipped} of {index.listed} images skipped; "
                  f"problems: {problems.summary()}; report: {cache.report_path}", file=sys.stderr)
        items = [index.items[i] for i in cache.kept]
        info = {
            "name": self.name, "root": str(self.root), "split": split, "resolution": resolution,
            "preprocessing": self.preprocessing(), "listed": index.listed, "skipped": skipped,
            "problems": problems.counts(), "cache": str(cache.images_path), "report": str(cache.report_path),
            "keys": [item.key for item in items],
        }  # fmt: skip
        return record(cache.images, [item.captions for item in items], info)


def record(images: torch.Tensor, captions_per_image: list[list[str]], info: dict[str, Any]) -> CaptionedImages:
    """A :class:`CaptionedImages` with distinct captions, ids ``(N, K)`` padded with -1, and counts."""
    table: dict[str, int] = {}
    counts = np.array([len(c) for c in captions_per_image], np.int64)
    ids = np.full((len(captions_per_image), max(1, int(counts.max(initial=1)))), -1, np.int64)
    for row, captions in enumerate(captions_per_image):
        for col, caption in enumerate(captions):
            ids[row, col] = table.setdefault(caption, len(table))
    return CaptionedImages(
        images=images, captions=list(table), caption_ids=torch.from_numpy(ids),
        caption_counts=torch.from_numpy(counts), info=info,
    )
