"""Scoring a folder of images generated elsewhere (``t2i eval FOLDER --captions captions.jsonl``): captions are
matched to images by file stem or relative path, every mismatch is a one-line error naming the file, and the
caption metrics score each image against its own caption.

R-precision runs with an untrained t2i evaluator (random weights, saved in the evaluator's file format) on 32 px
Shapes renders: the protocol and the plumbing are tested here, not the evaluator (test_metrics_rprecision.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from t2i.cli import main
from t2i.errors import UsageError
from t2i.metrics.image_sets import folder_captions
from t2i.plugins import registry

DATA = {"train_size": 32, "test_size": 12}


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _png(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (10, 20, 30)).save(path)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    """The Shapes test split as a folder of PNGs with a captions.jsonl (each image's first caption), and an
    evaluator file for R-precision."""
    import torch

    from t2i.metrics.evaluator import Evaluator, EvaluatorRecipe, build_vocabulary, evaluator_key, save_evaluator

    torch.set_num_threads(1)
    reg = registry("datasets")
    dataset = reg.create("shapes", reg.make_config("shapes", DATA))
    test = dataset.load("test", 32)
    root = tmp_path_factory.mktemp("generated")
    rows = []
    for i in range(len(test)):
        Image.fromarray(test.images[i].numpy()).save(root / f"img_{i:03d}.png")
        rows.append({"image": f"img_{i:03d}", "caption": test.captions_of(i)[0]})
    captions = _jsonl(root.parent / "captions.jsonl", rows)
    recipe = EvaluatorRecipe()
    train = dataset.load("train", 32)
    torch.manual_seed(0)  # an untrained evaluator: its file format and key are what r_precision reads
    model = Evaluator(build_vocabulary(train.captions), recipe, evaluator_key("shapes", DATA, 32, recipe, train.info))
    model.info = {"sha256": "untrained"}
    evaluator = save_evaluator(model, root.parent / "evaluator.safetensors")
    return root, captions, evaluator, test


# -- matching captions to images -----------------------------------------------------------------------
def test_captions_match_by_stem_relative_path_or_file_name_in_folder_order(tmp_path):
    for name in ("a/0001.png", "b/0002.jpg", "0003.png"):
        _png(tmp_path / "imgs" / name)
    captions = _jsonl(tmp_path / "c.jsonl", [
        {"image": "0003", "caption": "three"}, {"image": "a/0001.png", "caption": "one"}, {"image": "0002.jpg", "caption": ["two"]},
    ])  # fmt: skip
    assert folder_captions(tmp_path / "imgs", captions) == ["three", "one", "two"]  # sorted paths: 0003, a/0001, b/0002


def test_a_txt_beside_each_image_is_its_caption(tmp_path):
    for i in range(2):
        _png(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"caption {i}\n")
    assert folder_captions(tmp_path) == ["caption 0", "caption 1"]
    (tmp_path / "1.txt").write_text("one\nanother\n")
    with pytest.raises(UsageError, match=r"1.txt holds 2 captions; a generated image has exactly one"):
        folder_captions(tmp_path)
    (tmp_path / "1.txt").unlink()
    with pytest.raises(UsageError, match=r"no caption for .*1.png: put 1.txt beside it, or pass --captions"):
        folder_captions(tmp_path)


@pytest.mark.parametrize("rows, message", [
    ([{"image": "a/0001", "caption": "x"}, {"image": "0009", "caption": "y"}], r"c.jsonl line 2: no image '0009' in "),
    ([{"image": "a/0001", "caption": "x"}], r"c.jsonl has no caption for b/0001.png in "),
    ([{"image": "a/0001", "caption": "x"}, {"image": "a/0001.png", "caption": "y"}], r"line 2: a second caption for a/0001.png"),
    ([{"image": "0001", "caption": "x"}], None),
    ([{"image": "a/0001", "caption": ""}], r"line 1: image 'a/0001' needs one non-empty caption string"),
])  # fmt: skip
def test_every_mismatch_is_one_line_naming_the_file(tmp_path, rows, message):
    _png(tmp_path / "imgs" / "a" / "0001.png")
    _png(tmp_path / "imgs" / "b" / "0001.png")
    if message is None:  # a bare stem that two files share
        message = r"line 1: image '0001' matches 2 files \(a/0001.png, b/0001.png\); give its path relative to"
    with pytest.raises(UsageError, match=message) as info:
        folder_captions(tmp_path / "imgs", _jsonl(tmp_path / "c.jsonl", rows))
    assert "\n" not in str(info.value)


def test_cli_refuses_caption_metrics_without_captions_and_captions_for_a_run(capsys, tmp_path):
    for i in range(2):
        _png(tmp_path / "imgs" / f"{i}.png")
    code, _, err = _cli(capsys, "eval", str(tmp_path / "imgs"), "-m", "clip_score")
    assert code == 2 and "no caption for" in err and "0.txt" in err and "Traceback" not in err  # before CLIP loads
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    code, _, err = _cli(capsys, "eval", str(run), "--captions", str(tmp_path / "c.jsonl"))
    assert code == 2 and "--captions goes with a folder of images" in err


# -- scoring -----------------------------------------------------------------------------------------
def test_r_precision_of_a_captioned_folder_against_a_data_set_split(capsys, shapes_folder, tmp_path, monkeypatch):
    root, captions, evaluator, test = shapes_folder
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))
    args = ["eval", str(root), "--captions", str(captions), "--reference", "shapes:test",
            *(f"-d{k}={v}" for k, v in DATA.items()), "-m", "r_precision", "-M", f"r_precision.evaluator={evaluator}",
            "-M", "r_precision.negatives=5", "-M", "r_precision.folds=2", "--device", "cpu", "--json", "-"]  # fmt: skip
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    report = json.loads(out)
    assert set(report["values"]) == {"r_precision", "r_precision/std", "r_precision/real", "r_precision/real_std"}
    assert 0.0 <= report["values"]["r_precision"] <= 1.0
    protocol = report["protocol"]["r_precision"]
    assert protocol["n"] == len(test) == report["images"]["count"] and protocol["negatives"] == 5
    assert protocol["captions_in_reference"] == len(test) and "every image of the folder" in protocol["selection"]
    assert protocol["options"]["evaluator"] == str(evaluator) and report["captions"] == {"file": str(captions)}
