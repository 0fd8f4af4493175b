"""Decode every image once into a memory-mapped uint8 cache; training reads only the cache.

Decoding a JPEG costs about a millisecond; a GAN step at 64 px consumes hundreds of images. So the first
load of a split decodes, crops and resizes all of its images (threads, a progress bar) into

    <cache>/images/<data set>-<split>-<R>px-<digest>.u8            raw uint8 (N, R, R, 3), row-major
    <cache>/images/<data set>-<split>-<R>px-<digest>.report.json   what was built, and every problem

where ``<cache>`` is the data set's ``cache_dir`` option, else ``$T2I_CACHE_DIR``, else ``~/.cache/t2i``.
``<digest>`` hashes the data root, split, resolution and preprocessing (crop boxes, fitting), so a changed
setting gets its own file. The report also records a digest of the source (every item's key, path, size,
modification time and crop box): when a file is added, removed or edited, the cache is rebuilt in place.
Both files are written to a temporary name and renamed, so an interrupted build leaves no half cache.

Each image: opened lazily (header only), refused above ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
(decompression bombs), for JPEGs decoded at a reduced DCT scale when the crop is at least four times the
target (``draft``), turned upright by its EXIF orientation (whole images only, not crop boxes), converted
to RGB (16-bit greyscale scaled to 8 bits; palette, greyscale and CMYK converted; transparency composited
on white), cropped to the crop box when given (the StackGAN bird crop), then to the centred square, and
resized with Pillow's antialiased bicubic filter. Images that fail any step are skipped and listed in the
report, never crash the run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..fileio import atomic_path, cache_lock, write_bytes
from ..paths import default_cache_dir
from .items import Item, Problems

__all__ = ["FORMAT", "CachedImages", "cached_images", "cache_paths", "decode_image", "crop_region", "BadImage"]

FORMAT = "t2i-image-cache-v1"
BBOX_MARGIN = 0.75  # StackGAN's bird crop: a square of 2 x 0.75 x max(w, h) around the box's centre


class BadImage(Exception):
    """An image that cannot be used: ``kind`` (e.g. "unreadable image") and a detail."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass
class CachedImages:
    """The cached split: images ``uint8 (count, R, R, 3)`` (memory-mapped), which items they are, problems."""

    images: torch.Tensor
    kept: list[int]  # positions in the items list, in order
    problems: Problems  # images skipped while building (kept in the report)
    images_path: Path
    report_path: Path
    built: bool  # True when this call built the cache

    @property
    def count(self) -> int:
        return len(self.kept)


# -- one image ---------------------------------------------------------------------------------------------
def crop_region(width: float, height: float, box: tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the square the image is resized from.

    With a box ``(x, y, w, h)``: StackGAN's crop, a ``1.5 * max(w, h)`` square around the box's centre,
    clipped to the image; then (always) the centred square of what remains.
    """
    left, top, right, bottom = 0.0, 0.0, float(width), float(height)
    if box is not None:
        x, y, w, h = box
        r = int(max(w, h) * BBOX_MARGIN)
        cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
        left, right = max(0.0, cx - r), min(float(width), cx + r)
        top, bottom = max(0.0, cy - r), min(float(height), cy + r)
        if right - left < 1 or bottom - top < 1:  # a box outside the image: use the whole image
            left, top, right, bottom = 0.0, 0.0, float(width), float(height)
    side = min(right - left, bottom - top)
    left += (right - left - side) / 2
    top += (bottom - top - side) / 2
    return left, top, left + side, top + side


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: 16-bit scaled to 8, transparency composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        values = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.size and values.max() > 255):
            values = values / 257.0  # 0..65535 -> 0..255
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(path: Path | BinaryIO, box: tuple[float, float, float, float] | None, resolution: int, min_side: int = 1) -> np.ndarray:
    """``uint8 (R, R, 3)`` of the image at ``path`` (or in a binary file object); raises :class:`BadImage` for
    anything unusable."""
    try:
        img = Image.open(path)  # reads the header only; more than 2x MAX_IMAGE_PIXELS raises here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage("decompression bomb", str(exc).split(".")[0]) from None
    except UnidentifiedImageError:
        raise BadImage("unreadable image", "not an image Pillow recognises") from None
    except OSError as exc:
        raise BadImage("unreadable image", exc.strerror or str(exc)) from None
    with img:
        width, height = img.size
        limit = Image.MAX_IMAGE_PIXELS
        if limit and width * height > limit:
            raise BadImage("decompression bomb", f"{width}x{height} pixels, more than Pillow's limit of {limit}")
        region = crop_region(width, height, box)
        side = region[2] - region[0]
        if side < max(1, min_side):
            raise BadImage("image too small", f"{width}x{height}" + (" (after the crop box)" if box else ""))
        try:
            if img.format == "JPEG" and side >= 4 * resolution:  # decode at 1/2, 1/4 or 1/8 scale
                scale = 2 * resolution / side
                img.draft(img.mode, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
            img.load()
            sx, sy = img.size[0] / width, img.size[1] / height
            if box is None:
                img = ImageOps.exif_transpose(img)  # phone photos: upright; boxes refer to the stored pixels
                region = crop_region(*img.size, None)
            else:
                region = (region[0] * sx, region[1] * sy, region[2] * sx, region[3] * sy)
            rgb = _to_rgb(img)
            out = rgb.resize((resolution, resolution), Image.Resampling.BICUBIC, box=region, reducing_gap=3.0)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage("decompression bomb", str(exc).split(".")[0]) from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as exc:
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            raise BadImage("unreadable image", detail) from None
    array = np.asarray(out, dtype=np.uint8)
    if array.shape != (resolution, resolution, 3):
        raise BadImage("unreadable image", f"decoded to shape {array.shape}")
    return array


# -- the cache -----------------------------------------------------------------------------------------------
def cache_paths(dataset: str, root: Path, split: str, resolution: int, preprocessing: dict[str, Any],
                cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(images file, report file) of a split at a resolution with given preprocessing."""
    key = {"format": FORMAT, "dataset": dataset, "root": str(Path(root).resolve()), "split": split,
           "resolution": resolution, "preprocessing": preprocessing}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / "images"
    stem = f"{dataset}-{split}-{resolution}px-{digest}"
    return folder / f"{stem}.u8", folder / f"{stem}.report.json"


def source_digest(items: list[Item]) -> str:
    """sha256 of every item's key, path, size, modification time and crop box (what the pixels come from)."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps([item.key, str(item.path), item.size, item.mtime_ns, item.box]).encode())
        h.update(b"\n")
    return h.hexdigest()


def cached_images(
    items: list[Item],
    *,
    dataset: str,
    root: Path,
    split: str,
    resolution: int,
    preprocessing: dict[str, Any],
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    quiet: bool = False,
    index_problems: Problems | None = None,
    rebuild: bool = False,
) -> CachedImages:
    """The split's images from the cache, building it first when missing or stale (or ``rebuild``).

    The build holds a lock on the cache file, so processes that ask for the same cache at once (parallel
    study jobs, the ranks of one run) decode the images once: the others wait, then read what it built.
    """
    images_path, report_path = cache_paths(dataset, root, split, resolution, preprocessing, cache_dir)
    digest = source_digest(items)
    found = None if rebuild else _read(images_path, report_path, digest, resolution, len(items))
    if found is None:
        with cache_lock(images_path):
            found = None if rebuild else _read(images_path, report_path, digest, resolution, len(items))
            if found is None:
                return _build_cache(items, dataset, root, split, resolution, preprocessing, images_path, report_path,
                                    digest, workers, quiet, index_problems)
    images, kept, problems = found
    return CachedImages(images, kept, problems, images_path, report_path, built=False)


def _build_cache(items: list[Item], dataset: str, root: Path, split: str, resolution: int,
                 preprocessing: dict[str, Any], images_path: Path, report_path: Path, digest: str, workers: int,
                 quiet: bool, index_problems: Problems | None) -> CachedImages:
    """Decode the images into ``images_path``, then write the report that makes the cache valid."""
    label = f"{dataset} {split} ({len(items)} images at {resolution} px)"
    kept, problems = _build(items, resolution, int(preprocessing.get("min_image_side", 1)), images_path, workers, quiet, label)
    report = {
        "format": FORMAT, "dataset": dataset, "root": str(root), "split": split, "resolution": resolution,
        "preprocessing": preprocessing, "source_digest": digest, "listed": len(items), "count": len(kept),
        "counts": Problems((index_problems.items if index_problems else []) + problems.items).counts(),
        "image_problems": problems.to_list(),
        "index_problems": index_problems.to_list() if index_problems else [],
        "kept": kept,
    }  # fmt: skip
    write_bytes(report_path, (json.dumps(report, indent=1) + "\n").encode())
    return CachedImages(_memmap(images_path, len(kept), resolution), kept, problems, images_path, report_path, built=True)


def read_report(report_path: Path) -> dict[str, Any] | None:
    """The report of a cache, or ``None`` when it is missing or unreadable."""
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("format") == FORMAT else None


def _read(images_path: Path, report_path: Path, digest: str, resolution: int, n_items: int) -> tuple[torch.Tensor, list[int], Problems] | None:
    report = read_report(report_path)
    if report is None or report.get("source_digest") != digest or report.get("resolution") != resolution:
        return None
    kept = report.get("kept")
    if not isinstance(kept, list) or report.get("count") != len(kept) or any(not 0 <= k < n_items for k in kept):
        return None
    try:
        if images_path.stat().st_size != len(kept) * resolution * resolution * 3:
            return None
        problems = Problems.from_list(report.get("image_problems", []))
    except (OSError, KeyError, TypeError):
        return None
    return _memmap(images_path, len(kept), resolution), kept, problems


def _memmap(path: Path, count: int, resolution: int) -> torch.Tensor:
    if count == 0:
        return torch.empty((0, resolution, resolution, 3), dtype=torch.uint8)
    # "c" (copy-on-write): a writable view for torch, whose writes never reach the file
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=(count, resolution, resolution, 3))
    return torch.from_numpy(array)


def _build(items: list[Item], resolution: int, min_side: int, path: Path, workers: int, quiet: bool,
           label: str) -> tuple[list[int], Problems]:
    """Decode every item into ``path`` (a temporary file, then a rename); return kept positions and problems."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    def decode(item: Item) -> np.ndarray | BadImage:
        try:
            source = io.BytesIO(item.read()) if item.read is not None else item.path
            return decode_image(source, item.box, resolution, min_side)
        except BadImage as exc:
            return exc

    kept: list[int] = []
    problems = Problems()
    terminal = sys.stderr.isatty()
    if not quiet and not terminal:
        print(f"t2i: building the image cache of {label} ...", file=sys.stderr, flush=True)
    bar = Progress(TextColumn("[bold]caching images[/bold] " + label.replace("[", r"\[")), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True, disable=quiet or not terminal)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), open(tmp, "wb") as f, bar, ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decode_image refuses those itself
            task = bar.add_task("cache", total=len(items))
            for i, result in enumerate(pool.map(decode, items, chunksize=1)):
                if isinstance(result, BadImage):
                    problems.add(result.kind, items[i].path, result.detail)
                else:
                    f.write(result.tobytes())
                    kept.append(i)
                bar.advance(task)
    if not quiet and not terminal:
        print(f"t2i: cached {len(kept)} of {len(items)} images in {path}", file=sys.stderr, flush=True)
    return kept, problems
