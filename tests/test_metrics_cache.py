"""Caches that metrics build (reference features, the Shapes attribute reader, the R-precision evaluator) are
built once when several workers ask for them at the same time: the first builds under a file lock, the
others wait and read what it wrote."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from t2i.metrics import evaluator as evaluator_module
from t2i.metrics import shapes_reader
from t2i.metrics.evaluator import EvaluatorRecipe, read_key
from t2i.metrics.image_sets import cached_features, tensor_images
from t2i.metrics.shapes_reader import ReaderRecipe, load_reader, reader_path

R = 32


def at_once(task, n: int = 2) -> list:
    """``task()`` in ``n`` threads released together."""
    start = threading.Barrier(n)

    def run():
        start.wait()
        return task()

    with ThreadPoolExecutor(n) as pool:
        return [f.result() for f in [pool.submit(run) for _ in range(n)]]


class SlowMeanColour:
    """A feature extractor that takes its time: the per-channel mean colour of each image."""

    name = "slow_mean"
    dims = {"mean": 3}

    def __init__(self):
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        time.sleep(0.2)
        return {"mean": images.double().mean(dim=(1, 2)).float()}

    def cache_key(self) -> dict:
        return {"name": self.name}

    def protocol(self) -> dict:
        return {"extractor": self.name}


def test_reference_features_are_computed_once_for_parallel_askers(tmp_path):
    images = tensor_images(torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8), {"split": "test"})
    extractor = SlowMeanColour()
    results = at_once(lambda: cached_features(extractor, images, batch_size=6, cache_dir=tmp_path))
    assert extractor.calls == 1
    assert sorted(info["hit"] for _, _, info in results) == [False, True]
    assert torch.equal(results[0][1]["mean"], results[1][1]["mean"])
    assert len(list((tmp_path / "metrics").glob("*.npz"))) == 1 and not list((tmp_path / "metrics").glob("*.tmp*"))


def test_the_attribute_reader_is_trained_once_for_parallel_askers(tmp_path, monkeypatch):
    calls = []

    def quick_default_reader(resolution):
        calls.append(resolution)
        reader = shapes_reader.fit_reader(ReaderRecipe(resolution, steps=2))
        reader.info["recipe_hash"] = ReaderRecipe(resolution).digest()  # stands in for the default recipe's file
        return reader

    monkeypatch.setattr(shapes_reader, "train_reader", quick_default_reader)
    readers = at_once(lambda: load_reader(R, cache_dir=tmp_path))
    assert calls == [R]
    assert readers[0].info["sha256"] == readers[1].info["sha256"]
    assert reader_path(R, tmp_path).is_file()


def test_the_shapes_evaluator_is_trained_once_for_parallel_askers(tmp_path, monkeypatch):
    calls = []
    real_train = evaluator_module.train_evaluator

    def quick(data, **kwargs):
        calls.append(kwargs["resolution"])
        return real_train(data, **{**kwargs, "recipe": EvaluatorRecipe(steps=2, batch_size=8)})

    monkeypatch.setattr(evaluator_module, "train_evaluator", quick)
    models = at_once(lambda: evaluator_module.shapes_evaluator(R, tmp_path))
    assert calls == [R]
    path = evaluator_module.default_evaluator_path("shapes", R, tmp_path)
    assert read_key(path) is not None and models[0].info["sha256"] == models[1].info["sha256"]
