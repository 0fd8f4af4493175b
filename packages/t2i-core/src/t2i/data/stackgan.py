"""``cub`` and ``oxford``: CUB-200-2011 birds and Oxford-102 flowers in the layout of StackGAN, AttnGAN,
DM-GAN and DF-GAN (``--data cub:data/birds``, ``--data oxford:data/flowers``)::

    birds/                                   flowers/
      CUB_200_2011/images/<class>/<name>.jpg   jpg/image_00001.jpg ...
      CUB_200_2011/images.txt                  text_c10/class_00001/image_00001.txt (or text/)
      CUB_200_2011/bounding_boxes.txt          train/filenames.pickle
      text/<class>/<name>.txt (or text_c10/)   test/filenames.pickle
      train/filenames.pickle                   [train|test]/char-CNN-RNN-embeddings.pickle (optional)
      test/filenames.pickle
      [train|test]/char-CNN-RNN-embeddings.pickle (optional)

The splits are the published class-disjoint ones (150 / 50 bird classes, 82 / 20 flower classes), read
from ``filenames.pickle``: Python 2 pickles of names such as ``002.Laysan_Albatross/Laysan_Albatross_0002_1027``
(birds) or ``jpg/image_06734`` (flowers). They are read with :mod:`t2i.data.safe_pickle`, which never runs
code. Each caption file holds ten captions, one per line (``captions_per_image`` keeps the first K).

Birds are cropped as StackGAN crops them (``bbox_crop``, on by default): a square of
``1.5 x max(w, h)`` around the centre of the box in ``bounding_boxes.txt`` (ids matched to names through
``images.txt``), clipped to the image. A split file naming an image that does not exist stops the run.

``char-CNN-RNN-embeddings.pickle`` (Reed et al.'s sentence embeddings, a list of ``(10, 1024)`` arrays in
the order of ``filenames.pickle``) is optional; :meth:`StackGANLayout.export_embeddings` writes them as an
``.npz`` that the ``precomputed`` text encoder reads (``t2i data prepare`` does it when they exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_path
from .safe_pickle import load_pickle
from .source import DiskDataConfig, DiskDataset, Item, Problems, SplitIndex, read_caption_file, stat_items, walk_files

__all__ = ["CubConfig", "Cub", "OxfordConfig", "Oxford", "StackGANLayout", "EMBEDDINGS_FILE"]

EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"


@dataclass
class OxfordConfig(DiskDataConfig):
    """Options of the ``oxford`` data set (and, with ``bbox_crop``, of ``cub``)."""

    captions_per_image: int = field(default=10, metadata={"help": "keep the first K captions of each image (0: all)"})
    text_dir: str = field(default="auto", metadata={"help": "caption folder under root: auto (text, then text_c10), or a name"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.captions_per_image < 0:
            raise ValueError(f"captions_per_image must be >= 0, got {self.captions_per_image}")


@dataclass
class CubConfig(OxfordConfig):
    """Options of the ``cub`` data set."""

    bbox_crop: bool = field(default=True, metadata={"help": "crop each bird as StackGAN does (bounding_boxes.txt)"})


class StackGANLayout(DiskDataset):
    """What the bird and flower layouts share: split pickles, a caption folder, optional embeddings."""

    image_folder = "jpg"

    def __init__(self, cfg: OxfordConfig):
        super().__init__(cfg)
        self.cfg: OxfordConfig = cfg
        self.text = self._find_text_dir()

    # -- layout ----------------------------------------------------------------------------------------------
    def _find_text_dir(self) -> Path:
        names = ("text", "text_c10") if self.cfg.text_dir == "auto" else (self.cfg.text_dir,)
        for name in names:
            if (self.root / name).is_dir():
                return self.root / name
        raise UsageError(f"{self.name}: no caption folder {' or '.join(n + '/' for n in names)} in {self.root} "
                         f"(the StackGAN/AttnGAN layout)")

    def split_file(self, split: str, name: str = "filenames.pickle") -> Path:
        return self.root / split / name

    def filenames(self, split: str) -> list[str]:
        """The split's image names, as listed in ``<split>/filenames.pickle``."""
        path = self.split_file(split)
        if not path.is_file():
            raise UsageError(f"{self.name}: {path} not found (the {split} split file of the StackGAN/AttnGAN layout)")
        names = load_pickle(path)
        if isinstance(names, np.ndarray):
            names = names.tolist()
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
            raise UsageError(f"{path}: expected a list of image names, got {type(names).__name__}")
        return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]

    def key(self, name: str) -> str:
        key = name.replace("\\", "/").strip("/")
        return key[: -len(Path(key).suffix)] if Path(key).suffix.lower() in (".jpg", ".jpeg", ".png") else key

    def image_path(self, key: str) -> Path:
        return self.root / self.image_folder / f"{Path(key).name}.jpg"

    def caption_path(self, key: str) -> Path:
        return self.text / f"{key}.txt"

    def box(self, key: str, problems: Problems) -> tuple[float, float, float, float] | None:
        return None

    # -- index -----------------------------------------------------------------------------------------------
    def _index(self, split: str) -> SplitIndex:
        names = self.filenames(split)
        listed_in = f"{split}/filenames.pickle"
        problems, items, seen = Problems(), [], set()
        for name in names:
            key = self.key(name)
            if key in seen:
                problems.add("duplicate key", listed_in, f"{key} listed twice; kept once")
                continue
            seen.add(key)
            captions = read_caption_file(self.caption_path(key), problems, self.cfg.max_caption_words,
                                         limit=self.cfg.captions_per_image)
            if captions:
                items.append(Item(key, self.image_path(key), captions, self.box(key, problems)))
        items = stat_items(items, problems, f"{self.name} {self.root}", listed_in)
        return SplitIndex(items, problems, listed=len(names))

    # -- char-CNN-RNN embeddings -------------------------------------------------------------------------------------
    def embeddings(self, split: str) -> np.ndarray | None:
        """``float32 (N, K, D)`` from ``<split>/char-CNN-RNN-embeddings.pickle`` in filenames order, or None."""
        path = self.split_file(split, EMBEDDINGS_FILE)
        if not path.is_file():
            return None
        data = load_pickle(path)
        try:
            table = np.stack([np.asarray(e, dtype=np.float32) for e in data]) if isinstance(data, (list, tuple)) else np.asarray(data, np.float32)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: expected a list of (captions, dim) float arrays ({exc})") from None
        if table.ndim == 2:
            table = table[:, None, :]
        n = len(self.filenames(split))
        if table.ndim != 3 or table.shape[0] != n:
            raise UsageError(f"{path}: shape {table.shape} does not match the {n} names of {split}/filenames.pickle")
        return table

    def export_embeddings(self, out: Path) -> Path | None:
        """Write the char-CNN-RNN embeddings of both splits as ``.npz`` (captions, embeddings) for the
        ``precomputed`` text encoder (``-T path=OUT``); caption j of an image gets its row j. None if absent."""
        captions: list[str] = []
        rows: list[np.ndarray] = []
        found = False
        for split in self.splits:
            table = self.embeddings(split)
            if table is None:
                continue
            found = True
            for i, name in enumerate(self.filenames(split)):
                lines = read_caption_file(self.caption_path(self.key(name)), Problems(), self.cfg.max_caption_words,
                                          limit=self.cfg.captions_per_image)
                for j, caption in enumerate(lines[: table.shape[1]]):
                    captions.append(caption)
                    rows.append(table[i, j])
        if not found or not rows:
            return None
        with atomic_path(out, suffix=".npz") as tmp:
            np.savez(tmp, captions=np.array(captions, dtype=str), embeddings=np.stack(rows))
        return out


class Oxford(StackGANLayout):
    """Oxford-102 flowers, StackGAN layout: jpg/, text_c10/class_*/, train|test/filenames.pickle."""

    name = "oxford"
    image_folder = "jpg"

    def __init__(self, cfg: OxfordConfig):
        super().__init__(cfg)
        if not (self.root / self.image_folder).is_dir():
            raise UsageError(f"oxford: no jpg/ image folder in {self.root} (the StackGAN flowers layout)")
        self._captions: dict[str, Path] | None = None

    def key(self, name: str) -> str:
        return Path(super().key(name)).name  # "jpg/image_06734", "class_00001/image_06734" -> "image_06734"

    def caption_path(self, key: str) -> Path:
        if self._captions is None:  # text_c10/class_XXXXX/image_YYYYY.txt: find each image's class folder once
            self._captions = {p.stem: p for p in walk_files(self.text, Problems(), (".txt",))}
        return self._captions.get(key, self.text / f"{key}.txt")


class Cub(StackGANLayout):
    """CUB-200-2011 birds, StackGAN layout, with the bounding-box crop."""

    name = "cub"

    def __init__(self, cfg: CubConfig):
        root = Path(cfg.root).expanduser()
        if root.name == "CUB_200_2011" and not (root / "CUB_200_2011").is_dir():
            cfg.root = str(root.parent)  # pointed at the image folder's parent: use the layout's root
        super().__init__(cfg)
        self.cfg: CubConfig = cfg
        self.cub = self.root / "CUB_200_2011"
        if not (self.cub / "images").is_dir():
            raise UsageError(f"cub: no CUB_200_2011/images/ in {self.root} (the StackGAN birds layout)")
        self._boxes: dict[str, tuple[float, float, float, float]] | None = None
        self._box_problems = Problems()

    def preprocessing(self) -> dict:
        return {**super().preprocessing(), "bbox_crop": self.cfg.bbox_crop}

    def image_path(self, key: str) -> Path:
        return self.cub / "images" / f"{key}.jpg"

    def box(self, key: str, problems: Problems) -> tuple[float, float, float, float] | None:
        if not self.cfg.bbox_crop:
            return None
        if self._boxes is None:
            self._boxes = self._read_boxes()
            problems.extend(self._box_problems)
        found = self._boxes.get(key)
        if found is None:
            problems.add("no bounding box", key, "not in bounding_boxes.txt; the whole image is used")
        return found

    def _read_boxes(self) -> dict[str, tuple[float, float, float, float]]:
        """key -> (x, y, w, h), joining images.txt (id -> name) and bounding_boxes.txt (id -> box)."""
        images, boxes = self.cub / "images.txt", self.cub / "bounding_boxes.txt"
        for path in (images, boxes):
            if not path.is_file():
                raise UsageError(f"cub: {path} not found; it is needed for the bird crop (or set -d bbox_crop=false)")
        names: dict[str, str] = {}
        for number, line in enumerate(images.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            if len(parts) != 2:
                if parts:
                    self._box_problems.add("bad line", f"images.txt:{number}", "expected: <id> <class>/<name>.jpg")
                continue
            names[parts[0]] = self.key(parts[1])
        out: dict[str, tuple[float, float, float, float]] = {}
        for number, line in enumerate(boxes.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            try:
                x, y, w, h = (float(v) for v in parts[1:])
                if len(parts) != 5 or w <= 0 or h <= 0 or parts[0] not in names:
                    raise ValueError
            except ValueError:
                if parts:
                    self._box_problems.add("bad line", f"bounding_boxes.txt:{number}", "expected: <id> <x> <y> <w> <h>")
                continue
            out[names[parts[0]]] = (x, y, w, h)
        return out
