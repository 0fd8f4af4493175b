"""Sets of images that distribution metrics compare, and the disk cache of their features.

An :class:`~t2i.interfaces.ImageSet` is a sized, re-iterable source of uint8 ``(B, H, W, 3)`` batches plus an ``identity``:
a JSON-able description precise enough to key a cache (a data set split's info and the sha256 of its
pixels; a folder's path and the sha256 of its files). Three kinds: a data set split in memory
(:func:`split_images`), a folder of image files read batch by batch (:func:`folder_images`), and anything
else as a tensor (:func:`tensor_images`). :func:`folder_captions` reads the caption each image of a folder was
generated from (a ``captions.jsonl`` or one ``.txt`` beside each image), in the folder's order, for the metrics
that score images against their captions.

:func:`cached_features` runs an extractor over a *reference* image set once and keeps the result in
``<cache>/metrics/<extractor>-<digest>.npz`` (``<cache>``: ``cache_dir``, else ``$T2I_CACHE_DIR``, else
``~/.cache/t2i``): the float64 :class:`~t2i.metrics.frechet.RunningStats` of each feature (FID) and the
features themselves (KID). The digest covers the image set's identity and the extractor's cache key
(name, weights sha256, preprocessing); the file repeats the full key, and a file whose key differs, or that
cannot be read, is recomputed and replaced, never reused. The build holds a lock on the file, so parallel
study jobs or DDP ranks asking for the same features compute them once and the others read the result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..fileio import atomic_path, cache_lock
from ..interfaces import CaptionedImages, ImageSet
from ..paths import default_cache_dir
from .features import FeatureExtractor
from .frechet import RunningStats

__all__ = [
    "ImageSet", "split_images", "folder_images", "folder_captions", "tensor_images", "cached_features", "extract_all",
    "IMAGE_SUFFIXES",
]  # fmt: skip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_FORMAT = "t2i-reference-features-v1"


def _sha256_tensor(images: Tensor) -> str:
    h = hashlib.sha256()
    flat = images.contiguous().view(images.shape[0], -1)
    for start in range(0, flat.shape[0], 4096):
        h.update(flat[start : start + 4096].numpy().tobytes())
    return h.hexdigest()


def tensor_images(images: Tensor, identity: dict[str, Any] | None = None) -> ImageSet:
    """uint8 ``(N, H, W, 3)`` as an image set; identity: ``identity`` plus the sha256 of the pixels."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    ident = {**(identity or {}), "shape": list(images.shape), "pixels_sha256": _sha256_tensor(images)}
    return ImageSet(ident, int(images.shape[0]), lambda bs: (images[i : i + bs] for i in range(0, len(images), bs)))


def split_images(reference: CaptionedImages) -> ImageSet:
    """A data set split: identity = its info (minus local cache paths) + the sha256 of its pixels."""
    info = {k: v for k, v in reference.info.items() if k != "cache"}
    return tensor_images(reference.images, {"source": "dataset", **info})


def _image_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise UsageError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from None


def folder_images(folder: str | os.PathLike) -> ImageSet:
    """Every image file under ``folder`` (recursively, sorted by path), as RGB; all must have the same size.

    Identity: the resolved path, the file count, the image size and the sha256 of the files' names and bytes.
    """
    root = Path(folder).expanduser()
    files = _image_files(root)
    first = _read_rgb(files[0])
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())

    def batches(batch_size: int) -> Iterator[Tensor]:
        for start in range(0, len(files), batch_size):
            arrays = []
            for path in files[start : start + batch_size]:
                a = _read_rgb(path)
                if a.shape != first.shape:
                    raise UsageError(f"{path} is {a.shape[1]}x{a.shape[0]} but {files[0].name} is "
                                     f"{first.shape[1]}x{first.shape[0]}: a folder must hold images of one size")  # fmt: skip
                arrays.append(a)
            yield torch.from_numpy(np.stack(arrays))

    ident = {"source": "folder", "path": str(root.resolve()), "size": [int(first.shape[1]), int(first.shape[0])],
             "files_sha256": h.hexdigest()}  # fmt: skip
    return ImageSet(ident, len(files), batches)


def folder_captions(folder: str | os.PathLike, captions: str | os.PathLike | None = None) -> list[str]:
    """The caption of every image under ``folder``, in :func:`folder_images`' order (sorted paths).

    ``captions``: a JSON-lines file, one ``{"image": NAME, "caption": TEXT}`` per line, ``NAME`` being the image's
    path relative to ``folder`` or its file name, with or without the extension (so ``0001``, ``0001.png`` and
    ``birds/0001.png`` all match ``birds/0001.png``; a bare name must be unique in the folder). Without it: a text
    file beside each image with the same stem (``0001.png`` + ``0001.txt``) holding its one caption.

    Every image needs exactly one caption and every caption one image; a mismatch is a one-line
    :class:`UsageError` naming the file (``captions.jsonl line 3: no image '0007' in samples/``).
    """
    root = Path(folder).expanduser()
    files = _image_files(root)
    if captions is None:
        return [_sidecar_caption(path) for path in files]
    source = Path(captions).expanduser()
    if not source.is_file():
        raise UsageError(f"captions file {source} does not exist")
    by_key = {path.relative_to(root).with_suffix("").as_posix(): path for path in files}
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path)
    found: dict[Path, str] = {}
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source.name} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise UsageError(f'{where}: expected {{"image": NAME, "caption": TEXT}}')
        caption = entry.get("caption")
        if isinstance(caption, list) and len(caption) == 1:
            caption = caption[0]
        if not isinstance(caption, str) or not caption.strip():
            raise UsageError(f"{where}: image '{entry['image']}' needs one non-empty caption string")
        path = _match_image(entry["image"], by_key, by_stem, root, where)
        if path in found:
            raise UsageError(f"{where}: a second caption for {path.relative_to(root)}; each image has one")
        found[path] = caption.strip()
    missing = [path for path in files if path not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{source.name} has no caption for {missing[0].relative_to(root)}{more} in {root}")
    return [found[path] for path in files]


def _match_image(name: str, by_key: dict[str, Path], by_stem: dict[str, list[Path]], root: Path, where: str) -> Path:
    """The image a captions-file entry names: its relative path, else its unique stem (extension optional)."""
    key = PurePosixPath(name.replace("\\", "/"))
    key_text = key.with_suffix("").as_posix() if key.suffix.lower() in IMAGE_SUFFIXES else key.as_posix()
    if key_text in by_key:
        return by_key[key_text]
    same = by_stem.get(key_text, []) if "/" not in key_text else []
    if len(same) == 1:
        return same[0]
    if len(same) > 1:
        shown = ", ".join(str(p.relative_to(root)) for p in same[:2])
        raise UsageError(f"{where}: image '{name}' matches {len(same)} files ({shown}); give its path relative to {root}")
    raise UsageError(f"{where}: no image '{name}' in {root}")


def _sidecar_caption(path: Path) -> str:
    text_file = path.with_suffix(".txt")
    if not text_file.is_file():
        raise UsageError(f"no caption for {path}: put {text_file.name} beside it, or pass --captions captions.jsonl")
    lines = [line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != 1:
        raise UsageError(f"{text_file} holds {len(lines)} captions; a generated image has exactly one")
    return lines[0]


def extract_all(extractor: FeatureExtractor, images: ImageSet, batch_size: int) -> dict[str, Tensor]:
    """Features of every image in ``images`` (float32, CPU), ``batch_size`` images per forward pass."""
    parts: dict[str, list[Tensor]] = {name: [] for name in extractor.dims}
    for batch in images.batches(batch_size):
        for name, value in extractor(batch).items():
            parts[name].append(value)
    return {name: torch.cat(v) if v else torch.empty(0, extractor.dims[name]) for name, v in parts.items()}


def _cache_path(key: dict[str, Any], extractor_name: str, cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "metrics" / f"{extractor_name}-{digest[:32]}.npz"


def _read_cache(path: Path, key_json: str, names: list[str]) -> tuple[dict[str, RunningStats], dict[str, Tensor]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key_json:
                return None
            fields = ("n", "shift", "sum", "outer")
            stats = {n: RunningStats.from_state_dict({k: data[f"{n}.{k}"] for k in fields}) for n in names}
            feats = {n: torch.from_numpy(np.array(data[f"{n}.features"])) for n in names}
    except Exception:  # truncated, garbled, foreign: compute again
        return None
    return stats, feats


def _write_cache(path: Path, key_json: str, stats: dict[str, RunningStats], feats: dict[str, Tensor]) -> None:
    arrays: dict[str, np.ndarray] = {"key": np.asarray(key_json)}
    for name, s in stats.items():
        arrays.update({f"{name}.{k}": v for k, v in s.state_dict().items()})
        arrays[f"{name}.features"] = feats[name].numpy()
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def cached_features(
    extractor: FeatureExtractor,
    images: ImageSet,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> tuple[dict[str, RunningStats], dict[str, Tensor], dict[str, Any]]:
    """``(stats per feature, features per feature, cache info)`` of a reference image set, cached on disk.

    ``cache info`` says whether the file was reused (``"hit"``) or (re)computed, and its name.
    """
    names = sorted(extractor.dims)
    key = {
        "format": _FORMAT, "images": images.identity, "count": images.count,
        "extractor": extractor.cache_key(), "features": names,
    }  # fmt: skip
    key_json = json.dumps(key, sort_keys=True, default=str)
    path = _cache_path(key, extractor.name, cache_dir)
    if not use_cache:
        stats, feats = _extract_stats(extractor, images, batch_size, names)
        return stats, feats, {"file": path.name, "hit": False}
    found = _read_cache(path, key_json, names)
    if found is None:
        with cache_lock(path):
            found = _read_cache(path, key_json, names)  # another process may have built it meanwhile
            if found is None:
                stats, feats = _extract_stats(extractor, images, batch_size, names)
                _write_cache(path, key_json, stats, feats)
                return stats, feats, {"file": path.name, "hit": False}
    return found[0], found[1], {"file": path.name, "hit": True}


def _extract_stats(
    extractor: FeatureExtractor, images: ImageSet, batch_size: int, names: list[str]
) -> tuple[dict[str, RunningStats], dict[str, Tensor]]:
    feats = extract_all(extractor, images, batch_size)
    return {n: RunningStats().update(feats[n]) for n in names}, feats
