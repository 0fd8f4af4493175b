"""The image cache (built once, reused, rebuilt when the source or a setting changes), augmentation on the
training device (flip, crop, jitter, seeded, resumable), and ``t2i data inspect`` / ``prepare``."""

from __future__ import annotations

import os
import time

import pytest
import torch
from PIL import Image

import t2i.data.image_cache
from data_fixtures import build_twice_at_once, data_config, make_cub, make_folder
from t2i.data.augment import BatchAugment, _windows_gather, _windows_nchw, load_resolution
from t2i.data.folder import Folder, FolderConfig
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i_test_helpers import run_cli, tiny_config


# -- the cache ----------------------------------------------------------------------------------------------------
def test_two_loaders_asking_at_once_build_the_cache_once(tmp_path):
    folder = make_folder(tmp_path, n=6, mode="jsonl")
    config = FolderConfig(root=str(folder), cache_dir=str(tmp_path / "cache"), quiet=True)
    (a, b), builds = build_twice_at_once(lambda: Folder(config).cache("train", 16), t2i.data.image_cache, "_build")
    assert builds == 1 and sorted([a.built, b.built]) == [False, True]
    assert torch.equal(a.images, b.images)


def test_cache_is_built_once_reused_and_rebuilt_on_change(tmp_path):
    folder = make_folder(tmp_path, n=8, mode="jsonl")
    cache_dir = tmp_path / "cache"
    open_ = lambda **kw: Folder(FolderConfig(root=str(folder), cache_dir=str(cache_dir), quiet=True, **kw))  # noqa: E731
    first = open_().cache("train", 16)
    assert first.built and first.images_path.is_file() and first.report_path.is_file()
    again = open_().cache("train", 16)
    assert not again.built and again.images_path == first.images_path
    assert torch.equal(open_().load("train", 16).images, again.images)
    assert not list(cache_dir.rglob("*.tmp"))  # written atomically: no temporary files left

    other = open_().cache("train", 24)  # another resolution: its own cache
    assert other.built and other.images_path != first.images_path
    stricter = open_(min_image_side=41).cache("train", 16)  # another preprocessing: its own cache, fewer images
    assert stricter.built and stricter.images_path != first.images_path and stricter.count < first.count

    # an edited image (new bytes, new mtime) rebuilds the cache in place, with the new pixels
    key = open_().load("train", 16).info["keys"][0]
    Image.new("RGB", (40, 40), (255, 0, 0)).save(folder / key)
    future = time.time() + 5
    os.utime(folder / key, (future, future))
    rebuilt = open_().cache("train", 16)
    assert rebuilt.built and rebuilt.images_path == first.images_path
    assert tuple(rebuilt.images[0, 8, 8].tolist()) == (255, 0, 0)
    assert open_().cache("train", 16, rebuild=True).built


def test_training_reads_the_memory_mapped_cache(tmp_path):
    folder = make_folder(tmp_path, n=8, mode="jsonl")
    trainer = Trainer(data_config("folder", folder), tmp_path / "run", quiet=True, tensorboard=False)
    storage = trainer.feed.images.untyped_storage()
    assert trainer.train_data.info["cache"].endswith(".u8")
    assert not storage.resizable()  # backed by the numpy memmap, not a copy in torch's allocator


# -- augmentation ----------------------------------------------------------------------------------------------------
def _batch(n: int = 6, size: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def _windows(augment: BatchAugment, images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 (B, R, R, 3) windows of all ``images``, as the trainer cuts them (CPU path)."""
    out = augment.pixels(images, torch.arange(len(images)), torch.Generator().manual_seed(seed))
    return out.permute(0, 2, 3, 1)


def test_flip_really_flips_and_only_sometimes():
    images = _batch(64, 8)
    out = _windows(BatchAugment(8, flip=True), images, 0)
    mirrored = [bool(torch.equal(o, i.flip(1))) for o, i in zip(out, images)]
    kept = [bool(torch.equal(o, i)) for o, i in zip(out, images)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48  # about half


def test_crop_windows_are_inside_the_image_and_seeded():
    images = _batch(16, 19)
    crop = BatchAugment(16, random_crop=True)
    out = _windows(crop, images, 3)
    assert out.shape == (16, 16, 16, 3)
    offsets = set()
    for o, image in zip(out, images):
        found = [(y, x) for y in range(4) for x in range(4) if torch.equal(image[y : y + 16, x : x + 16], o)]
        assert found, "each output is a window of its own image"
        offsets.add(found[0])
    assert len(offsets) > 3
    assert torch.equal(out, _windows(crop, images, 3))
    assert not torch.equal(out, _windows(crop, images, 4))
    assert load_resolution(64, True) == 76 and load_resolution(64, False) == 64


def test_cpu_windows_match_the_device_gather():
    images = _batch(12, 13)
    index = torch.tensor([3, 0, 7, 7, 11, 2])
    offsets = torch.randint(0, 4, (6, 2), generator=torch.Generator().manual_seed(5))
    mirrored = torch.arange(6) % 3 == 0
    gathered = _windows_gather(images[index], offsets, mirrored, 10).permute(0, 3, 1, 2)
    assert torch.equal(_windows_nchw(images, index, offsets, mirrored, 10), gathered)


def test_without_augmentation_the_batch_is_the_cache_and_draws_nothing():
    images = _batch(10, 8)
    index = torch.tensor([4, 1, 9])
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    plain = BatchAugment(8)
    for channels_last in (False, True):
        out = plain.pixels(images, index, g, channels_last=channels_last)
        assert torch.equal(out, images[index].permute(0, 3, 1, 2))
    assert torch.equal(g.get_state(), state)  # a run without augmentation keeps its random stream
    assert plain(images, index, g).dtype == torch.float32


def _stepwise_jitter(x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Brightness, then contrast about the mean luma, then saturation about the luma, in [0, 1]."""
    luma = lambda t: (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa: E731
    x = (x + 1) / 2 * b.view(-1, 1, 1, 1)
    mean = luma(x).mean((2, 3), keepdim=True)
    x = (x - mean) * c.view(-1, 1, 1, 1) + mean
    grey = luma(x)
    x = (x - grey) * s.view(-1, 1, 1, 1) + grey
    return (x * 2 - 1).clamp(-1, 1)


def test_jitter_is_brightness_contrast_saturation():
    x = torch.rand(5, 3, 6, 6) * 0.5 - 0.25  # mid-range: no clamping, so the composed map is exact
    jitter = BatchAugment(6, jitter=0.3)
    out = jitter.colour(x.clone(), torch.Generator().manual_seed(2))
    b, c, s = (1 + 0.3 * (2 * torch.rand(5, 3, generator=torch.Generator().manual_seed(2)) - 1)).unbind(1)
    assert torch.allclose(out, _stepwise_jitter(x, b, c, s), atol=1e-5)
    assert not torch.allclose(out, x)
    grey = torch.full((2, 3, 4, 4), 0.2)
    g = jitter.colour(grey.clone(), torch.Generator().manual_seed(0))
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])  # grey stays grey (no hue)
    assert torch.equal(BatchAugment(6).colour(x.clone(), torch.Generator()), x)


def test_shapes_refuses_flip_and_crop():
    for option in ({"flip": True}, {"random_crop": True}):
        with pytest.raises(UsageError, match="shapes"):
            Trainer(tiny_config(data=option), "unused", quiet=True, tensorboard=False)
    with pytest.raises(UsageError, match=r"data\.jitter"):
        tiny_config(data={"jitter": 1.5})


def test_augmented_training_resumes_bit_identical(tmp_path):
    folder = make_folder(tmp_path, n=12, mode="jsonl")
    cfg = lambda: data_config("folder", folder, steps=4, random_crop=True, flip=True, jitter=0.2)  # noqa: E731
    straight = Trainer(cfg(), tmp_path / "straight", quiet=True, tensorboard=False)
    straight.fit()
    assert tuple(straight.train_data.images.shape[1:]) == (38, 38, 3)  # cached at ceil(32 * 76 / 64)
    half = cfg()
    half.train.steps = 2
    Trainer(half, tmp_path / "resumed", quiet=True, tensorboard=False).fit()
    resumed = Trainer(cfg(), tmp_path / "resumed", resume=True, quiet=True, tensorboard=False)
    resumed.fit()
    for a, b in zip(straight.G.state_dict().values(), resumed.G.state_dict().values()):
        assert torch.equal(a, b)


# -- the CLI ------------------------------------------------------------------------------------------------------------
def test_cli_inspect_and_prepare(tmp_path, monkeypatch, capsys):
    from t2i.cli import main

    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_folder(tmp_path, n=8, mode="jsonl")
    (folder / "dogs" / "img_002.jpg").write_bytes(b"broken")
    grid = tmp_path / "grid.png"
    assert main(["data", "inspect", f"folder:{folder}", "-r", "16", "--grid", str(grid)]) == 0
    shown = capsys.readouterr().out
    assert "unreadable image" in shown and "caption length" in shown and "img_002.jpg" in shown
    assert Image.open(grid).size[0] >= 160

    birds = make_cub(tmp_path)
    assert main(["data", "prepare", f"cub:{birds}", "-r", "16", "--random-crop"]) == 0
    cached = sorted(p.name.split("-")[2] for p in (tmp_path / "cache" / "images").glob("cub-*.u8"))
    assert cached == ["16px", "16px", "19px"]  # train and test at 16 px, train at ceil(16 * 76 / 64)
    assert (tmp_path / "cache" / "embeddings" / "cub-char-CNN-RNN.npz").is_file()


def test_cli_missing_path_is_exit_2_with_one_line(tmp_path):
    missing = run_cli("data", "inspect", f"cub:{tmp_path / 'nowhere'}")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"t2i: error: cub: data root {tmp_path / 'nowhere'} does not exist or is not a folder"]
