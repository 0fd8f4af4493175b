"""``hf``: a data set as the Hugging Face ``datasets`` library keeps it on disk (``--data hf:PATH``).

``PATH`` is either

- a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (it holds ``state.json`` or
  ``dataset_dict.json``), read with ``datasets.load_from_disk``; or
- an *imagefolder* (images with a ``metadata.jsonl`` / ``metadata.csv``, optionally in ``train/``, ``test/``,
  ``validation/`` folders), read with ``datasets.load_dataset("imagefolder", data_dir=PATH)``, whose Arrow
  cache goes to ``<cache_dir>/hf-datasets``.

Nothing is downloaded: ``datasets`` runs in offline mode while it reads. ``datasets`` is an optional
dependency (``pip install datasets``, or the ``t2i-core[hf]`` extra).

Columns: ``image_column`` (default: the only ``Image`` column) and ``caption_column`` (default: ``text``,
else the only string column); a caption cell may be a string or a list of strings. Splits: t2i's
``train`` is the split ``train_split`` (default: ``train``, else the only split); its ``test`` is
``test_split`` (default: ``test``, else ``validation``), else a seeded hash of each image's key sends a
``test_fraction`` of the train split's images to test, as the ``folder`` data set does.

Images go through the same image cache as every data set on disk: images the rows hold as bytes are read
from the Arrow files when the cache is built (the cache is keyed by the Arrow files' modification times and
each image's byte length); images the rows name by path are read from those files. Bad rows follow the
common policy: a row without an image or a caption, or with an image Pillow cannot decode, is skipped and
counted; a missing column, an unknown split or a folder ``datasets`` cannot read is a one-line
:class:`~t2i.errors.UsageError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import UsageError
from ..paths import default_cache_dir
from .image_cache import BadImage
from .source import DiskDataConfig, DiskDataset, Item, Problems, SplitIndex, clean_captions, stat_items, unit_hash

if TYPE_CHECKING:  # datasets is optional and imported only when a data set is opened
    import datasets

__all__ = ["HfConfig", "Hf"]

TEST_SPLITS = ("test", "validation")  # the splits t2i's test split is, in order, when test_split is not given


@dataclass
class HfConfig(DiskDataConfig):
    """Options of the ``hf`` data set."""

    caption_column: str = field(default="", metadata={"help": "caption column ('' = text, else the only string one)"})
    image_column: str = field(default="", metadata={"help": "image column ('' = the only Image column)"})
    train_split: str = field(default="", metadata={"help": "the split used as train ('' = train, else the only split)"})
    test_split: str = field(default="", metadata={"help": "the split used as test ('' = test, else validation, "
                                                          "else test_fraction of train)"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of train images in test without a test split"})
    split_seed: int = field(default=0, metadata={"help": "seed of the hashed train/test assignment"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class _Source:
    """What was opened: the ``datasets`` splits, how, and the columns and splits chosen."""

    splits: dict[str, "datasets.Dataset"]
    how: str  # "save_to_disk" or "imagefolder"
    image_column: str
    caption_column: str
    train: str
    test: str | None  # None: test is drawn from train by hash


class Hf(DiskDataset):
    """A ``datasets`` folder (``save_to_disk``) or an imagefolder, read through the ``datasets`` library."""

    name = "hf"

    def __init__(self, cfg: HfConfig):
        super().__init__(cfg)
        self.cfg: HfConfig = cfg
        self._source: _Source | None = None
        self._items: dict[str, tuple[list[Item], Problems]] = {}

    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing(), "image_column": self._open().image_column}

    # -- the splits ----------------------------------------------------------------------------------------------
    def _index(self, split: str) -> SplitIndex:
        source = self._open()
        hf_split = source.test if split == "test" and source.test is not None else source.train
        if source.test is not None:
            items, listed = self._rows(hf_split)
        else:
            everything, listed = self._rows(source.train)
            items = _hashed(everything, self.cfg.test_fraction, self.cfg.split_seed)[split]
        problems = Problems(list(listed.items))
        if not items:
            raise UsageError(f"hf {self.root}: the {split} split is empty (split {hf_split!r} of {source.how}); "
                             f"add images, name another split with -d {split}_split=NAME, or set -d test_fraction=0.1")
        named = len(items)
        on_disk = stat_items([item for item in items if item.read is None], problems, f"hf {self.root}", source.how)
        kept = on_disk + [item for item in items if item.read is not None]
        return SplitIndex(kept, problems, listed=named)

    def _rows(self, hf_split: str) -> tuple[list[Item], Problems]:
        """Every usable row of ``hf_split`` as an :class:`Item` (memoised), and the rows dropped."""
        if hf_split not in self._items:
            self._items[hf_split] = _items(self._open(), hf_split, self.root, self.cfg.max_caption_words)
        items, problems = self._items[hf_split]
        return [dataclasses.replace(item, captions=list(item.captions)) for item in items], problems  # index() edits them

    # -- opening ---------------------------------------------------------------------------------------------------
    def _open(self) -> _Source:
        if self._source is None:
            datasets = _datasets()
            saved = (self.root / "dataset_dict.json").is_file() or (self.root / "state.json").is_file()
            with _offline(datasets, quiet=self.cfg.quiet):
                try:
                    if saved:
                        loaded = datasets.load_from_disk(str(self.root))
                    else:
                        cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else default_cache_dir()
                        loaded = datasets.load_dataset("imagefolder", data_dir=str(self.root),
                                                       cache_dir=str(cache / "hf-datasets"))
                except Exception as exc:  # datasets raises many kinds; all mean "cannot read this folder"
                    how = "load_from_disk" if saved else 'load_dataset("imagefolder")'
                    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
                    raise UsageError(f"hf {self.root}: datasets.{how} could not read it ({detail}); is it a folder "
                                     f"written by save_to_disk, or images with a metadata.jsonl?") from None
            splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
            if not splits:
                raise UsageError(f"hf {self.root}: the data set has no splits")
            train, test = self._choose_splits(list(splits))
            image, caption = _columns(splits[train], self.cfg, f"hf {self.root} (split {train!r})")
            for name in {test} - {None, train}:
                missing = [c for c in (image, caption) if c not in splits[name].column_names]
                if missing:
                    raise UsageError(f"hf {self.root}: split {name!r} has no column {missing[0]!r}; "
                                     f"its columns: {', '.join(splits[name].column_names)}")
            self._source = _Source(splits, "save_to_disk" if saved else "imagefolder", image, caption, train, test)
        return self._source

    def _choose_splits(self, names: list[str]) -> tuple[str, str | None]:
        listed = ", ".join(names)
        for option in ("train_split", "test_split"):
            value = getattr(self.cfg, option)
            if value and value not in names:
                raise UsageError(f"hf {self.root}: no split {value!r} (-d {option}); splits: {listed}")
        train = self.cfg.train_split or ("train" if "train" in names else names[0] if len(names) == 1 else "")
        if not train:
            raise UsageError(f"hf {self.root}: which split is train? choose one with -d train_split=NAME; splits: {listed}")
        test = self.cfg.test_split or next((s for s in TEST_SPLITS if s in names and s != train), None)
        if test == train:
            raise UsageError(f"hf {self.root}: train_split and test_split are both {train!r}; leave test_split "
                             f"empty to draw -d test_fraction of the images from it")
        return train, test


# -- helpers ---------------------------------------------------------------------------------------------------
def _datasets() -> Any:
    """The ``datasets`` module, or a one-line UsageError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise UsageError("--data hf:PATH needs the datasets library: pip install datasets") from None
    return datasets


@contextlib.contextmanager
def _offline(datasets: Any, quiet: bool) -> Iterator[None]:
    """``datasets`` in offline mode (never the network), without progress bars when ``quiet``."""
    offline, bars = datasets.config.HF_HUB_OFFLINE, datasets.is_progress_bar_enabled()
    datasets.config.HF_HUB_OFFLINE = True
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
        if quiet and bars:
            datasets.enable_progress_bars()


def _is_text(feature: Any) -> bool:
    """A string column, or a list of strings (several captions per image)."""
    inner = getattr(feature, "feature", feature)  # List / Sequence / LargeList hold their element type here
    return type(inner).__name__ == "Value" and getattr(inner, "dtype", "") in ("string", "large_string")


def _columns(ds: Any, cfg: HfConfig, where: str) -> tuple[str, str]:
    """(image column, caption column): the options, else the only Image column and ``text`` / the only string one."""
    features = ds.features
    kinds = ", ".join(f"{name} ({type(f).__name__})" for name, f in features.items())
    images = [name for name, f in features.items() if type(f).__name__ == "Image"]
    texts = [name for name, f in features.items() if _is_text(f)]
    image = cfg.image_column
    if image and image not in images:
        raise UsageError(f"{where}: image_column {image!r} is not an Image column; columns: {kinds}")
    if not image:
        if len(images) != 1:
            raise UsageError(f"{where}: {'no' if not images else 'several'} Image columns; "
                             f"choose one with -d image_column=NAME; columns: {kinds}")
        image = images[0]
    caption = cfg.caption_column or ("text" if "text" in features else texts[0] if len(texts) == 1 else "")
    if not caption:
        raise UsageError(f"{where}: which column holds the captions? {'no' if not texts else 'several'} string "
                         f"columns; choose one with -d caption_column=NAME; columns: {kinds}")
    if caption not in texts:
        raise UsageError(f"{where}: caption_column {caption!r} is not a column of strings or lists of strings; "
                         f"columns: {kinds}")
    return image, caption


def _items(source: _Source, hf_split: str, root: Path, max_words: int) -> tuple[list[Item], Problems]:
    """Each row of ``hf_split`` with an image and a caption as an Item; the others reported as problems."""
    import pyarrow.compute as pc

    ds = source.splits[hf_split]
    table = ds.select_columns([source.image_column, source.caption_column]).with_format("arrow")[:]
    images = table.column(source.image_column)
    blobs = pc.struct_field(images, "bytes")
    sizes = pc.binary_length(blobs).to_pylist()
    paths = pc.struct_field(images, "path").to_pylist()
    captions = table.column(source.caption_column).to_pylist()
    mtime = max((os.stat(f["filename"]).st_mtime_ns for f in ds.cache_files if os.path.exists(f["filename"])), default=0)
    width = max(6, len(str(len(captions))))
    problems, items = Problems(), []
    real_root = root.resolve()
    for row, (size, path, caption) in enumerate(zip(sizes, paths, captions)):
        where = f"{root}/{hf_split}[{row}]"
        if caption is None or isinstance(caption, str):
            lines = [] if caption is None else [caption]
        else:
            lines = [c for c in caption if isinstance(c, str)]
        lines = clean_captions(lines, where, problems, max_words)
        if not lines:
            problems.add("no captions", where, f"empty {source.caption_column!r}; skipped")
            continue
        key = f"{hf_split}/{row:0{width}d}"
        if size is not None:  # the image's bytes are in the Arrow file
            items.append(Item(key, Path(where), lines, size=size, mtime_ns=mtime, read=_reader(blobs, row, where)))
        elif path:
            file = Path(path) if os.path.isabs(path) else root / path
            try:  # an imagefolder's image: keyed by its path, as in the folder data set
                key = file.resolve().relative_to(real_root).as_posix()
            except (ValueError, OSError, RuntimeError):
                pass  # outside the root, or a symlink loop (reported when the image is opened)
            items.append(Item(key, file, lines))
        else:
            problems.add("missing image", where, f"no bytes and no path in {source.image_column!r}; skipped")
    return items, problems


def _reader(blobs: Any, row: int, where: str) -> Callable[[], bytes]:
    """Reads row ``row``'s image bytes from the Arrow column when the image cache is built."""

    def read() -> bytes:
        try:
            return blobs[row].as_py()
        except Exception as exc:  # a damaged Arrow file: this image is skipped, not the run
            raise BadImage("unreadable image", f"{where}: {type(exc).__name__}: {exc}"[:200]) from None

    return read


def _hashed(items: list[Item], fraction: float, seed: int) -> dict[str, list[Item]]:
    """train/test by a seeded hash of each key; both non-empty whenever there are two items and fraction > 0."""
    ranked = sorted(items, key=lambda item: unit_hash(item.key, seed))
    out: dict[str, list[Item]] = {"train": [], "test": []}
    for item in ranked:
        out["test" if unit_hash(item.key, seed) < fraction else "train"].append(item)
    if fraction > 0 and len(ranked) >= 2:
        if not out["test"]:
            out["test"].append(out["train"].pop(0))
        elif not out["train"]:
            out["train"].append(out["test"].pop())
    return out
