"""The built-in Shapes captions data set (specification: ``specs/shapes.md``, version :data:`SPEC_VERSION`).

One solid-coloured object on a solid background, drawn from a seed, with no download. Every image is
described exactly by five attributes, which its captions state in words and its record carries as codes,
so that metrics can read generated images back against the caption that asked for them.

Geometry, in pixel units on a canvas ``[0, R] x [0, R]`` (y grows downwards; pixel ``(i, j)`` covers
``[j, j+1] x [i, i+1]``):

- centre ``(x, y) = (fx R, fy R)`` with ``fx, fy`` in ``{1/6, 1/2, 5/6}`` (:data:`POSITIONS`);
- extent ``e = 0.22 R`` (small) or ``0.40 R`` (large) (:data:`SIZES`);
- circle: diameter ``e``; square: side ``e``; triangle: isosceles, apex up, base ``e`` and height ``e``,
  centred on its bounding box; cross: a plus sign, arm-to-arm length ``e``, arm width ``e / 3``.
  A large object in an edge cell overhangs the canvas by ``0.033 R`` and is clipped there.

Anti-aliasing: each of the 72 object masks (4 shapes x 2 sizes x 9 positions) is rendered once per
resolution with exact inside-tests at the centres of an 8 x 8 subpixel grid and box-filtered (mean of
each 8 x 8 block), so its alpha is ``k / 64`` with ``k`` in ``0..64``: no ringing, no overshoot. A pixel is
``rint(bg * (1 - a) + fg * a)`` computed in float64 (``rint``: round half to even).

Splits: ``train`` never contains the (shape, colour) pairs of :data:`HELD_OUT`, one per shape::

    (triangle, green), (square, cyan), (circle, orange), (cross, magenta)

``test`` draws over all pairs and marks each image ``seen`` (1) or not (0), to measure compositional
generalisation. Captions: each image has ``captions_per_image`` phrasings from :data:`TEMPLATES`; every
``test`` image also has one caption in each of the :data:`HELD_OUT_TEMPLATES` (spec v2), phrasings that
never occur in ``train`` (``extra_caption_ids["held_out_phrasings"]``), to measure robustness to wording. Within a split, each combination that is allowed (no white object on a white
background; no held-out pair in ``train``) is equally likely: attributes are drawn uniformly and
independently and rejected combinations are drawn again.

Determinism: the draws are raw PCG64 outputs (``Generator(PCG64([seed, split, stream]))``) reduced modulo
the number of values (bias below 1e-17), so the data depend on the PCG64 and SeedSequence algorithms only,
not on numpy's samplers, which may change between versions. Attributes and captions do not depend on the
resolution, and the first ``n`` images of a split are the same for any split size ``>= n``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..fileio import atomic_path, cache_lock
from ..interfaces import CaptionedImages, Dataset

__all__ = [
    "SPEC_VERSION",
    "SHAPES",
    "COLOURS",
    "BACKGROUNDS",
    "SIZES",
    "POSITIONS",
    "HELD_OUT",
    "TEMPLATES",
    "HELD_OUT_TEMPLATES",
    "HELD_OUT_PHRASINGS",
    "SUPERSAMPLING",
    "ShapesConfig",
    "Shapes",
    "render",
    "alpha_mask",
    "caption",
]

SPEC_VERSION = 2  # bump whenever images or captions change: it keys the on-disk cache

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
    "white": (245, 245, 245),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "brown": (110, 70, 30),
}
SIZES: dict[str, float] = {"small": 0.22, "large": 0.40}
POSITIONS: dict[str, tuple[float, float]] = {  # row-major, top left .. bottom right; (x, y) fractions of R
    "top left": (1 / 6, 1 / 6), "top": (1 / 2, 1 / 6), "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 1 / 2), "center": (1 / 2, 1 / 2), "right": (5 / 6, 1 / 2),
    "bottom left": (1 / 6, 5 / 6), "bottom": (1 / 2, 5 / 6), "bottom right": (5 / 6, 5 / 6),
}  # fmt: skip
HELD_OUT: tuple[tuple[str, str], ...] = (
    ("triangle", "green"),
    ("square", "cyan"),
    ("circle", "orange"),
    ("cross", "magenta"),
)
SUPERSAMPLING = 8
SPLITS = ("train", "test")
ATTRIBUTES = ("shape", "colour", "background", "size", "position")

# -- captions ----------------------------------------------------------------------------------------
# Two phrasings of each position. The background colour always sits right before "background",
# "picture" or "image", and the object colour right next to the shape or its size, so a reader can
# always tell "a white circle" from "a white background".
_IN = {  # "in the top left corner", "in the center"
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left corner", "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}  # fmt: skip
_AT = {  # "at the top left", "in the middle"
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left side", "center": "in the middle", "right": "on the right side",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
}  # fmt: skip
TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} {in_pos} on a {bg} background",
    "there is a {size} {colour} {shape} {at_pos} of a {bg} picture",
    "{at_pos} of a {bg} image there is a {size} {colour} {shape}",
    "a {bg} background with a {size} {colour} {shape} {in_pos}",
    "{a_colour} {shape} of {size} size {at_pos}, on a {bg} background",
    "{bg} image, {size} {colour} {shape} {in_pos}",
    "a {size} {shape} painted {colour}, {at_pos}, on a {bg} background",
    "{in_pos}, a {size} {colour} {shape} on a {bg} background",
)
# Spec v2: phrasings that never occur in train, from training words in other orders and constructions (a
# third way to say each position, "image" where training says "picture", colour before size, the scene
# first, "painted" after the shape at the end). Every test image carries all of them, in
# ``extra_caption_ids[HELD_OUT_PHRASINGS]``; its ``caption_ids`` keep the training phrasings.
_BY = {  # "at the left", "at the center"
    "top left": "at the top left corner", "top": "at the top side", "top right": "at the top right corner",
    "left": "at the left", "center": "at the center", "right": "at the right",
    "bottom left": "at the bottom left corner", "bottom": "at the bottom side",
    "bottom right": "at the bottom right corner",
}  # fmt: skip
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "{size} {colour} {shape} {by_pos}, {bg} background",
    "there is a {size} {colour} {shape} {in_pos} of a {bg} image",
    "a {bg} picture with {a_colour} {shape} of {size} size {at_pos}",
    "{in_pos} of a {bg} background there is a {size} {shape} painted {colour}",
    "on a {bg} image, {a_colour} {size} {shape} {by_pos}",
    "a {shape} painted {colour} of {size} size {in_pos} on a {bg} picture",
)
HELD_OUT_PHRASINGS = "held_out_phrasings"  # the name of the test split's extra caption set


def caption(
    template: int, shape: str, colour: str, background: str, size: str, position: str, *, held_out: bool = False
) -> str:
    """The caption of one image with template number ``template``: an index into :data:`TEMPLATES`, or into
    :data:`HELD_OUT_TEMPLATES` when ``held_out``."""
    article = "an" if colour[0] in "aeiou" else "a"
    return (HELD_OUT_TEMPLATES if held_out else TEMPLATES)[template].format(
        size=size, colour=colour, shape=shape, bg=background, a_colour=f"{article} {colour}",
        in_pos=_IN[position], at_pos=_AT[position], by_pos=_BY[position],
    )  # fmt: skip


# -- rendering ---------------------------------------------------------------------------------------
def _inside(shape: str, x: np.ndarray, y: np.ndarray, e: float) -> np.ndarray:
    """Exact inside-test of ``shape`` of extent ``e`` centred at the origin (y downwards)."""
    ax, ay, h = np.abs(x), np.abs(y), e / 2
    if shape == "circle":
        return x * x + y * y <= h * h
    if shape == "square":
        return (ax <= h) & (ay <= h)
    if shape == "triangle":  # apex (0, -h), base corners (+-h, h): half-width grows by 1/2 per unit down
        return (y <= h) & (ax <= (y + h) / 2)
    if shape == "cross":
        return ((ax <= e / 6) & (ay <= h)) | ((ay <= e / 6) & (ax <= h))
    raise ValueError(shape)


def _check_resolution(resolution: Any) -> int:
    is_int = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool)
    if not is_int or resolution < 8 or resolution & (resolution - 1):
        raise UsageError(f"shapes: resolution must be a power of two >= 8 (e.g. 32, 64), got {resolution!r}")
    return int(resolution)


@lru_cache(maxsize=8)
def _coverage_table(resolution: int) -> np.ndarray:
    """``uint8 (72, R, R)``: subpixel counts (0..64) of each mask; id = (shape*2 + size)*9 + position."""
    s, r = SUPERSAMPLING, resolution
    sub = (np.arange(r * s) + 0.5) / s  # subpixel centres, in pixels
    table = np.zeros((len(SHAPES), len(SIZES), len(POSITIONS), r, r), np.uint8)
    for i, shape in enumerate(SHAPES):
        for j, frac in enumerate(SIZES.values()):
            e = frac * r
            for k, (fx, fy) in enumerate(POSITIONS.values()):
                inside = _inside(shape, sub[None, :] - fx * r, sub[:, None] - fy * r, e)
                table[i, j, k] = inside.reshape(r, s, r, s).sum(axis=(1, 3))
    table.flags.writeable = False
    return table.reshape(-1, r, r)


@lru_cache(maxsize=1)
def _blend_table() -> np.ndarray:
    """``uint8 (colours * backgrounds, 65, 3)``: the pixel of each (colour, background) pair at alpha k/64."""
    fg = np.array(list(COLOURS.values()), np.float64)[:, None, None, :]
    bg = np.array(list(BACKGROUNDS.values()), np.float64)[None, :, None, :]
    a = (np.arange(SUPERSAMPLING**2 + 1) / SUPERSAMPLING**2)[None, None, :, None]
    table = np.rint(bg * (1 - a) + fg * a).astype(np.uint8)
    return table.reshape(len(COLOURS) * len(BACKGROUNDS), -1, 3)


def _code(names: Any, value: str, what: str) -> int:
    names = tuple(names)
    if value not in names:
        raise UsageError(f"shapes: unknown {what} {value!r}; choose from {', '.join(names)}")
    return names.index(value)


def alpha_mask(shape: str, size: str, position: str, resolution: int) -> np.ndarray:
    """The object's anti-aliased coverage, ``float64 (R, R)`` in ``[0, 1]`` (multiples of 1/64)."""
    i, j = _code(SHAPES, shape, "shape"), _code(SIZES, size, "size")
    k = _code(POSITIONS, position, "position")
    table = _coverage_table(_check_resolution(resolution))
    return table[(i * len(SIZES) + j) * len(POSITIONS) + k] / SUPERSAMPLING**2


def render(shape: str, colour: str, background: str, size: str, position: str, resolution: int) -> np.ndarray:
    """One image, ``uint8 (R, R, 3)``, exactly as the data set draws it."""
    a = alpha_mask(shape, size, position, resolution)[..., None]
    fg = np.array(list(COLOURS.values())[_code(COLOURS, colour, "colour")], np.float64)
    bg = np.array(list(BACKGROUNDS.values())[_code(BACKGROUNDS, background, "background")], np.float64)
    return np.rint(bg * (1 - a) + fg * a).astype(np.uint8)


def _render_many(codes: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    """Images for attribute codes. There are only 72 masks x 32 colour pairs = 2304 distinct images: for
    each mask, make it in every colour pair (a table look-up), then copy those to the images that use it."""
    masks, blend = _coverage_table(resolution), _blend_table()
    mask_id = (codes["shape"] * len(SIZES) + codes["size"]) * len(POSITIONS) + codes["position"]
    pair_id = codes["colour"] * len(BACKGROUNDS) + codes["background"]
    out = np.empty((len(mask_id), resolution, resolution, 3), np.uint8)
    for m in range(len(masks)):
        rows = np.flatnonzero(mask_id == m)
        if len(rows):  # (pairs, R, R, 3) -> one per image; np.take is several times faster than [...] here
            out[rows] = np.take(blend[:, masks[m]], pair_id[rows], axis=0)
    return out


# -- sampling ----------------------------------------------------------------------------------------
_CARDINALITY = np.array([len(SHAPES), len(COLOURS), len(BACKGROUNDS), len(SIZES), len(POSITIONS)], np.uint64)
_HELD = np.zeros((len(SHAPES), len(COLOURS)), bool)
for _shape, _colour in HELD_OUT:
    _HELD[SHAPES.index(_shape), list(COLOURS).index(_colour)] = True
_CLASH = np.array([[fg == bg for bg in BACKGROUNDS.values()] for fg in COLOURS.values()])  # only white/white


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, SPLITS.index(split), stream]))


def _draw_attributes(seed: int, split: str, n: int, block: int = 4096) -> dict[str, np.ndarray]:
    """``n`` allowed combinations: candidates in fixed blocks, rejected ones skipped (prefixes are stable)."""
    rng, kept, total = _rng(seed, split, 0), [], 0
    while total < n:
        cand = (rng.bit_generator.random_raw((block, len(ATTRIBUTES))) % _CARDINALITY).astype(np.int64)
        ok = ~_CLASH[cand[:, 1], cand[:, 2]]
        if split == "train":
            ok &= ~_HELD[cand[:, 0], cand[:, 1]]
        kept.append(cand[ok])
        total += int(ok.sum())
    rows = np.concatenate(kept)[:n]
    codes = {name: np.ascontiguousarray(rows[:, i]) for i, name in enumerate(ATTRIBUTES)}
    codes["seen"] = (~_HELD[codes["shape"], codes["colour"]]).astype(np.int64)
    return codes


def _draw_captions(
    seed: int, split: str, codes: dict[str, np.ndarray], k: int
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """``k`` distinct training templates per image (a seeded shuffle of all of them, first ``k``) and, in
    ``test``, every held-out phrasing -> captions, ids ``(n, k)``, extra ids ``{name: (n, H)}``."""
    n = len(codes["shape"])
    keys = _rng(seed, split, 1).bit_generator.random_raw((n, len(TEMPLATES)))
    chosen = np.argsort(keys, axis=1, kind="stable")[:, :k]
    names = _attribute_values()
    columns = list(zip(*[[names[attr][c] for c in codes[attr].tolist()] for attr in ATTRIBUTES]))
    index: dict[str, int] = {}
    ids = np.empty((n, k), np.int64)
    for row, (templates, attrs) in enumerate(zip(chosen.tolist(), columns)):
        for col, t in enumerate(templates):
            ids[row, col] = index.setdefault(caption(t, *attrs), len(index))
    if split == "train":
        return list(index), ids, {}
    held = np.empty((n, len(HELD_OUT_TEMPLATES)), np.int64)
    for row, attrs in enumerate(columns):
        for t in range(len(HELD_OUT_TEMPLATES)):
            held[row, t] = index.setdefault(caption(t, *attrs, held_out=True), len(index))
    return list(index), ids, {HELD_OUT_PHRASINGS: held}


# -- the data set ------------------------------------------------------------------------------------
@dataclass
class ShapesConfig:
    """Options of the built-in Shapes data set."""

    train_size: int = field(default=30000, metadata={"help": "images in the train split"})
    test_size: int = field(default=5000, metadata={"help": "images in the test split"})
    seed: int = field(default=0, metadata={"help": "seed of attributes and captions (same seed, same data)"})
    captions_per_image: int = field(
        default=3, metadata={"help": f"distinct caption templates per image (3..{len(TEMPLATES)})"}
    )
    cache_dir: str = field(
        default="", metadata={"help": "directory for an on-disk .npz cache of each split ('' = memory only)"}
    )

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 3 <= self.captions_per_image <= len(TEMPLATES):
            n = len(TEMPLATES)
            raise ValueError(f"captions_per_image must be in 3..{n}, got {self.captions_per_image}")


class Shapes(Dataset):
    """Coloured shapes on plain backgrounds, with attribute-exact captions; rendered from a seed."""

    def __init__(self, cfg: ShapesConfig | None = None):
        self.cfg = cfg or ShapesConfig()

    def describe(self) -> str:
        c = self.cfg
        return f"shapes (spec v{SPEC_VERSION}; train {c.train_size}, test {c.test_size}, seed {c.seed})"

    def load(self, split: str, resolution: int) -> CaptionedImages:
        if split not in SPLITS:
            raise UsageError(f"shapes: unknown split {split!r}; splits: {', '.join(SPLITS)}")
        resolution = _check_resolution(resolution)
        if not self.cfg.cache_dir:
            return self._build(split, resolution)
        path = self._cache_path(split, resolution)
        n = self.cfg.train_size if split == "train" else self.cfg.test_size
        shape = (n, resolution, self.cfg.captions_per_image)
        cached = _read_cache(path, shape, split)
        if cached is None:
            with cache_lock(path):  # parallel jobs render the split once; the others wait and read it
                cached = _read_cache(path, shape, split)
                if cached is None:
                    data = self._build(split, resolution)
                    _write_cache(path, data)
                    return data
        return _record(*cached, info={**self._info(split, resolution), "cache": str(path)})

    def _info(self, split: str, resolution: int) -> dict[str, Any]:
        c = self.cfg
        return {
            "name": "shapes",
            "spec_version": SPEC_VERSION,
            "split": split,
            "resolution": resolution,
            "seed": c.seed,
            "train_size": c.train_size,
            "test_size": c.test_size,
            "captions_per_image": c.captions_per_image,
            "held_out": [list(p) for p in HELD_OUT],
            "phrasings": {"seen": len(TEMPLATES), "held_out": len(HELD_OUT_TEMPLATES) if split == "test" else 0},
            "extents": dict(SIZES),
            "supersampling": SUPERSAMPLING,
        }

    def _build(self, split: str, resolution: int) -> CaptionedImages:
        n = self.cfg.train_size if split == "train" else self.cfg.test_size
        codes = _draw_attributes(self.cfg.seed, split, n)
        captions, ids, extra = _draw_captions(self.cfg.seed, split, codes, self.cfg.captions_per_image)
        images = _render_many(codes, resolution)
        return _record(images, captions, ids, codes, extra, info=self._info(split, resolution))

    def _cache_path(self, split: str, resolution: int) -> Path:
        key = {k: v for k, v in asdict(self.cfg).items() if k != "cache_dir"}
        key.update(spec_version=SPEC_VERSION, split=split, resolution=resolution)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.cfg.cache_dir) / f"shapes-{split}-{resolution}px-{digest}.npz"


def _record(
    images: np.ndarray,
    captions: list[str],
    ids: np.ndarray,
    codes: dict[str, np.ndarray],
    extra: dict[str, np.ndarray],
    info: dict[str, Any],
) -> CaptionedImages:
    return CaptionedImages(
        images=torch.from_numpy(images),
        captions=captions,
        caption_ids=torch.from_numpy(ids),
        caption_counts=torch.full((len(ids),), ids.shape[1], dtype=torch.int64),
        attributes={name: torch.from_numpy(v) for name, v in codes.items()},
        attribute_values=_attribute_values(),
        extra_caption_ids={name: torch.from_numpy(v) for name, v in extra.items()},
        info=info,
    )


def _attribute_values() -> dict[str, tuple[str, ...]]:
    return {
        "shape": SHAPES,
        "colour": tuple(COLOURS),
        "background": tuple(BACKGROUNDS),
        "size": tuple(SIZES),
        "position": tuple(POSITIONS),
        "seen": ("unseen", "seen"),
    }


# -- the on-disk cache -------------------------------------------------------------------------------
def _write_cache(path: Path, data: CaptionedImages) -> None:
    """Write atomically: a uniquely named temporary file beside ``path``, then a rename."""
    arrays = {f"attr_{k}": v.numpy() for k, v in data.attributes.items()}
    arrays.update({f"extra_{k}": v.numpy() for k, v in data.extra_caption_ids.items()})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=data.images.numpy(), captions=np.array(data.captions, dtype=str),
                 caption_ids=data.caption_ids.numpy(), **arrays)  # fmt: skip


def _read_cache(
    path: Path, shape: tuple[int, int, int], split: str
) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """(images, captions, caption ids, attribute codes, extra caption ids) of a cached ``split`` of
    ``shape`` = (N, R, K), or ``None`` (rebuild it) when the file is missing, unreadable or not what was
    asked for."""
    if not path.is_file():
        return None
    n, r, k = shape
    extra_names = () if split == "train" else (HELD_OUT_PHRASINGS,)
    try:
        with np.load(path, allow_pickle=False) as z:
            images, ids = z["images"], z["caption_ids"]
            captions = [str(c) for c in z["captions"]]
            codes = {name: z[f"attr_{name}"] for name in (*ATTRIBUTES, "seen")}
            extra = {name: z[f"extra_{name}"] for name in extra_names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    ok = (
        images.shape == (n, r, r, 3) and images.dtype == np.uint8
        and all(a.shape[0] == n and a.ndim == 2 and a.dtype == np.int64 and int(a.min()) >= 0
                and int(a.max()) < len(captions) for a in (ids, *extra.values()))
        and ids.shape[1] == k and all(a.shape[1] == len(HELD_OUT_TEMPLATES) for a in extra.values())
        and all(a.shape == (n,) and a.dtype == np.int64 for a in codes.values())
    )  # fmt: skip
    return (images, captions, ids, codes, extra) if ok else None
