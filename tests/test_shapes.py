"""The built-in Shapes data set against its spec (specs/shapes.md): read the attributes back from the pixels
and the captions with readers written here, independently of the renderer."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

from t2i.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    HELD_OUT_PHRASINGS,
    HELD_OUT_TEMPLATES,
    TEMPLATES,
    caption,
    POSITIONS,
    SHAPES,
    SIZES,
    Shapes,
    ShapesConfig,
    render,
)
from t2i.errors import UsageError
from data_fixtures import build_twice_at_once

# The spec's table, typed in again so that a changed constant fails here.
SPEC_COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
    "magenta": (210, 50, 200), "cyan": (40, 200, 210), "white": (245, 245, 245), "orange": (245, 140, 30),
}  # fmt: skip
SPEC_BACKGROUNDS = {
    "black": (0, 0, 0), "white": (245, 245, 245), "gray": (128, 128, 128), "brown": (110, 70, 30),
}  # fmt: skip
SPEC_EXTENT = {"small": 0.22, "large": 0.40}
ATTRIBUTES = ("shape", "colour", "background", "size", "position")
THIRDS = {"left": 1 / 6, "top": 1 / 6, "": 1 / 2, "right": 5 / 6, "bottom": 5 / 6}


def spec_centre(position: str) -> tuple[float, float]:
    """(x, y) fractions of R from the position's name, as the spec's grid defines them."""
    words = position.split()
    row = next((w for w in words if w in ("top", "bottom")), "")
    col = next((w for w in words if w in ("left", "right")), "")
    return THIRDS[col], THIRDS[row]


def alpha_of(image: np.ndarray, colour: str, background: str) -> np.ndarray:
    """Coverage read back from pixels, on the channel where object and background differ most."""
    fg, bg = np.array(SPEC_COLOURS[colour], float), np.array(SPEC_BACKGROUNDS[background], float)
    c = int(np.argmax(np.abs(fg - bg)))
    return (image[..., c].astype(float) - bg[c]) / (fg[c] - bg[c])


def decode(data, i: int) -> dict[str, str]:
    return {k: data.attribute_values[k][int(v[i])] for k, v in data.attributes.items()}


@pytest.fixture(scope="module")
def small() -> Shapes:
    return Shapes(ShapesConfig(train_size=3000, test_size=2000, seed=7))


@pytest.fixture(scope="module")
def train(small):
    return small.load("train", 32)


@pytest.fixture(scope="module")
def test_split(small):
    return small.load("test", 32)


# -- constants ----------------------------------------------------------------------------------------
def test_constants_follow_the_spec():
    assert COLOURS == SPEC_COLOURS and BACKGROUNDS == SPEC_BACKGROUNDS and SIZES == SPEC_EXTENT
    assert set(SHAPES) == {"circle", "square", "triangle", "cross"}
    assert list(POSITIONS) == [
        "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
    ]  # fmt: skip
    for name, xy in POSITIONS.items():
        assert xy == pytest.approx(spec_centre(name))
    assert set(HELD_OUT) == {
        ("triangle", "green"), ("square", "cyan"), ("circle", "orange"), ("cross", "magenta"),
    }  # fmt: skip


# -- pixels -------------------------------------------------------------------------------------------
def test_exact_colours_at_the_object_centre_and_the_far_corner(train):
    images = train.images.numpy()
    r = train.resolution
    for i in range(len(train)):
        a = decode(train, i)
        fx, fy = spec_centre(a["position"])
        assert tuple(images[i, int(fy * r), int(fx * r)]) == SPEC_COLOURS[a["colour"]], a
        corner_y, corner_x = (r - 1 if fy <= 0.5 else 0), (r - 1 if fx <= 0.5 else 0)
        assert tuple(images[i, corner_y, corner_x]) == SPEC_BACKGROUNDS[a["background"]], a


def test_colour_never_equals_background(train, test_split):
    for data in (train, test_split):
        for i in range(len(data)):
            a = decode(data, i)
            assert SPEC_COLOURS[a["colour"]] != SPEC_BACKGROUNDS[a["background"]]


@pytest.mark.parametrize("r", [64, 128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", list(SPEC_EXTENT))
def test_extent_from_pixels(shape, size, r):
    alpha = alpha_of(render(shape, "red", "black", size, "center", r), "red", "black")
    width = alpha.max(axis=0).sum()  # a column's strongest coverage ~ how much of it the object spans
    height = alpha.max(axis=1).sum()  # (short by up to ~1 px at a triangle's apex: see the apex test)
    e = SPEC_EXTENT[size] * r
    assert abs(width - e) <= 1 and abs(height - e) <= (1.25 if shape == "triangle" else 1), (width, height, e)


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("shape", SHAPES)
def test_centre_lies_in_its_grid_cell(shape, position):
    r = 64
    alpha = alpha_of(render(shape, "yellow", "brown", "small", position, r), "yellow", "brown")
    ys, xs = np.mgrid[:r, :r] + 0.5  # pixel centres
    cx, cy = (alpha * xs).sum() / alpha.sum(), (alpha * ys).sum() / alpha.sum()
    fx, fy = spec_centre(position)
    e = SPEC_EXTENT["small"] * r
    # a triangle's area centroid sits e/6 below its bounding box's centre (2/3 of the way down from the apex)
    expected_y = fy * r + (e / 6 if shape == "triangle" else 0)
    assert cx == pytest.approx(fx * r, abs=0.1) and cy == pytest.approx(expected_y, abs=0.1)
    assert (int(cx * 3 / r), int(cy * 3 / r)) == (int(fx * 3), int(fy * 3))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_centred_object_is_mirror_symmetric(shape):
    alpha = alpha_of(render(shape, "cyan", "black", "large", "center", 64), "cyan", "black")
    assert np.array_equal(alpha, alpha[:, ::-1])
    if shape != "triangle":
        assert np.array_equal(alpha, alpha[::-1]) and np.array_equal(alpha, alpha.T)


def test_triangle_apex_is_up():
    r, e = 64, SPEC_EXTENT["large"] * 64
    alpha = alpha_of(render("triangle", "blue", "white", "large", "center", r), "blue", "white")
    top, bottom = alpha[: r // 2].sum(), alpha[r // 2 :].sum()
    assert bottom == pytest.approx(3 * top, rel=0.05)  # apex up: 1/4 of the area is above half height
    assert alpha.sum() == pytest.approx(e * e / 2, rel=0.02)  # base e, height e
    # A row's width grows linearly from the apex down (by base/height = 1 per pixel): fit it on the rows
    # strictly inside the triangle; it starts at the top of the bounding box and reaches e at its bottom.
    rows = alpha.sum(axis=1)
    inside = np.flatnonzero(rows > 0)[1:-1]
    slope, intercept = np.polyfit(inside + 0.5, rows[inside], 1)
    assert slope == pytest.approx(1, abs=0.01)
    assert -intercept / slope == pytest.approx(r / 2 - e / 2, abs=0.1)  # apex at the top of the box
    assert slope * (r / 2 + e / 2) + intercept == pytest.approx(e, abs=0.1)  # base e at its bottom


def test_cross_is_a_plus_with_arms_a_third_of_its_extent():
    r, e = 128, SPEC_EXTENT["large"] * 128
    alpha = alpha_of(render("cross", "green", "gray", "large", "center", r), "green", "gray")
    c = r // 2
    arm_row = int(c - e / 3)  # crosses the vertical arm only
    assert alpha[arm_row].sum() == pytest.approx(e / 3, abs=1)
    assert alpha[c].sum() == pytest.approx(e, abs=1)
    inner, outer = int(c - e / 3), int(c + e / 3)
    assert alpha[inner, inner] == 0 and alpha[outer, outer] == 0  # the corners of its box are empty
    assert alpha.sum() == pytest.approx(5 * (e / 3) ** 2, rel=0.02)


def test_anti_aliasing_is_a_box_filter_without_overshoot():
    r = 32
    image = render("square", "orange", "brown", "large", "center", r)
    fg, bg = np.array(SPEC_COLOURS["orange"]), np.array(SPEC_BACKGROUNDS["brown"])
    assert ((image >= np.minimum(fg, bg)) & (image <= np.maximum(fg, bg))).all()
    alpha = alpha_of(image, "orange", "brown")
    assert ((alpha > 0) & (alpha < 1)).any()  # edge pixels strictly between background and object
    # The exact coverage of an axis-aligned square is separable; 8x supersampling is within 1/8 per axis.
    e, lo = SPEC_EXTENT["large"] * r, r / 2 - SPEC_EXTENT["large"] * r / 2
    edges = np.arange(r + 1.0)
    overlap = np.clip(np.minimum(edges[1:], lo + e) - np.maximum(edges[:-1], lo), 0, 1)
    exact = overlap[:, None] * overlap[None, :]
    assert np.abs(alpha - exact).max() <= 2 / 8 + 0.01


def test_every_pixel_stays_between_background_and_object(train):
    images = train.images.numpy()[:500].astype(int)
    for i in range(len(images)):
        a = decode(train, i)
        fg, bg = np.array(SPEC_COLOURS[a["colour"]]), np.array(SPEC_BACKGROUNDS[a["background"]])
        assert ((images[i] >= np.minimum(fg, bg)) & (images[i] <= np.maximum(fg, bg))).all()
        alpha = alpha_of(images[i], a["colour"], a["background"])
        assert ((alpha > 0.01) & (alpha < 0.99)).any()  # every object has soft edges


# -- data ---------------------------------------------------------------------------------------------
def test_record_shapes_and_types(train):
    n, r = 3000, 32
    assert train.images.dtype == torch.uint8 and train.images.shape == (n, r, r, 3)
    assert train.caption_ids.dtype == torch.int64 and train.caption_ids.shape == (n, 3)
    assert train.caption_counts.dtype == torch.int64 and (train.caption_counts == 3).all()
    assert set(train.attributes) == {"shape", "colour", "background", "size", "position", "seen"}
    assert all(v.dtype == torch.int64 and v.shape == (n,) for v in train.attributes.values())
    assert len(set(train.captions)) == len(train.captions)
    assert int(train.caption_ids.min()) >= 0 and int(train.caption_ids.max()) < len(train.captions)
    assert {tuple(p) for p in train.info["held_out"]} == set(HELD_OUT) and train.info["seed"] == 7


def test_determinism_and_seeds(train):
    again = Shapes(ShapesConfig(train_size=3000, test_size=10, seed=7)).load("train", 32)
    assert torch.equal(again.images, train.images) and again.captions == train.captions
    assert torch.equal(again.caption_ids, train.caption_ids)
    other = Shapes(ShapesConfig(train_size=3000, test_size=10, seed=8)).load("train", 32)
    assert not torch.equal(other.images, train.images) and other.captions != train.captions


def test_attributes_and_captions_do_not_depend_on_resolution_or_size():
    cfg = ShapesConfig(train_size=300, test_size=10, seed=3)
    a, b = Shapes(cfg).load("train", 32), Shapes(cfg).load("train", 64)
    assert a.captions == b.captions and torch.equal(a.caption_ids, b.caption_ids)
    assert all(torch.equal(a.attributes[k], b.attributes[k]) for k in a.attributes)
    bigger = Shapes(ShapesConfig(train_size=600, test_size=10, seed=3)).load("train", 32)  # same prefix
    assert torch.equal(bigger.images[:300], a.images)
    assert [bigger.captions_of(i) for i in range(300)] == [a.captions_of(i) for i in range(300)]


def test_train_and_test_differ_and_hold_out_pairs(train, test_split):
    held = set(HELD_OUT)
    pairs_train = {(decode(train, i)["shape"], decode(train, i)["colour"]) for i in range(len(train))}
    assert not pairs_train & held
    assert bool((train.attributes["seen"] == 1).all())
    seen = test_split.attributes["seen"]
    assert 0 < int(seen.sum()) < len(test_split)
    for i in range(len(test_split)):
        a = decode(test_split, i)
        assert (a["seen"] == "seen") == ((a["shape"], a["colour"]) not in held)
    assert not torch.equal(train.images[:100], test_split.images[:100])


def test_marginals_match_uniform_draws_over_allowed_combinations(train, test_split):
    for data, split in ((train, "train"), (test_split, "test")):
        combos = itertools.product(SHAPES, SPEC_COLOURS, SPEC_BACKGROUNDS, SPEC_EXTENT, POSITIONS)
        allowed = [
            c for c in combos
            if SPEC_COLOURS[c[1]] != SPEC_BACKGROUNDS[c[2]] and not (split == "train" and c[:2] in HELD_OUT)
        ]  # fmt: skip
        n = len(data)
        for k, name in enumerate(("shape", "colour", "background", "size", "position")):
            values = data.attribute_values[name]
            counts = np.bincount(data.attributes[name].numpy(), minlength=len(values))
            for v, count in zip(values, counts):
                p = sum(c[k] == v for c in allowed) / len(allowed)
                assert abs(count / n - p) <= 5 * math.sqrt(p * (1 - p) / n), (split, name, v, count / n, p)


# -- captions -----------------------------------------------------------------------------------------
BACKGROUND_PHRASE = re.compile(r"\b(\w+) (?:background|picture|image)\b")


def read_caption(text: str) -> dict[str, str]:
    """An independent reader: the background word precedes background/picture/image; the remaining
    attribute words are the object's. Raises if an attribute is missing or said twice differently."""
    found = BACKGROUND_PHRASE.findall(text)
    assert len(found) == 1, text
    rest = BACKGROUND_PHRASE.sub(" ", text).replace(",", " ").split()
    out = {"background": found[0]}
    for name, values in (("shape", SHAPES), ("colour", SPEC_COLOURS), ("size", SPEC_EXTENT)):
        said = {w for w in rest if w in values}
        assert len(said) == 1, (text, name, said)
        out[name] = said.pop()
    row = {w for w in rest if w in ("top", "bottom")}
    col = {w for w in rest if w in ("left", "right")}
    middle = {w for w in rest if w in ("center", "middle")}
    assert len(row) <= 1 and len(col) <= 1 and bool(middle) == (not row and not col), text
    out["position"] = " ".join([*row, *col]) or "center"
    return out


def test_captions_state_every_attribute_and_only_true_ones(train, test_split):
    for data in (train, test_split):
        for i in range(len(data)):
            a = decode(data, i)
            caps = data.captions_of(i)
            assert len(set(caps)) >= 3
            for text in caps:
                assert text == text.lower() and not text.endswith(".") and text == text.strip(), text
                assert read_caption(text) == {k: a[k] for k in ATTRIBUTES}


def test_caption_templates_vary(train):
    starts = {c.split()[0] for c in train.captions}
    assert len(starts) >= 5  # attribute order varies, not only the words
    joined = " | ".join(train.captions)
    for phrase in ("in the center", "in the middle", "picture", "image", "background", "there is"):
        assert phrase in joined


# -- held-out phrasings (spec version 2) ----------------------------------------------------------------
ALL_COMBINATIONS = list(itertools.product(SHAPES, COLOURS, BACKGROUNDS, SIZES, POSITIONS))


def words(text: str) -> set[str]:
    return set(text.replace(",", " ").split())


def test_held_out_phrasings_never_occur_in_training_and_use_training_words():
    seen = {caption(t, *c) for c in ALL_COMBINATIONS for t in range(len(TEMPLATES))}
    held = {caption(t, *c, held_out=True) for c in ALL_COMBINATIONS for t in range(len(HELD_OUT_TEMPLATES))}
    assert len(HELD_OUT_TEMPLATES) >= 4 and not seen & held
    assert set().union(*map(words, held)) <= set().union(*map(words, seen))
    joined = " | ".join(held)
    for phrase in ("at the center", "in the middle", "in the center", " image", " picture", "painted"):
        assert phrase in joined  # the constructions the spec names, in new places


def test_test_images_carry_held_out_phrasings_that_state_their_attributes(train, test_split):
    assert HELD_OUT_PHRASINGS not in train.extra_caption_ids  # training sees training phrasings only
    train_captions = set(train.captions)
    held = test_split.extra_caption_ids[HELD_OUT_PHRASINGS]
    assert held.shape == (len(test_split), len(HELD_OUT_TEMPLATES)) and held.dtype == torch.int64
    assert test_split.info["phrasings"] == {"seen": len(TEMPLATES), "held_out": len(HELD_OUT_TEMPLATES)}
    for i in range(len(test_split)):
        texts = [test_split.captions[j] for j in held[i].tolist()]
        assert len(set(texts)) == len(texts) and not set(texts) & set(test_split.captions_of(i))
        assert not set(texts) & train_captions
        a = decode(test_split, i)
        for text in texts:
            assert read_caption(text) == {k: a[k] for k in ATTRIBUTES}, text


# -- errors, registration, cache ---------------------------------------------------------------------
def test_bad_input_is_a_usage_error(small):
    for split, r in (("val", 32), ("train", 48), ("train", 4), ("train", 0)):
        with pytest.raises(UsageError, match="split|power of two"):
            small.load(split, r)
    assert small.load("test", 8).images.shape[1:] == (8, 8, 3)
    for bad in ({"captions_per_image": 2}, {"train_size": 0}, {"test_size": -1}, {"seed": -1}):
        with pytest.raises(ValueError):
            ShapesConfig(**bad)


def test_builtin_registration():
    import t2i

    reg = t2i.registry("datasets")
    data = reg.create("shapes", {"train_size": 100, "test_size": 50}).load("train", 32)
    assert len(data) == 100 and data.resolution == 32
    assert reg.owner("shapes").startswith("t2i-core")
    with pytest.raises(t2i.ConfigError):
        reg.create("shapes", {"captions_per_image": 1})


def test_two_loaders_asking_at_once_render_the_split_once(tmp_path):
    cfg = ShapesConfig(train_size=200, test_size=20, seed=1, cache_dir=str(tmp_path))
    (a, b), builds = build_twice_at_once(lambda: Shapes(cfg).load("test", 32), Shapes, "_build")
    assert builds == 1 and torch.equal(a.images, b.images) and a.captions == b.captions


def test_cache_round_trip_and_corrupt_file_rebuilt(tmp_path):
    cfg = ShapesConfig(train_size=200, test_size=20, seed=1, cache_dir=str(tmp_path))
    fresh = Shapes(cfg).load("test", 32)
    (path,) = tmp_path.glob("*.npz")
    assert not list(tmp_path.glob("*.tmp"))
    cached = Shapes(cfg).load("test", 32)
    assert cached.info.get("cache") == str(path)
    assert torch.equal(cached.images, fresh.images) and cached.captions == fresh.captions
    assert torch.equal(cached.caption_ids, fresh.caption_ids)
    assert all(torch.equal(cached.attributes[k], fresh.attributes[k]) for k in fresh.attributes)
    assert torch.equal(cached.extra_caption_ids[HELD_OUT_PHRASINGS], fresh.extra_caption_ids[HELD_OUT_PHRASINGS])
    path.write_bytes(b"not a zip file")
    rebuilt = Shapes(cfg).load("test", 32)
    assert torch.equal(rebuilt.images, fresh.images) and "cache" not in rebuilt.info
    assert torch.equal(Shapes(cfg).load("test", 32).images, fresh.images)  # and written again
    Shapes(ShapesConfig(train_size=200, test_size=20, seed=2, cache_dir=str(tmp_path))).load("test", 32)
    Shapes(cfg).load("test", 64)
    assert len(list(tmp_path.glob("*.npz"))) == 3  # keyed by parameters and resolution
