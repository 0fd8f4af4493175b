"""Data the way the Hugging Face Hub stores it: the ``folder`` data set reading imagefolder metadata
(``metadata.jsonl`` / ``metadata.csv``), and ``--data hf:PATH`` reading ``datasets`` folders
(``save_to_disk``) and imagefolders through the ``datasets`` library. Tiny images written by the tests."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from data_fixtures import data_config, picture, save_picture
from t2i.cli import main
from t2i.data.folder import Folder, FolderConfig
from t2i.data.hf import Hf, HfConfig
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError


def _rows(n: int, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(file name, captions) of ``n`` images in two sub-folders; odd images have two captions."""
    return [(f"{prefix}{'cats' if i % 2 else 'dogs'}/img_{i:02d}.png",
             [f"animal {i}"] + ([f"animal {i} again"] if i % 2 else [])) for i in range(n)]


def _hub(folder: Path, rows: list[tuple[str, list[str]]], fmt: str = "jsonl", column: str = "text",
         seed: int = 0, lists: bool = False) -> Path:
    """Images and a Hub ``metadata.<fmt>`` in ``folder``: a JSON line per image (one caption as a string, several
    as a list; always a list with ``lists``, as ``datasets`` wants a column of one type), or a CSV row per caption."""
    for i, (name, _) in enumerate(rows):
        save_picture(folder / name, seed + i, 24 + i, 20)
    if fmt == "jsonl":
        lines = [json.dumps({"file_name": name, column: caps if lists or len(caps) > 1 else caps[0]}) for name, caps in rows]
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    else:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["file_name", column])
        writer.writerows([name, caption] for name, caps in rows for caption in caps)
        (folder / "metadata.csv").write_text(out.getvalue())
    return folder


def _folder(root: Path, **options) -> Folder:
    return Folder(FolderConfig(root=str(root), quiet=True, cache_dir=str(root.parent / "cache"), **options))


def _hf(root: Path, **options) -> Hf:
    return Hf(HfConfig(root=str(root), quiet=True, cache_dir=str(root.parent / "cache"), **options))


def _captions_by_key(data) -> dict[str, list[str]]:
    return {key: data.captions_of(i) for i, key in enumerate(data.info["keys"])}


# -- folder: Hub metadata ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_folder_reads_hub_metadata_with_subfolders_and_several_captions(tmp_path, fmt):
    rows = _rows(8)
    data = _folder(_hub(tmp_path / "hub", rows, fmt), test_fraction=0.25)
    train, test = data.load("train", 16), data.load("test", 16)
    assert len(train) + len(test) == 8 and len(test) >= 1  # one folder, split by the seeded hash
    assert {**_captions_by_key(train), **_captions_by_key(test)} == dict(rows)
    assert train.images.shape[1:] == (16, 16, 3) and not train.info["problems"]


def test_caption_column_chooses_another_column(tmp_path):
    root = _hub(tmp_path / "hub", _rows(4), column="caption")
    with pytest.raises(UsageError, match=r"metadata\.jsonl: no line has a caption column 'text'; "
                                         r"-d caption_column=NAME chooses another; columns found: file_name, caption"):
        _folder(root).index("train")
    assert _captions_by_key(_folder(root, caption_column="caption", test_fraction=0.0).load("train", 8)) == {
        name: caps for name, caps in _rows(4)}
    sidecar = tmp_path / "sidecar"
    save_picture(sidecar / "a.png", 1).with_suffix(".txt").write_text("a caption\n")
    with pytest.raises(UsageError, match="caption_column applies to a Hub metadata"):
        _folder(sidecar, caption_column="caption").index("train")


def test_split_folders_each_with_their_own_metadata(tmp_path):
    root = tmp_path / "hub"
    _hub(root / "train", _rows(4), "jsonl")
    _hub(root / "validation", _rows(2), "csv", seed=50)  # no test/: validation is the test split
    data = _folder(root)
    assert [i.key for i in data.index("train").items] == sorted(f"train/{n}" for n, _ in _rows(4))
    assert [i.key for i in data.index("test").items] == sorted(f"validation/{n}" for n, _ in _rows(2))
    _hub(root / "test", _rows(3), "jsonl", seed=80)  # with test/, validation/ is not used (and reported)
    data = _folder(root)
    assert [i.key for i in data.index("test").items] == sorted(f"test/{n}" for n, _ in _rows(3))
    assert data.index("test").problems.counts() == {"unused split": 1}


def test_root_metadata_with_split_folders_splits_by_folder(tmp_path):
    rows = _rows(3, "train/") + _rows(2, "test/")
    data = _folder(_hub(tmp_path / "hub", rows))
    assert {i.key for i in data.index("test").items} == {n for n, _ in rows[3:]}
    assert {i.key for i in data.index("train").items} == {n for n, _ in rows[:3]}


def test_bad_metadata_rows_are_skipped_and_counted(tmp_path, capsys):
    root = _hub(tmp_path / "hub", _rows(6))
    with (root / "metadata.jsonl").open("a") as f:
        f.write('{"file_name": "dogs/img_00.png", "text": \n')  # not JSON
        f.write(json.dumps({"file_name": "extra.png", "text": ""}) + "\n")  # an empty caption
        f.write(json.dumps({"file_name": "more.png", "text": ["ok", 3]}) + "\n")  # not a list of strings
        f.write(json.dumps({"text": "no file name"}) + "\n")
        f.write(json.dumps({"file_name": "../../etc/passwd", "text": "escape"}) + "\n")
    save_picture(root / "extra.png", 9)
    save_picture(root / "more.png", 10)
    (root / "cats" / "img_03.png").write_bytes(b"not a png")  # an image Pillow cannot read
    data = Folder(FolderConfig(root=str(root), cache_dir=str(tmp_path / "cache"), test_fraction=0.0))
    train = data.load("train", 8)
    assert len(train) == 5 and "cats/img_03.png" not in train.info["keys"]
    assert train.info["problems"] == {"bad manifest line": 3, "path escapes the data root": 1, "no captions": 1,
                                      "unreadable image": 1}
    warning = capsys.readouterr().err
    assert "1 of 6 images skipped" in warning and "3 bad manifest line" in warning


@pytest.mark.parametrize("name, content, message", [
    ("metadata.csv", "file_name,caption\na.png,x\n",
     r"metadata\.csv:1: the header has no caption column 'text'; -d caption_column=NAME chooses another; "
     r"columns found: file_name, caption"),
    ("metadata.csv", "image,text\na.png,x\n", r"metadata\.csv:1: the header has no image column 'file_name'"),
    ("metadata.csv", 'file_name,text\na.png,"fine"\nb.png,"broken\n', r"metadata\.csv:3: not valid CSV"),
    ("metadata.jsonl", '{"image": "a.png", "text": "x"}\n', r"metadata\.jsonl: no line has an image column 'file_name'"),
])
def test_structural_metadata_problems_are_one_line(tmp_path, name, content, message):
    root = tmp_path / "hub"
    save_picture(root / "a.png", 1)
    (root / name).write_text(content)
    with pytest.raises(UsageError, match=message) as exc:
        _folder(root).index("train")
    assert "\n" not in str(exc.value)


def test_a_metadata_row_naming_a_missing_file_stops_the_run(tmp_path):
    root = _hub(tmp_path / "hub", _rows(3) + [("gone.png", ["a missing image"])])
    (root / "gone.png").unlink()
    with pytest.raises(UsageError, match=r"metadata\.jsonl names 1 image\(s\) that do not exist .*gone\.png"):
        _folder(root, test_fraction=0.0).index("train")


def test_structural_problems_exit_2_with_one_line_through_the_cli(tmp_path, capsys):
    root = tmp_path / "hub"
    save_picture(root / "a.png", 1)
    (root / "metadata.csv").write_text("file_name,caption\na.png,x\n")
    assert main(["data", "inspect", f"folder:{root}", "-d", f"cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no caption column 'text'" in err and len(err.splitlines()) == 1
    hub = _saved(tmp_path / "saved")
    assert main(["data", "inspect", f"hf:{hub}", "-d", "caption_column=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "caption_column 'nope' is not a column" in err and len(err.splitlines()) == 1


# -- hf: datasets folders ----------------------------------------------------------------------------------------
def _saved(root: Path, n_train: int = 6, n_test: int = 2, seed: int = 0) -> Path:
    """``DatasetDict(train, test).save_to_disk(root)``: an Image column, a list-of-strings caption column, a label."""
    import datasets

    def split(n: int, offset: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(picture(seed + offset + i, 20 + i, 18)) for i in range(n)],
             "text": [[f"thing {offset + i}", f"thing {offset + i} again"] for i in range(n)],
             "label": list(range(n))},
            features=datasets.Features({"image": datasets.Image(), "text": datasets.List(datasets.Value("string")),
                                        "label": datasets.Value("int64")}))

    datasets.disable_progress_bars()
    datasets.DatasetDict(train=split(n_train, 0), test=split(n_test, 100)).save_to_disk(str(root))
    return root


def test_hf_reads_a_save_to_disk_folder(tmp_path):
    data = _hf(_saved(tmp_path / "saved"))
    train, test = data.load("train", 16), data.load("test", 16)
    assert (len(train), len(test)) == (6, 2)
    assert train.info["keys"][0] == "train/000000" and test.info["keys"][-1] == "test/000001"
    assert train.captions_of(3) == ["thing 3", "thing 3 again"] and test.captions_of(0)[0] == "thing 100"
    assert train.images.shape == (6, 16, 16, 3)
    # the cache is the common one: a second data set object reads it without decoding again ...
    again = _hf(tmp_path / "saved").cache("train", 16)
    assert not again.built and bool((again.images == train.images).all())
    # ... until the saved data set changes (other pixels, the same captions)
    _saved(tmp_path / "saved", seed=1000)
    changed = _hf(tmp_path / "saved").cache("train", 16)
    assert changed.built and not bool((changed.images == train.images).all())


def test_hf_single_dataset_splits_by_hash_and_options_choose(tmp_path):
    import datasets

    root = tmp_path / "one"
    datasets.Dataset.from_dict(
        {"photo": [Image.fromarray(picture(i)) for i in range(6)], "caption": [f"c {i}" for i in range(6)],
         "notes": ["n"] * 6}, features=datasets.Features(
            {"photo": datasets.Image(), "caption": datasets.Value("string"), "notes": datasets.Value("string")}),
    ).save_to_disk(str(root))
    with pytest.raises(UsageError, match=r"several string columns; choose one with -d caption_column=NAME; "
                                         r"columns: photo \(Image\), caption \(Value\), notes \(Value\)"):
        _hf(root).index("train")
    data = _hf(root, caption_column="caption", test_fraction=0.3)
    keys = [i.key for i in data.index("train").items] + [i.key for i in data.index("test").items]
    assert sorted(keys) == [f"train/{i:06d}" for i in range(6)] and data.index("test").items
    with pytest.raises(UsageError, match=r"no split 'validation' \(-d test_split\); splits: train"):
        _hf(root, caption_column="caption", test_split="validation").index("test")


def test_hf_bad_rows_are_skipped_and_counted(tmp_path):
    import datasets

    good = io.BytesIO()
    Image.fromarray(picture(1)).save(good, format="PNG")
    root = tmp_path / "bad"
    datasets.Dataset.from_dict(
        {"image": [{"bytes": good.getvalue(), "path": None}, {"bytes": b"junk", "path": None},
                   {"bytes": good.getvalue(), "path": None}, None],
         "text": ["fine", "unreadable", "  ", "no image"]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    ).save_to_disk(str(root))
    train = _hf(root, test_fraction=0.0).load("train", 8)
    assert train.captions == ["fine"]
    assert train.info["problems"] == {"no captions": 1, "missing image": 1, "unreadable image": 1}


def test_hf_reads_an_imagefolder_offline(tmp_path):
    root = tmp_path / "imagefolder"
    _hub(root / "train", _rows(4), lists=True)  # lists of captions
    _hub(root / "test", _rows(2), lists=True, seed=40)
    data = _hf(root)
    train, test = data.load("train", 16), data.load("test", 16)
    assert sorted(train.info["keys"]) == sorted(f"train/{n}" for n, _ in _rows(4))
    assert _captions_by_key(test) == {f"test/{n}": caps for n, caps in _rows(2)}
    assert list((tmp_path / "cache" / "hf-datasets").iterdir())  # datasets' Arrow cache went beside t2i's


def test_hf_without_datasets_says_how_to_install_it(tmp_path, monkeypatch):
    root = _saved(tmp_path / "saved")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(UsageError, match=r"needs the datasets library: pip install datasets$"):
        _hf(root).index("train")


@pytest.mark.parametrize("layout", ["save_to_disk", "imagefolder"])
def test_hf_passes_the_conformance_kit(tmp_path, layout):
    import t2i.testing as kit

    if layout == "save_to_disk":
        root = _saved(tmp_path / "saved")
    else:
        root = tmp_path / "imagefolder"
        _hub(root / "train", _rows(4), lists=True)
        _hub(root / "test", _rows(2), lists=True, seed=40)
    kit.check_dataset("hf", {"root": str(root), "quiet": True, "max_images": 4, "cache_dir": str(tmp_path / "cache")},
                      resolution=16)


def test_two_training_steps_on_hf_data(tmp_path):
    root = _saved(tmp_path / "saved")
    cfg = data_config("hf", root, resolution=32, steps=2, options={"cache_dir": str(tmp_path / "cache")})
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    assert result.status == "finished" and result.step == 2


def test_folder_with_hub_metadata_passes_the_conformance_kit(tmp_path):
    import t2i.testing as kit

    root = tmp_path / "hub"
    _hub(root / "train", _rows(4))
    _hub(root / "test", _rows(2), "csv", seed=40)
    kit.check_dataset("folder", {"root": str(root), "quiet": True, "max_images": 4, "cache_dir": str(tmp_path / "cache")},
                      resolution=16)
