"""``coco``: MS-COCO captions (``--data coco:data/coco``)::

    coco/
      annotations/captions_train2014.json   (or captions_train2017.json)
      annotations/captions_val2014.json     (or captions_val2017.json)
      train2014/COCO_train2014_000000000009.jpg ...   (or train2017/000000000009.jpg)
      val2014/...                                     (or val2017/)

``train`` is COCO's train set and ``test`` its val set (the split text-to-image papers report on).
``year`` picks 2014 or 2017 (``auto``: 2014 when its annotations are there, else 2017). Each image keeps
up to ``captions_per_image`` captions (COCO has five, a few images six or seven). Images are taken
whole (the centred square), since COCO captions describe the full scene.

A repeated image id, or a caption of an image id that the file does not list, is reported and
skipped; an image the annotations list whose file does not exist stops the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .source import DiskDataConfig, DiskDataset, Item, Problems, SplitIndex, clean_captions, safe_relative, stat_items

__all__ = ["CocoConfig", "Coco"]

_SETS = {"train": "train", "test": "val"}


@dataclass
class CocoConfig(DiskDataConfig):
    """Options of the ``coco`` data set."""

    year: str = field(default="auto", metadata={"help": "2014, 2017, or auto (2014 if present, else 2017)"})
    captions_per_image: int = field(default=5, metadata={"help": "keep the first K captions of each image (0: all)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.year not in ("auto", "2014", "2017"):
            raise ValueError(f"year must be auto, 2014 or 2017, got {self.year!r}")
        if self.captions_per_image < 0:
            raise ValueError(f"captions_per_image must be >= 0, got {self.captions_per_image}")


class Coco(DiskDataset):
    """MS-COCO 2014 or 2017 captions: annotations/captions_{train,val}YEAR.json with the image folders."""

    name = "coco"

    def __init__(self, cfg: CocoConfig):
        super().__init__(cfg)
        self.cfg: CocoConfig = cfg
        self.year = self._year()

    def _year(self) -> str:
        years = ("2014", "2017") if self.cfg.year == "auto" else (self.cfg.year,)
        for year in years:
            if (self.root / "annotations" / f"captions_train{year}.json").is_file():
                return year
        wanted = " or ".join(f"annotations/captions_train{y}.json" for y in years)
        raise UsageError(f"coco: no {wanted} in {self.root} (the MS-COCO captions layout)")

    def annotations(self, split: str) -> Path:
        return self.root / "annotations" / f"captions_{_SETS[split]}{self.year}.json"

    def _index(self, split: str) -> SplitIndex:
        path = self.annotations(split)
        folder = self.root / f"{_SETS[split]}{self.year}"
        listed_in = f"annotations/{path.name}"
        if not path.is_file():
            raise UsageError(f"coco: {path} not found (the {split} split's captions)")
        try:
            data = json.loads(path.read_bytes())
            images, annotations = data["images"], data["annotations"]
            if not isinstance(images, list) or not isinstance(annotations, list):
                raise TypeError("'images' and 'annotations' must be lists")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"coco: {path} is not a COCO captions file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        problems = Problems()
        by_id: dict[object, Item] = {}
        for entry in images:
            try:
                image_id, file_name = entry["id"], entry["file_name"]
            except (KeyError, TypeError):
                problems.add("bad annotation", listed_in, f"image entry without id / file_name: {str(entry)[:80]}")
                continue
            file = safe_relative(folder, str(file_name))
            if file is None:
                problems.add("path escapes the data root", listed_in, f"image {file_name!r} skipped")
                continue
            if image_id in by_id:
                problems.add("duplicate key", listed_in, f"image id {image_id} listed twice; kept once")
                continue
            by_id[image_id] = Item(Path(str(file_name)).stem, file, [])
        for entry in annotations:
            try:
                image_id, caption = entry["image_id"], entry["caption"]
            except (KeyError, TypeError):
                problems.add("bad annotation", listed_in, f"caption entry without image_id / caption: {str(entry)[:80]}")
                continue
            item = by_id.get(image_id)
            if item is None:
                problems.add("caption of unknown image", listed_in, f"image id {image_id}")
                continue
            limit = self.cfg.captions_per_image
            if not limit or len(item.captions) < limit:
                item.captions += clean_captions([str(caption)], f"{listed_in} image {image_id}", problems, self.cfg.max_caption_words)
        items = []
        for item in by_id.values():
            if item.captions:
                items.append(item)
            else:
                problems.add("no captions", item.path, "no caption in the annotations; skipped")
        items = stat_items(items, problems, f"coco {self.root}", listed_in)
        return SplitIndex(items, problems, listed=len(images))
