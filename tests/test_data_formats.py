"""The data sets read from disk, each in its real layout (miniature fixtures written by the tests):
splits, captions, crops, the restricted unpickler, and a few training steps on each."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import (
    BIRD_CLASSES, captions_for, data_config, make_coco, make_cub, make_folder, make_oxford, py2_pickle,
)
from t2i.data.coco import Coco, CocoConfig
from t2i.data.folder import Folder, FolderConfig
from t2i.data.safe_pickle import load_pickle, loads_pickle
from t2i.data.stackgan import Cub, CubConfig, Oxford, OxfordConfig
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.text.precomputed import read_embeddings


def _train(cfg, run_dir: Path) -> Trainer:
    trainer = Trainer(cfg, run_dir, quiet=True, tensorboard=False)
    result = trainer.fit()
    assert result.status == "finished" and result.step == cfg.train.steps
    return trainer


# -- CUB -------------------------------------------------------------------------------------------------------
def test_cub_layout_splits_captions_and_training(tmp_path):
    birds = make_cub(tmp_path)
    data = Cub(CubConfig(root=str(birds), quiet=True))
    train, test = data.load("train", 16), data.load("test", 16)
    assert (len(train), len(test)) == (9, 3)
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape) == (9, 16, 16, 3)
    assert train.caption_ids.shape == (9, 10) and bool((train.caption_counts == 10).all())
    first = train.info["keys"][0]
    assert first == "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796101"
    assert train.captions_of(0) == captions_for(1)
    # the published splits are class-disjoint: no test class among the training images
    classes = lambda d: {k.split("/")[0] for k in d.info["keys"]}  # noqa: E731
    assert classes(test) == {BIRD_CLASSES[-1]} and not classes(train) & classes(test)
    # captions_per_image keeps the first K lines
    five = Cub(CubConfig(root=str(birds), captions_per_image=5, quiet=True)).load("train", 16)
    assert five.caption_ids.shape == (9, 5) and five.captions_of(0) == captions_for(1)[:5]
    _train(data_config("cub", birds, steps=3, random_crop=True, flip=True), tmp_path / "run")


def test_cub_bird_crop_follows_the_bounding_box(tmp_path):
    birds = make_cub(tmp_path, per_class=1)
    key = "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796101"
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 2] = 255  # blue sky
    image[40:60, 150:170] = (255, 0, 0)  # a red bird
    Image.fromarray(image).save(birds / "CUB_200_2011" / "images" / f"{key}.jpg", quality=95)
    (birds / "CUB_200_2011" / "bounding_boxes.txt").write_text(
        "1 150.0 40.0 20.0 20.0\n2 0 0 10 10\n3 0 0 10 10\n4 0 0 10 10\n")
    cropped = Cub(CubConfig(root=str(birds), quiet=True)).load("train", 16)
    whole = Cub(CubConfig(root=str(birds), bbox_crop=False, quiet=True)).load("train", 16)
    red = lambda img: float((img[..., 0].float() > 200).float().mean())  # noqa: E731
    # the crop is the 30x30 square around the bird's centre (1.5 x max(w, h)): the bird fills 4/9 of it
    assert 0.3 < red(cropped.images[0]) < 0.6
    assert red(whole.images[0]) < 0.1  # the centred 100x100 square of the photo does not even hold it
    assert cropped.info["cache"] != whole.info["cache"]  # another preprocessing, another cache


def test_cub_root_may_be_the_cub_folder_and_text_c10_works(tmp_path):
    birds = make_cub(tmp_path, embeddings=False)
    (birds / "text").rename(birds / "text_c10")
    data = Cub(CubConfig(root=str(birds / "CUB_200_2011"), quiet=True))
    assert len(data.load("test", 8)) == 3


def test_cub_char_cnn_rnn_embeddings_feed_the_precomputed_encoder(tmp_path):
    birds = make_cub(tmp_path)
    data = Cub(CubConfig(root=str(birds), quiet=True))
    table = data.embeddings("train")
    assert table.shape == (9, 10, 1024) and table.dtype == np.float32
    out = data.export_embeddings(tmp_path / "emb.npz")
    captions, emb = read_embeddings(out)
    assert len(captions) == 12 * 10 and emb.shape == (120, 1024)
    assert torch.allclose(emb[captions.index(captions_for(1)[3])], torch.from_numpy(table[0, 3]))
    cfg = data_config("cub", birds, steps=2)
    cfg.text_encoder.name, cfg.text_encoder.options = "precomputed", {"path": str(out)}
    _train(cfg, tmp_path / "run")


# -- Oxford flowers -----------------------------------------------------------------------------------------------
def test_oxford_layout(tmp_path):
    flowers = make_oxford(tmp_path)
    data = Oxford(OxfordConfig(root=str(flowers), quiet=True))
    train, test = data.load("train", 16), data.load("test", 16)
    assert (len(train), len(test)) == (9, 3)
    assert train.info["keys"][0] == "image_00001"
    assert train.captions_of(0)[0] == "this flower 1 has petals, caption 0"
    assert test.info["keys"] == ["image_00010", "image_00011", "image_00012"]
    _train(data_config("oxford", flowers, steps=2, flip=True, jitter=0.2), tmp_path / "run")


# -- COCO -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("year", ["2014", "2017"])
def test_coco_layout(tmp_path, year):
    coco = make_coco(tmp_path, year=year)
    data = Coco(CocoConfig(root=str(coco), quiet=True))
    assert data.year == year
    train, test = data.load("train", 16), data.load("test", 16)
    assert (len(train), len(test)) == (10, 4)  # test is COCO's val set
    assert train.caption_ids.shape == (10, 5)
    assert train.captions_of(0)[0] == "A photo 9 of a kitchen, view 0."
    three = Coco(CocoConfig(root=str(coco), captions_per_image=3, max_images=4, quiet=True)).load("train", 16)
    assert three.caption_ids.shape == (4, 3)
    if year == "2014":
        _train(data_config("coco", coco, steps=2), tmp_path / "run")


# -- folders --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sidecar", "jsonl", "csv"])
def test_folder_layouts(tmp_path, mode):
    folder = make_folder(tmp_path, n=10, mode=mode)
    data = Folder(FolderConfig(root=str(folder), quiet=True))
    train, test = data.load("train", 16), data.load("test", 16)
    assert len(train) + len(test) == 10
    if mode != "sidecar":  # the manifest's split field decides: images 0..2 are test
        assert sorted(test.info["keys"]) == ["cats/img_001.jpg", "dogs/img_000.png", "dogs/img_002.jpg"]
    for d in (train, test):
        for i, key in enumerate(d.info["keys"]):
            n = int(Path(key).stem.split("_")[1])
            assert d.captions_of(i) == [f"a picture of animal {n}", f"animal {n} again"]
    if mode == "jsonl":
        _train(data_config("folder", folder, steps=2), tmp_path / "run")


def _test_keys(folder: Path, **options) -> set[str]:
    return {item.key for item in Folder(FolderConfig(root=str(folder), quiet=True, **options)).index("test").items}


def test_folder_hashed_split_is_stable_and_seeded(tmp_path):
    folder = make_folder(tmp_path, n=30)
    before = _test_keys(folder, test_fraction=0.3)
    assert 3 <= len(before) <= 16
    assert _test_keys(folder, test_fraction=0.3, split_seed=1) != before
    new = folder / "cats" / "img_999.jpg"
    shutil.copy(folder / "cats" / "img_001.jpg", new)
    new.with_suffix(".txt").write_text("a new cat\n")
    assert before <= _test_keys(folder, test_fraction=0.3)  # adding an image does not move the others


def test_folder_train_and_test_subfolders_decide(tmp_path):
    root = tmp_path / "split"
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            path = root / split / f"x{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(path)
            path.with_suffix(".txt").write_text(f"{split} image {i}\n")
    data = Folder(FolderConfig(root=str(root), quiet=True))
    assert [i.key for i in data.index("test").items] == ["test/x0", "test/x1"]
    assert len(data.index("train").items) == 4


# -- the restricted unpickler -------------------------------------------------------------------------------------------
def test_safe_pickle_reads_python2_and_python3_data(tmp_path):
    names = ["002.Laysan_Albatross/Laysan_Albatross_0002_1027", "caf\xe9"]
    assert loads_pickle(py2_pickle(names)) == names  # Python 2 byte strings arrive as latin-1 str
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 4), np.float64)]
    for blob in (py2_pickle(arrays), pickle.dumps(arrays, protocol=2), pickle.dumps(arrays, protocol=5)):
        back = loads_pickle(blob)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, back))
    plain = {"a": (1, 2.5, None, True), "b": b"bytes", "c": {1, 2}, "d": [frozenset({3})]}
    for protocol in (2, 4):
        assert loads_pickle(pickle.dumps(plain, protocol=protocol)) == plain


class _Exploit:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalExploit:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_safe_pickle_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (_Exploit(marker), _EvalExploit(), [np.arange(2), _Exploit(marker)], np.array([_Exploit(marker)], dtype=object)):
        path = tmp_path / "filenames.pickle"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(UsageError, match=r"filenames\.pickle: refused to unpickle it: it asks for (posix|__builtin__|builtins)\.") as exc:
            load_pickle(path)
        assert "\n" not in str(exc.value)
    assert not marker.exists()
    (tmp_path / "junk.pickle").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UsageError, match="not a readable pickle"):
        load_pickle(tmp_path / "junk.pickle")


def test_malicious_split_pickle_stops_the_run_with_one_line(tmp_path):
    birds = make_cub(tmp_path, embeddings=False)
    marker = tmp_path / "pwned"
    (birds / "train" / "filenames.pickle").write_bytes(pickle.dumps([_Exploit(marker)], protocol=2))
    with pytest.raises(UsageError, match=r"train/filenames\.pickle: refused to unpickle"):
        Trainer(data_config("cub", birds), tmp_path / "run", quiet=True, tensorboard=False)
    assert not marker.exists()


def test_precomputed_encoder_reads_pickles_safely(tmp_path):
    good = tmp_path / "emb.pickle"
    good.write_bytes(pickle.dumps({"captions": ["a", "b"], "embeddings": np.eye(2, 3, dtype=np.float32)}, protocol=2))
    captions, emb = read_embeddings(good)
    assert captions == ["a", "b"] and emb.shape == (2, 3)
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps({"captions": ["a"], "embeddings": _Exploit(tmp_path / "pwned")}, protocol=2))
    with pytest.raises(UsageError, match="refused to unpickle"):
        read_embeddings(bad)
    assert not (tmp_path / "pwned").exists()


def test_registered_and_described():
    from t2i.plugins import registry

    names = registry("datasets").names()
    assert {"folder", "cub", "oxford", "coco", "shapes"} <= set(names)
    fields = {row[0] for row in registry("datasets").describe("cub")["fields"]}
    assert {"root", "bbox_crop", "captions_per_image", "max_images", "cache_dir"} <= fields
    assert json.dumps(registry("datasets").describe("folder"), default=str)


@pytest.mark.parametrize("name", ["folder", "cub", "oxford", "coco"])
def test_disk_datasets_conform(tmp_path, name):
    """The conformance kit's data set checks, on each layout's miniature (they need a root to load)."""
    import t2i.testing as kit

    make = {"folder": lambda: make_folder(tmp_path, mode="jsonl"), "cub": lambda: make_cub(tmp_path, embeddings=False),
            "oxford": lambda: make_oxford(tmp_path), "coco": lambda: make_coco(tmp_path)}[name]
    kit.check_dataset(name, {"root": str(make()), "quiet": True, "max_images": 4}, resolution=16)
