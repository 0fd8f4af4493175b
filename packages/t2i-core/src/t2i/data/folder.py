"""``folder``: your own images with captions, as sidecar text files, a manifest, or the Hub's imagefolder.

Captions come from (``manifest`` option; ``auto`` picks the first that exists):

- ``captions.jsonl``: one JSON object per line, ``{"image": "rel/path.jpg", "caption": "..."}``; the
  caption may be a list of captions (``"caption": [...]`` or ``"captions": [...]``);
- ``captions.csv``: a header row with columns ``image`` and ``caption`` (UTF-8);
- ``metadata.jsonl`` / ``metadata.csv``: the Hugging Face Hub's imagefolder convention, a ``file_name``
  column (relative to the metadata file's folder) and a caption column, ``text`` unless ``caption_column``
  names another; in a JSON line the caption may be a list of captions. The metadata may also be split:
  ``train/metadata.jsonl`` and ``test/metadata.jsonl`` (or ``validation/``), each naming its own folder's
  images, when there is none at the root;
- sidecar files: every image under the root (``.jpg .jpeg .png .bmp .gif .webp .tif .tiff``, in any
  sub-folder) with a ``.txt`` file of the same name beside it, one caption per line.

In a manifest, lines naming the same image add captions to it; an image path must be relative and stay
inside the root (``../../etc/passwd`` is skipped and reported); an image the manifest names that does
not exist stops the run. Symlinks are followed only while they stay inside the root: an image, caption
file or folder that is a link to somewhere outside it is skipped and reported, in every mode.

Splits (``train`` and ``test``):

- a manifest's optional ``split`` field/column (``train`` or ``test``) decides, line by line;
- in sidecar mode, top-level ``train/`` and ``test/`` folders decide when both exist;
- with Hub metadata, top-level ``train/`` and ``test/`` folders decide when both exist, as on the Hub;
  without ``test/``, ``validation/`` is the test split (with ``test/``, it is not used and reported);
- otherwise a seeded hash of each image's key sends a ``test_fraction`` of the images to ``test``
  (``split_seed`` changes the draw). The assignment of an image never depends on the other images, so
  adding images does not reshuffle the existing ones. If the hash leaves a split empty, the image
  with the lowest hash is moved there, so both splits exist whenever there are two images.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .source import (
    IMAGE_SUFFIXES, LINK_OUTSIDE, DiskDataConfig, DiskDataset, Item, Problems, SplitIndex, unit_hash,
    clean_captions, decode_text, leaves_root, link_problem, read_caption_file, safe_relative, stat_items,
    walk_files,
)

__all__ = ["FolderConfig", "Folder"]

MANIFESTS = ("captions.jsonl", "captions.csv", "metadata.jsonl", "metadata.csv")
HUB_MANIFESTS = ("metadata.jsonl", "metadata.csv")  # the Hub's imagefolder convention: file_name + a caption column
HUB_SPLITS = ("train", "test", "validation")  # split folders, each with its own metadata file


@dataclass
class FolderConfig(DiskDataConfig):
    """Options of the ``folder`` data set."""

    manifest: str = field(default="auto", metadata={"help": "auto, sidecar, or a .jsonl/.csv file relative to root"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of images in test when no split is given"})
    split_seed: int = field(default=0, metadata={"help": "seed of the hashed train/test assignment"})
    caption_column: str = field(default="text", metadata={"help": "caption column of a Hub metadata.jsonl / .csv"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not self.caption_column.strip():
            raise ValueError("caption_column must name a column")
        if self.manifest not in ("auto", "sidecar") and not self.manifest.lower().endswith((".jsonl", ".csv")):
            raise ValueError(f"manifest must be auto, sidecar, or a .jsonl / .csv file, got {self.manifest!r}")


class Folder(DiskDataset):
    """Images with sidecar .txt captions, a captions.jsonl / captions.csv manifest, or Hub metadata files."""

    name = "folder"

    def __init__(self, cfg: FolderConfig):
        super().__init__(cfg)
        self.cfg: FolderConfig = cfg
        self._all: tuple[dict[str, list[Item]], Problems, str] | None = None

    def _index(self, split: str) -> SplitIndex:
        by_split, problems, listed_in = self._everything()
        items = by_split[split]
        if not items:
            raise UsageError(f"folder {self.root}: the {split} split is empty ({listed_in}); "
                             f"add images, a split field, or set -d test_fraction=0.1")
        named = len(items)
        items = stat_items(items, problems, f"folder {self.root}", listed_in)
        return SplitIndex(items, problems, listed=named)

    # -- listing ------------------------------------------------------------------------------------------------
    def _everything(self) -> tuple[dict[str, list[Item]], Problems, str]:
        """Items of both splits (listed once for the two), problems, and what they were listed from."""
        if self._all is None:
            problems = Problems()
            manifest = self._manifest_path()
            per_split = self._split_manifests(problems) if manifest is None and self.cfg.manifest == "auto" else {}
            hub = per_split or (manifest is not None and _is_hub(manifest))
            if self.cfg.caption_column != "text" and not hub:
                raise UsageError(f"folder {self.root}: caption_column applies to a Hub metadata.jsonl / .csv, "
                                 f"and there is none (captions.* manifests use 'caption')")
            if per_split:
                items, splits = [], {}
                for split, path in per_split.items():
                    found, assigned = self._manifest(path, problems, split)
                    items += found
                    splits.update(assigned)
                listed_in = ", ".join(p.relative_to(self.root).as_posix() for p in per_split.values())
            elif manifest is None:
                items, splits = self._sidecar(problems)
                listed_in = "sidecar .txt captions"
            else:
                items, splits = self._manifest(manifest, problems)
                listed_in = manifest.name
            if not items:
                raise UsageError(f"folder {self.root}: no captioned images found in {listed_in}"
                                 + (f" ({problems.summary()})" if len(problems) else ""))
            self._all = (self._assign(items, splits), problems, listed_in)
        return self._all

    def _manifest_path(self) -> Path | None:
        if self.cfg.manifest == "sidecar":
            return None
        if self.cfg.manifest == "auto":
            return next((self.root / m for m in MANIFESTS if (self.root / m).is_file()), None)
        path = safe_relative(self.root, self.cfg.manifest)
        if path is None or not path.is_file():
            raise UsageError(f"folder {self.root}: manifest {self.cfg.manifest!r} is not a file inside the root")
        return path

    def _split_folders(self) -> dict[str, str]:
        """Top-level folders that decide the split of Hub-metadata images (folder -> split), as on the Hub:
        ``train/`` with ``test/``, else with ``validation/``; none without ``train/`` or a test folder."""
        if not (self.root / "train").is_dir():
            return {}
        test = next((name for name in ("test", "validation") if (self.root / name).is_dir()), None)
        return {"train": "train", test: "test"} if test else {}

    def _split_manifests(self, problems: Problems) -> dict[str, Path]:
        """``{split or "": metadata file}`` of split folders with their own Hub metadata ("": hashed split)."""
        found = {}
        for folder in HUB_SPLITS:
            path = next((self.root / folder / m for m in HUB_MANIFESTS if (self.root / folder / m).is_file()), None)
            if path is not None:
                found[folder] = path
        if "test" in found and "validation" in found:
            problems.add("unused split", found.pop("validation"), "test/ is the test split; validation/ not used")
        if "validation" in found:
            found["test"] = found.pop("validation")
        if "test" not in found and "train" in found:  # train/ alone: draw the test split by hash
            found[""] = found.pop("train")
        return found

    def _sidecar(self, problems: Problems) -> tuple[list[Item], dict[str, str]]:
        files = walk_files(self.root, problems, IMAGE_SUFFIXES)
        real_root = self.root.resolve()
        by_folder = (self.root / "train").is_dir() and (self.root / "test").is_dir()
        items, splits, seen = [], {}, {}
        for path in files:
            rel = path.relative_to(self.root)
            key = rel.with_suffix("").as_posix()
            if key in seen:
                problems.add("duplicate key", path, f"same name as {seen[key].name}; skipped")
                continue
            seen[key] = path
            sidecar = path.with_suffix(".txt")
            if sidecar.is_symlink() and leaves_root(real_root, sidecar):
                problems.add(LINK_OUTSIDE, sidecar, link_problem(sidecar))
                continue
            captions = read_caption_file(sidecar, problems, self.cfg.max_caption_words)
            if not captions:
                continue
            if by_folder:
                top = rel.parts[0] if len(rel.parts) > 1 else ""
                if top not in ("train", "test"):
                    problems.add("outside train/ and test/", path, "skipped: the split folders decide")
                    continue
                splits[key] = top
            items.append(Item(key, path, captions))
        return items, splits

    def _manifest(self, manifest: Path, problems: Problems,
                  folder_split: str | None = None) -> tuple[list[Item], dict[str, str]]:
        """Items of a manifest. Hub metadata: ``folder_split`` is the split its folder decides ("": hashed;
        ``None``: by each image's top-level folder, see :meth:`_split_folders`)."""
        text = decode_text(manifest.read_bytes(), str(manifest), problems)
        jsonl = manifest.suffix.lower() == ".jsonl"
        if _is_hub(manifest):
            base = manifest.parent.relative_to(self.root).as_posix()
            read = _hub_jsonl_rows if jsonl else _hub_csv_rows
            rows = [(where, image if base == "." or not isinstance(image, str) else f"{base}/{image}", captions, split)
                    for where, image, captions, split in read(text, manifest, problems, self.cfg.caption_column)]
            by_folder = self._split_folders() if folder_split is None else {}
        else:
            rows = _jsonl_rows(text, manifest, problems) if jsonl else _csv_rows(text, manifest)
            by_folder = {}
        items: dict[str, Item] = {}
        splits: dict[str, str] = {}
        real_root = self.root.resolve()
        for where, image, captions, split in rows:
            path = safe_relative(self.root, image) if isinstance(image, str) else None
            if path is None:
                problems.add("path escapes the data root" if isinstance(image, str) and image else "bad manifest line",
                             where, f"image {image!r} skipped")
                continue
            if leaves_root(real_root, path):
                problems.add(LINK_OUTSIDE, where, f"image {image!r} {link_problem(path)}")
                continue
            if folder_split:
                split = folder_split
            elif by_folder:
                top = path.relative_to(self.root).parts[0]
                if top in HUB_SPLITS and top not in by_folder:
                    problems.add("unused split", where, f"{image!r}: test/ is the test split; {top}/ not used")
                    continue
                split = by_folder.get(top)  # None outside the split folders: hashed
            if split is not None and split not in ("train", "test"):
                problems.add("unknown split", where, f"{split!r} (use train or test); skipped")
                continue
            captions = clean_captions(captions, where, problems, self.cfg.max_caption_words)
            key = path.relative_to(self.root).as_posix()
            item = items.get(key)
            if item is None:
                item = items[key] = Item(key, path, [])
            elif split is not None and splits.get(key, split) != split:
                problems.add("duplicate key", where, f"{key} listed in both splits; kept in {splits[key]}")
            for caption in captions:
                if caption in item.captions:
                    problems.add("duplicate key", where, f"{key}: the same caption twice; kept once")
                else:
                    item.captions.append(caption)
            if split is not None:
                splits.setdefault(key, split)
        kept = []
        for item in items.values():
            if item.captions:
                kept.append(item)
            else:
                problems.add("no captions", item.path, f"listed in {manifest.name} without a caption; skipped")
        return kept, splits

    def _assign(self, items: list[Item], splits: dict[str, str]) -> dict[str, list[Item]]:
        """Split by the explicit assignment where there is one, by the seeded hash elsewhere."""
        out: dict[str, list[Item]] = {"train": [], "test": []}
        hashed = [item for item in items if item.key not in splits]
        for item in items:
            if item.key in splits:
                out[splits[item.key]].append(item)
        fraction, seed = self.cfg.test_fraction, self.cfg.split_seed
        ranked = sorted(hashed, key=lambda item: unit_hash(item.key, seed))
        for item in ranked:
            out["test" if unit_hash(item.key, seed) < fraction else "train"].append(item)
        if not splits and fraction > 0 and len(ranked) >= 2:  # both splits exist whenever possible
            if not out["test"]:
                out["test"].append(out["train"].pop(0))
            elif not out["train"]:
                out["train"].append(out["test"].pop())
        return out


def _json_objects(text: str, name: str, problems: Problems) -> Iterator[tuple[str, dict]]:
    """``("<name>:<line>", object)`` for each line of a JSON-lines manifest that is a JSON object; blank lines are
    skipped, and a line that is not JSON or not an object is counted as a bad manifest line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problems.add("bad manifest line", where, f"not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            problems.add("bad manifest line", where, "not a JSON object")
            continue
        yield where, obj


def _jsonl_rows(text: str, manifest: Path, problems: Problems) -> list[tuple[str, object, list[str], str | None]]:
    rows = []
    for where, obj in _json_objects(text, manifest.name, problems):
        captions = obj.get("caption", obj.get("captions"))
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problems.add("bad manifest line", where, "needs 'caption': a string or a list of strings")
            continue
        split = obj.get("split")
        rows.append((where, obj.get("image"), captions, None if split is None else str(split)))
    return rows


def _csv_rows(text: str, manifest: Path) -> list[tuple[str, object, list[str], str | None]]:
    columns, table = _csv_table(text, manifest)
    if "image" not in columns or "caption" not in columns:
        raise UsageError(f"{manifest}: a captions CSV needs a header row with 'image' and 'caption' columns, "
                         f"got {', '.join(columns) or 'none'}")
    rows = []
    for number, row in table:
        split = (row.get("split") or "").strip() or None
        caption = row.get("caption") or ""
        rows.append((f"{manifest.name}:{number}", (row.get("image") or "").strip(), [caption], split))
    return rows


def _csv_table(text: str, manifest: Path, strict: bool = False) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header's column names and ``(line number, row)`` pairs; CSV the csv module cannot parse is a
    one-line UsageError naming the line (``strict``: stray or unclosed quotes too)."""
    reader = csv.DictReader(io.StringIO(text), strict=strict)
    rows = []
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        for row in reader:
            rows.append((reader.line_num, {(k or "").strip(): v for k, v in row.items() if isinstance(v, str)}))
    except csv.Error as exc:
        raise UsageError(f"{manifest}:{reader.line_num + 1}: not valid CSV ({exc}); fix that line "
                         f"(quote fields that hold commas or line breaks)") from None
    return columns, rows


# -- the Hub's imagefolder metadata -----------------------------------------------------------------------------
def _is_hub(manifest: Path) -> bool:
    return manifest.name.lower() in HUB_MANIFESTS


def _no_column(where: str, what: str, column: str, found: list[str], option: str = "") -> UsageError:
    """``<where> <what> column 'x'; what to do; columns found: ...`` (one line)."""
    hint = (f"; -d {option}=NAME chooses another" if option else
            f"; a Hub metadata file names each image in {column!r} (-d manifest=sidecar ignores the file)")
    return UsageError(f"{where} {what} column {column!r}{hint}; columns found: {', '.join(found) or 'none'}")


def _hub_jsonl_rows(text: str, manifest: Path, problems: Problems, column: str) -> list[tuple[str, object, list[str], None]]:
    """``(where, file_name, captions, None)`` per usable line of a Hub ``metadata.jsonl``."""
    rows, seen = [], {}
    for where, obj in _json_objects(text, str(manifest), problems):
        seen.update(dict.fromkeys(obj))
        captions = obj.get(column)
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(obj.get("file_name"), str):
            problems.add("bad manifest line", where, "needs 'file_name': the image's path")
        elif not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            problems.add("bad manifest line", where, f"needs {column!r}: a string or a list of strings")
        else:
            rows.append((where, obj["file_name"], captions, None))
    if seen and "file_name" not in seen:
        raise _no_column(f"{manifest}: no line has an", "image", "file_name", list(seen))
    if seen and column not in seen:
        raise _no_column(f"{manifest}: no line has a", "caption", column, list(seen), "caption_column")
    return rows


def _hub_csv_rows(text: str, manifest: Path, problems: Problems, column: str) -> list[tuple[str, object, list[str], None]]:
    """``(where, file_name, [caption], None)`` per row of a Hub ``metadata.csv`` (several rows: several captions)."""
    columns, table = _csv_table(text, manifest, strict=True)
    if "file_name" not in columns:
        raise _no_column(f"{manifest}:1: the header has no", "image", "file_name", columns)
    if column not in columns:
        raise _no_column(f"{manifest}:1: the header has no", "caption", column, columns, "caption_column")
    return [(f"{manifest}:{number}", (row.get("file_name") or "").strip(), [row.get(column) or ""], None)
            for number, row in table]
