"""Sample grids: pixel conversion, layout, caption bands, wrapping, atomic PNG writes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.engine.grid import caption_grid, image_grid, save_png, to_uint8

GUTTER = 2  # promised by the spec: 2 white pixels between cells


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _band_height(grid: Image.Image, rows: int, cell: int) -> int:
    """The caption band height implied by the grid's height (rows of cell + band, gutters between)."""
    extra = grid.height - rows * cell - (rows - 1) * GUTTER
    assert extra % rows == 0
    return extra // rows


def test_to_uint8_endpoints_levels_and_clamping():
    x = torch.tensor([-1.0, 1.0, 0.0, -3.0, 7.0, float("nan")]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 255, 128, 0, 255, 128]

    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1  # every uint8 level survives the trip
    out = to_uint8(levels.view(1, 1, 1, 256).expand(1, 3, 1, 256).contiguous())
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 256, 3)
    assert out[0, 0, :, 1].tolist() == list(range(256))


def test_to_uint8_moves_channels_last():
    x = torch.stack([torch.full((2, 5), v) for v in (-1.0, 0.0, 1.0)]).unsqueeze(0)  # (1, 3, 2, 5)
    out = to_uint8(x)
    assert out.shape == (1, 2, 5, 3)
    assert out[0, 1, 4].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("size", "columns", "scale", "min_cell", "cell"),
    [(32, 3, 1, 64, 64), (32, 2, 2, 64, 128), (48, 4, 1, 64, 96), (100, 3, 1, 64, 100), (16, 1, 1, 0, 16)],
)
def test_caption_grid_layout(size, columns, scale, min_cell, cell):
    rows = 2
    images = _images(rows * columns, size)
    grid = caption_grid(images, ["a bird", "a flower"], columns=columns, scale=scale, min_cell=min_cell)
    assert grid.mode == "RGB"
    assert grid.width == columns * cell + (columns - 1) * GUTTER
    band = _band_height(grid, rows, cell)
    assert band >= 10

    pixels = np.asarray(grid)
    factor = cell // size
    cells = to_uint8(images).numpy().repeat(factor, axis=1).repeat(factor, axis=2)
    for i, expected in enumerate(cells):
        top, left = (i // columns) * (cell + band + GUTTER), (i % columns) * (cell + GUTTER)
        assert np.array_equal(pixels[top : top + cell, left : left + cell], expected)
    for col in range(1, columns):  # vertical gutters between cells are white
        assert (pixels[:cell, col * (cell + GUTTER) - GUTTER : col * (cell + GUTTER)] == 255).all()
    assert (pixels[cell + band : cell + band + GUTTER] == 255).all()  # gutter under the first band


def test_caption_bands_hold_dark_text_on_white():
    grid = caption_grid(_images(4), ["a small red bird", "yellow petals"], columns=2)
    band = _band_height(grid, 2, 64)
    pixels = np.asarray(grid).astype(int)
    for row in range(2):
        top = row * (64 + band + GUTTER) + 64
        area = pixels[top : top + band]
        assert area.min() < 100  # text is drawn
        assert (area[..., 0] == area[..., 1]).all() and (area[..., 1] == area[..., 2]).all()  # only grey ink
        assert (area == 255).all(axis=-1).mean() > 0.7  # and the rest is white paper
        assert (area[:2] == 255).all() and (area[-2:] == 255).all()  # margins above and below the text


def test_long_caption_wraps_to_a_taller_band():
    short = caption_grid(_images(2), ["a bird"], columns=2)
    caption = "a small bird with a bright red crown, a white belly and a long tail " * 3
    long = caption_grid(_images(2), [caption], columns=2)
    assert long.width == short.width
    assert long.height > short.height + 10  # at least one more line
    unbroken = caption_grid(_images(2), ["x" * 200], columns=2)  # one word wider than the row still fits
    assert unbroken.width == short.width and unbroken.height > short.height


@pytest.mark.parametrize(("n", "captions", "columns"), [(5, 2, 3), (7, 2, 3), (6, 0, 3), (6, 2, 0)])
def test_caption_grid_rejects_mismatched_counts(n, captions, columns):
    with pytest.raises(ValueError, match="captions"):
        caption_grid(_images(n), ["c"] * captions, columns=columns)


def test_caption_grid_accepts_uint8_and_numpy():
    images = _images(4)
    captions = ["one", "two"]
    expected = caption_grid(images, captions, columns=2).tobytes()
    assert caption_grid(to_uint8(images), captions, columns=2).tobytes() == expected
    assert caption_grid(to_uint8(images).numpy(), captions, columns=2).tobytes() == expected
    assert caption_grid(images.numpy(), captions, columns=2).tobytes() == expected


def test_image_grid_with_and_without_title():
    plain = image_grid(_images(5), columns=3)
    assert plain.size == (3 * 64 + 2 * GUTTER, 2 * 64 + GUTTER)
    assert (np.asarray(plain)[66:, 132:] == 255).all()  # the missing sixth cell is blank

    titled = image_grid(_images(5), columns=3, title="a bird with a yellow breast and a short pointed beak")
    assert titled.width == plain.width and titled.height > plain.height
    band = titled.height - plain.height
    assert np.asarray(titled)[: band - GUTTER].min() < 100  # the title is drawn above the cells
    assert np.array_equal(np.asarray(titled)[band:], np.asarray(plain))


def test_save_png_roundtrip_is_atomic_and_makes_parents(tmp_path):
    grid = caption_grid(_images(4), ["a", "b"], columns=2)
    target = tmp_path / "run" / "samples" / "step_000100.png"
    assert save_png(grid, target) == target
    with Image.open(target) as read:
        assert read.format == "PNG"
        assert np.array_equal(np.asarray(read.convert("RGB")), np.asarray(grid))
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left behind

    save_png(image_grid(_images(1), columns=1), str(target))  # overwrites in place
    with Image.open(target) as read:
        assert read.size == (64, 64)
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_save_png_failure_keeps_the_old_file_and_no_temp(tmp_path):
    target = save_png(image_grid(_images(1), columns=1), tmp_path / "grid.png")
    before = target.read_bytes()
    with pytest.raises(OSError):
        save_png(Image.new("CMYK", (4, 4)), target)  # PNG cannot hold CMYK
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_grids_and_files_are_deterministic(tmp_path):
    captions = ["a small bird with a red head and a white belly perched on a branch", "a flower"]
    first = caption_grid(_images(6), captions, columns=3)
    second = caption_grid(_images(6), captions, columns=3)
    assert first.tobytes() == second.tobytes()
    a, b = save_png(first, tmp_path / "a.png"), save_png(second, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
