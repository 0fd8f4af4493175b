"""``r_precision``, its mismatched captions, and the evaluator t2i trains for it (``t2i evaluator train``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i.cli import main
from t2i.data.shapes import Shapes, ShapesConfig
from t2i.engine.components import build_generator, build_text_encoder
from t2i.engine.evaluate import evaluate
from t2i.metrics.build import build_metrics
from t2i.errors import UsageError
from t2i.metrics import evaluator as evaluator_module
from t2i.metrics.evaluator import EvaluatorRecipe, load_evaluator, train_evaluator
from t2i.metrics.r_precision import (
    RPrecision,
    RPrecisionConfig,
    fold_statistics,
    hit_rates,
    mismatched_captions,
    scene_classes,
)
from t2i_test_helpers import tiny_config

R = 32
TINY_DATA = ["-d", "train_size=256", "-d", "test_size=150"]


@pytest.fixture(scope="module")
def reference():
    return Shapes(ShapesConfig(train_size=1, test_size=150)).load("test", R)


# -- the computation ---------------------------------------------------------------------------------
def candidates_for(n_queries: int, n_captions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Queries with true captions 0..n-1 and 99 negatives each, every caption its own scene."""
    true = np.arange(n_queries) % n_captions
    negatives = mismatched_captions(np.arange(n_captions), true, 99, seed)
    return true, np.concatenate([true[:, None], negatives], 1)


def test_identical_embeddings_give_one():
    text = torch.nn.functional.normalize(torch.randn(300, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    true, candidates = candidates_for(300, 300)
    hits = hit_rates(text[true], text, candidates)
    assert fold_statistics(hits, 10) == (1.0, 0.0)


def test_random_embeddings_give_about_one_in_a_hundred():
    gen = torch.Generator().manual_seed(1)
    images, text = torch.randn(3000, 64, generator=gen), torch.randn(500, 64, generator=gen)
    _, candidates = candidates_for(3000, 500)
    mean, std = fold_statistics(hit_rates(images, text, candidates), 10)
    assert 0.005 < mean < 0.016 and std > 0  # 1/100; binomial std of the mean ~0.0018


def test_a_tie_for_first_counts_as_a_fraction():
    text = torch.ones(200, 4)  # every caption embeds the same: 100 candidates tie
    _, candidates = candidates_for(50, 200)
    assert hit_rates(torch.ones(50, 4), text, candidates).tolist() == pytest.approx([0.01] * 50)


def test_folds_mean_and_std():
    hits = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    assert fold_statistics(hits, 3) == pytest.approx((0.5, np.std([1.0, 0.0, 0.5])))


def test_negatives_are_distinct_seeded_and_never_describe_the_same_scene(reference):
    classes = scene_classes(reference)
    scene_of_caption = {}
    for row in range(len(reference)):
        attributes = tuple(int(reference.attributes[a][row]) for a in sorted(reference.attributes))
        for c in reference.caption_ids[row].tolist():
            scene_of_caption[c] = attributes
    true = reference.caption_ids[:40, 0].numpy()
    negatives = mismatched_captions(classes, true, 99, seed=3)
    assert np.array_equal(negatives, mismatched_captions(classes, true, 99, seed=3))
    assert not np.array_equal(negatives, mismatched_captions(classes, true, 99, seed=4))
    for t, row in zip(true, negatives):
        assert len(set(row.tolist())) == 99 and t not in row
        assert all(scene_of_caption[int(c)] != scene_of_caption[int(t)] for c in row)


def test_too_few_captions_is_a_usage_error(reference):
    with pytest.raises(UsageError, match="lower r_precision.negatives"):
        mismatched_captions(scene_classes(reference), np.array([0]), 10_000, seed=0)


# -- the evaluator -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluator_file(tmp_path_factory):
    """A tiny evaluator, trained through the CLI (in-process)."""
    path = tmp_path_factory.mktemp("evaluator") / "shapes-tiny.safetensors"
    code = main(["evaluator", "train", "--data", "shapes", *TINY_DATA, "--steps", "40", "--batch-size", "32", "--out", str(path)])
    assert code == 0 and path.is_file()
    return path


def test_evaluator_train_is_reused_when_the_key_matches(evaluator_file, capsys, monkeypatch):
    before = evaluator_file.stat().st_mtime_ns
    monkeypatch.setattr(evaluator_module, "train_evaluator", lambda *a, **k: pytest.fail("trained again"))
    args = ["evaluator", "train", "--data", "shapes", *TINY_DATA, "--batch-size", "32", "--out", str(evaluator_file)]
    assert main([*args, "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "R-precision on 150 real test images" in out
    assert evaluator_file.stat().st_mtime_ns == before
    # another recipe for the same file: refused, the file is kept
    assert main([*args, "--steps", "41"]) == 2
    assert "holds another evaluator (its recipe differs in steps); pass --force" in capsys.readouterr().err
    assert evaluator_file.stat().st_mtime_ns == before


def test_evaluator_train_refuses_a_bad_data_set(capsys):
    assert main(["evaluator", "train", "--data", "shapez"]) == 2
    err = capsys.readouterr().err
    assert "unknown data set 'shapez'; did you mean 'shapes'?" in err and len(err.strip().splitlines()) == 1
    assert main(["evaluator", "train", "--data", "shapes", "-d", "sizes=3"]) == 2


def test_evaluator_file_holds_vocabulary_key_and_real_r_precision(evaluator_file):
    model = load_evaluator(evaluator_file)
    assert model.vocabulary[:2] == ["<pad>", "<unk>"] and "circle" in model.vocabulary
    assert model.key["data"]["name"] == "shapes" and model.key["data"]["resolution"] == R
    assert model.key["data"]["options"]["train_size"] == 256 and model.key["recipe"]["steps"] == 40
    assert 0.05 < model.info["real_r_precision"] <= 1  # above chance (0.01) after 40 tiny steps
    emb = model.encode_text(["a small red circle in the center on a black background", "zzz unknown words"])
    assert emb.shape == (2, EvaluatorRecipe.embed_dim) and torch.allclose(emb.norm(dim=1), torch.ones(2))


def test_evaluator_training_is_deterministic():
    data = Shapes(ShapesConfig(train_size=64, test_size=8))
    recipe = EvaluatorRecipe(steps=3, batch_size=16)
    a = train_evaluator(data, data_name="shapes", resolution=R, recipe=recipe)
    b = train_evaluator(data, data_name="shapes", resolution=R, recipe=recipe)
    c = train_evaluator(data, data_name="shapes", resolution=R, recipe=EvaluatorRecipe(steps=3, batch_size=16, seed=1))
    assert a.info["sha256"] == b.info["sha256"] != c.info["sha256"]


def test_broken_evaluator_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(UsageError, match="cannot be used"):
        load_evaluator(bad)
    with pytest.raises(UsageError, match="does not exist; make one with: t2i evaluator train"):
        load_evaluator(tmp_path / "missing.safetensors")


# -- the metric --------------------------------------------------------------------------------------
def lookup_generator(reference):
    table = {}
    for row in range(len(reference)):
        for caption in reference.captions_of(row):
            table.setdefault(caption, row)
    return lambda captions: reference.images[[table[c] for c in captions]]


def test_r_precision_through_the_engine(evaluator_file, reference):
    cfg = tiny_config()
    encoder, _ = build_text_encoder(cfg)
    encoder.fit(reference.captions)
    torch.manual_seed(0)
    generator, _ = build_generator(cfg, encoder.dim)
    options = {"r_precision": {"n": 100, "folds": 5, "evaluator": str(evaluator_file), "device": "cpu"}}
    values, protocols = evaluate(build_metrics(["r_precision"], options), generator, encoder, reference, torch.device("cpu"))
    keys = {"r_precision/std", "r_precision/real", "r_precision/real_std"}
    assert keys <= set(values) and all(0 <= values[k] <= 1 for k in keys)
    mean = [v for k, v in values.items() if k not in keys and k.startswith("r_precision")]
    assert len(mean) == 1 and mean[0] < values["r_precision/real"]  # an untrained generator is near chance
    p = protocols["r_precision"]
    assert (p["n"], p["negatives"], p["folds"], p["chance"]) == (100, 99, 5, 0.01)
    assert p["evaluator_file"] == str(evaluator_file) and p["evaluator_data"]["name"] == "shapes"


def test_real_images_as_generated_images_reach_the_ceiling(evaluator_file, reference):
    metric = RPrecision(RPrecisionConfig(n=100, folds=5, evaluator=str(evaluator_file), device="cpu"))
    result = metric.evaluate(lookup_generator(reference), reference)
    assert result["r_precision"] == result["r_precision/real"]


def test_the_cached_shapes_evaluator_is_found_and_the_resolution_must_match(evaluator_file, tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path))
    assert main(["evaluator", "train", "--data", "shapes", *TINY_DATA, "--steps", "2", "--batch-size", "8"]) == 0
    monkeypatch.setattr(evaluator_module, "train_evaluator", lambda *a, **k: pytest.fail("trained again"))
    small = Shapes(ShapesConfig(train_size=1, test_size=150)).load("test", R)
    metric = RPrecision(RPrecisionConfig(n=20, folds=2, device="cpu"))
    result = metric.evaluate(lookup_generator(small), small)
    assert result["protocol"]["evaluator_file"].endswith("evaluator-shapes-32px-v1.safetensors")
    other = Shapes(ShapesConfig(train_size=1, test_size=150)).load("test", 16)
    wrong = RPrecision(RPrecisionConfig(n=20, folds=2, evaluator=str(evaluator_file), device="cpu"))
    with pytest.raises(UsageError, match="was trained on shapes at 32 px, the reference split is shapes at 16 px"):
        wrong.evaluate(lookup_generator(other), other)
