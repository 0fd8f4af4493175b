"""Bad input never crashes a run: bad items are skipped and reported; structural problems refuse to start
with one clear line."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import data_config, make_coco, make_cub, py2_pickle, save_picture
from t2i.data.folder import Folder, FolderConfig
from t2i.data.image_cache import BadImage, decode_image
from t2i.data.source import Problems, read_caption_file
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels: a decompression bomb's signature."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def _jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _corpus(root: Path) -> Path:
    """train/: 4 good images and every kind of bad input; test/: 2 good images."""
    train = root / "train"
    for i in range(4):
        save_picture(train / f"good_{i}.jpg", i).with_suffix(".txt").write_text(f"a good picture {i}\n")
    for i in range(2):
        save_picture(root / "test" / f"good_{i}.jpg", 50 + i).with_suffix(".txt").write_text(f"a test picture {i}\n")

    def caption(name: str, text: str | bytes = "a caption\n") -> None:
        path = (train / name).with_suffix(".txt")
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    (train / "corrupt.jpg").write_bytes(os.urandom(2000))
    jpeg = _jpeg_bytes(7)
    (train / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(8).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    (train / "truncated_png.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.fromarray(np.full((20, 20), 32896, np.uint16)).save(train / "gray16.png")  # 16-bit: 128 * 257
    Image.new("RGB", (20, 20), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(train / "palette.png")
    transparent = Image.new("P", (20, 20), 0)
    transparent.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    transparent.save(train / "palette_alpha.png", transparency=0)
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(train / "cmyk.jpg", quality=95)
    Image.new("L", (20, 20), 90).save(train / "gray.jpg", quality=95)
    Image.new("RGBA", (20, 20), (0, 0, 255, 0)).save(train / "rgba.png")
    Image.new("RGB", (1, 1), (5, 5, 5)).save(train / "tiny.png")
    _png_claiming(train / "bomb.png", 30000, 30000)  # over 2x Pillow's limit: it raises
    _png_claiming(train / "bomb_warning.png", 10000, 10000)  # between 1x and 2x: Pillow only warns
    for name in ("corrupt", "truncated", "truncated_png", "gray16", "palette", "palette_alpha", "cmyk", "gray", "rgba", "tiny", "bomb",
                 "bomb_warning"):
        caption(name)
    save_picture(train / "no_caption.jpg", 20)
    save_picture(train / "empty_caption.jpg", 21)
    caption("empty_caption", "\n  \n")
    save_picture(train / "latin1.jpg", 22)
    caption("latin1", "un caf\xe9 au lait\n".encode("latin1"))
    save_picture(train / "long.jpg", 23)
    caption("long", " ".join(["word"] * 5000) + "\n")
    save_picture(train / "twice.jpg", 24)
    save_picture(train / "twice.png", 25)
    caption("twice")
    (train / "loop").symlink_to(train, target_is_directory=True)  # a folder that contains itself
    (train / "ring_a.jpg").symlink_to(train / "ring_b.jpg")
    (train / "ring_b.jpg").symlink_to(train / "ring_a.jpg")
    return root


EXPECTED_KINDS = {
    "unreadable image": 3, "image too small": 1, "decompression bomb": 2, "missing caption file": 1,
    "empty caption file": 1, "non-UTF-8 caption": 1, "caption truncated": 1, "duplicate key": 1, "symlink loop": 3,
}


def test_bad_items_are_skipped_reported_and_training_runs(tmp_path):
    root = _corpus(tmp_path / "corpus")
    data = Folder(FolderConfig(root=str(root), quiet=True))
    train = data.load("train", 16)
    keys = set(train.info["keys"])
    good = {f"train/good_{i}" for i in range(4)}
    kept_formats = {f"train/{n}" for n in ("gray16", "palette", "palette_alpha", "cmyk", "gray", "rgba", "latin1", "long")}
    assert keys == good | kept_formats | {"train/twice"}
    counts = data.problems("train", 16).counts()
    for kind, n in EXPECTED_KINDS.items():
        assert counts.get(kind, 0) >= n, (kind, counts)
    assert train.info["skipped"] == 6  # corrupt, truncated x2, tiny, bomb x2
    # the report beside the cache lists every problem, with where and why
    report = json.loads(Path(train.info["report"]).read_text())
    listed = {(p["kind"], Path(p["where"]).name) for p in report["image_problems"] + report["index_problems"]}
    assert {("unreadable image", "corrupt.jpg"), ("decompression bomb", "bomb.png"), ("image too small", "tiny.png"),
            ("missing caption file", "no_caption.txt"), ("symlink loop", "loop")} <= listed
    latin1 = train.captions_of(train.info["keys"].index("train/latin1"))
    assert latin1 == ["un caf\ufffd au lait"]
    long = train.captions_of(train.info["keys"].index("train/long"))
    assert len(long[0].split()) == 100
    # and a run on it trains without a hitch
    trainer = Trainer(data_config("folder", root, batch_size=4, steps=2), tmp_path / "run", quiet=True, tensorboard=False)
    assert trainer.fit().status == "finished" and len(trainer.train_data) == len(keys)


def test_image_modes_decode_to_the_right_rgb(tmp_path):
    root = _corpus(tmp_path / "corpus") / "train"
    pixel = lambda name: tuple(int(v) for v in decode_image(root / name, None, 8)[4, 4])  # noqa: E731
    assert pixel("gray16.png") == (128, 128, 128)  # 16 bits scaled, not clipped
    assert pixel("palette.png") == (10, 200, 30)
    assert pixel("palette_alpha.png") == (255, 255, 255)  # transparent: composited on white
    assert pixel("rgba.png") == (255, 255, 255)
    r, g, b = pixel("cmyk.jpg")
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    assert all(abs(v - 90) <= 3 for v in pixel("gray.jpg"))
    for name, kind in (("tiny.png", "image too small"), ("bomb.png", "decompression bomb"),
                       ("corrupt.jpg", "unreadable image"), ("truncated.jpg", "unreadable image")):
        with pytest.raises(BadImage) as exc:
            decode_image(root / name, None, 8, min_side=8)
        assert exc.value.kind == kind


def test_caption_file_policies(tmp_path):
    problems = Problems()
    (tmp_path / "bom.txt").write_bytes("\ufeffhello   world\n\n second \n".encode("utf-8"))
    assert read_caption_file(tmp_path / "bom.txt", problems, 100) == ["hello world", "second"]
    assert read_caption_file(tmp_path / "absent.txt", problems, 100) == []
    (tmp_path / "long.txt").write_text("a b c d e f\n")
    assert read_caption_file(tmp_path / "long.txt", problems, 3) == ["a b c"]
    assert problems.counts() == {"missing caption file": 1, "caption truncated": 1}


def test_manifest_paths_that_escape_the_root_are_skipped(tmp_path):
    root = tmp_path / "m"
    for i in range(3):
        save_picture(root / "img" / f"{i}.jpg", i)
    lines = [
        {"image": "img/0.jpg", "caption": "zero", "split": "train"},
        {"image": "../../etc/passwd", "caption": "sneaky", "split": "train"},
        {"image": "/etc/passwd", "caption": "absolute", "split": "train"},
        {"image": "img/../../outside.jpg", "caption": "sneaky too", "split": "train"},
        {"image": "img/0.jpg", "caption": ["zero again", "zero"], "split": "train"},
        {"image": "img/1.jpg", "caption": "one", "split": "test"},
        {"image": "img/1.jpg", "caption": "one more", "split": "train"},
        {"image": "img/2.jpg", "caption": "two", "split": "validation"},
        {"image": "img/2.jpg", "caption": 3},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json at all\n"
    (root / "captions.jsonl").write_text(text)
    data = Folder(FolderConfig(root=str(root), quiet=True))
    train, test = data.index("train"), data.index("test")
    assert [(i.key, i.captions) for i in train.items] == [("img/0.jpg", ["zero", "zero again"])]
    assert [(i.key, i.captions) for i in test.items] == [("img/1.jpg", ["one", "one more"])]
    counts = train.problems.counts()
    assert counts["path escapes the data root"] == 3
    assert counts["duplicate key"] == 2 and counts["unknown split"] == 1 and counts["bad manifest line"] == 2


def test_symlinks_that_leave_the_root_are_skipped_and_reported(tmp_path):
    outside = tmp_path / "elsewhere"
    secret = save_picture(outside / "secret.jpg", 90)
    secret.with_suffix(".txt").write_text("a picture outside the data root\n")
    root = tmp_path / "linked"
    for i in range(3):
        save_picture(root / f"good_{i}.jpg", i).with_suffix(".txt").write_text(f"picture {i}\n")
    (root / "inner_link.jpg").symlink_to(root / "good_0.jpg")  # a link inside the root is followed
    (root / "inner_link.txt").write_text("the same picture again\n")
    (root / "stolen.jpg").symlink_to(secret)  # a link to a file outside the root
    (root / "stolen.txt").write_text("a caption for it\n")
    save_picture(root / "borrowed_caption.jpg", 5)
    (root / "borrowed_caption.txt").symlink_to(secret.with_suffix(".txt"))  # a caption file outside
    (root / "far").symlink_to(outside, target_is_directory=True)  # a folder outside
    data = Folder(FolderConfig(root=str(root), quiet=True, manifest="sidecar", test_fraction=0.0))
    keys = {item.key for item in data.index("train").items}
    assert keys == {"good_0", "good_1", "good_2", "inner_link"}
    problems = [p for p in data.index("train").problems if p.kind == "link leaves the data root"]
    assert sorted(Path(p.where).name for p in problems) == ["borrowed_caption.txt", "far", "stolen.jpg"]
    assert all(str(outside.resolve()) in p.detail for p in problems)
    assert data.load("train", 16).info["skipped"] == 0  # nothing outside was opened as an image

    (root / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in [
        {"image": "good_0.jpg", "caption": "zero"}, {"image": "stolen.jpg", "caption": "sneaky"},
        {"image": "far/secret.jpg", "caption": "sneaky too"}]) + "\n")
    listed = Folder(FolderConfig(root=str(root), quiet=True, test_fraction=0.0)).index("train")
    assert [item.key for item in listed.items] == ["good_0.jpg"]
    assert listed.problems.counts()["link leaves the data root"] == 2


def test_structural_problems_refuse_to_start(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no captioned images"):
        Folder(FolderConfig(root=str(empty), quiet=True)).load("train", 16)
    with pytest.raises(UsageError, match="does not exist"):
        Folder(FolderConfig(root=str(tmp_path / "nowhere"), quiet=True))

    manifest = tmp_path / "manifest"
    save_picture(manifest / "a.jpg", 1)
    (manifest / "captions.csv").write_text("image,caption\na.jpg,an image\nb.jpg,a missing image\n")
    with pytest.raises(UsageError, match=r"captions\.csv names 1 image\(s\) that do not exist \(first: .*b\.jpg\)"):
        Folder(FolderConfig(root=str(manifest), test_fraction=0.0, quiet=True)).load("train", 16)

    birds = make_cub(tmp_path, embeddings=False)
    names = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796101", "001.Black_footed_Albatross/Nope_0001_1"]
    (birds / "test" / "filenames.pickle").write_bytes(py2_pickle(names))
    (birds / "text" / f"{names[1]}.txt").write_text("a caption\n")
    with pytest.raises(UsageError, match=r"test/filenames\.pickle names 1 image\(s\) that do not exist") as exc:
        Trainer(data_config("cub", birds), tmp_path / "run", quiet=True, tensorboard=False)
    assert "\n" not in str(exc.value)

    coco = make_coco(tmp_path, n_train=4, n_test=2)
    next(iter((coco / "val2014").iterdir())).unlink()
    with pytest.raises(UsageError, match=r"captions_val2014\.json names 1 image\(s\) that do not exist"):
        from t2i.data.coco import Coco, CocoConfig

        Coco(CocoConfig(root=str(coco), quiet=True)).load("test", 16)

    broken = tmp_path / "broken"
    for i in range(2):
        (broken / f"{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (broken / f"{i}.jpg").write_bytes(b"garbage")
        (broken / f"{i}.txt").write_text("a caption\n")
    with pytest.raises(UsageError, match="none of the 1 images could be decoded"):
        Folder(FolderConfig(root=str(broken), quiet=True)).load("train", 16)


def test_a_missing_split_file_or_caption_folder_is_one_line(tmp_path):
    birds = make_cub(tmp_path, embeddings=False)
    (birds / "train" / "filenames.pickle").unlink()
    with pytest.raises(UsageError, match=r"train/filenames\.pickle not found"):
        Trainer(data_config("cub", birds), tmp_path / "run", quiet=True, tensorboard=False)
    (birds / "text").rename(birds / "captions")
    with pytest.raises(UsageError, match=r"no caption folder text/ or text_c10/"):
        Trainer(data_config("cub", birds), tmp_path / "run", quiet=True, tensorboard=False)
