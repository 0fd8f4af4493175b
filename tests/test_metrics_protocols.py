"""Evaluation protocols of the papers: any number of generated images (captions cycled in a seeded order) and
reference statistics from a pytorch-fid ``.npz`` (read and written, checked with pytorch-fid's own code).

Inception runs on a random, test-written weights file (as in test_metrics_inception.py) over a few 32 px
Shapes renders, so each test takes seconds on a CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.errors import UsageError
from t2i.metrics import CYCLE_RULE, cycled_captions, seeded_caption, seeded_order
from t2i.metrics.fd_dinov2 import FrechetDino, FrechetDinoConfig
from t2i.metrics.image_sets import folder_images
from t2i.metrics.inception import InceptionFeatures, write_random_inception_weights
from t2i.metrics.inception_metrics import FID, KID, InceptionMetricConfig, InceptionScore, ISConfig, KIDConfig
from t2i.metrics.prc import PrecisionRecall, PrecisionRecallConfig
from t2i.metrics.reference_stats import load_reference_stats, save_reference_stats
from t2i.plugins import registry
from t2i_test_helpers import run_cli

R = 5  # reference images


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth", seed=0)


@pytest.fixture(scope="module")
def extractor(weights):
    torch.set_num_threads(1)
    return InceptionFeatures(weights, features=("pool3", "logits_unbiased"), batch_size=16)


@pytest.fixture(scope="module")
def reference():
    reg = registry("datasets")
    return reg.create("shapes", reg.make_config("shapes", {"train_size": 64, "test_size": R})).load("test", 32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders of 6 different Shapes renders (PNG, 32 px): generated and real."""
    reg = registry("datasets")
    data = reg.create("shapes", reg.make_config("shapes", {"train_size": 64, "test_size": 12})).load("test", 32)
    root = tmp_path_factory.mktemp("folders")
    for name, part in (("gen", data.images[:6]), ("real", data.images[6:])):
        (root / name).mkdir()
        for i, im in enumerate(part):
            Image.fromarray(im.numpy()).save(root / name / f"{i:03d}.png")
    return root / "gen", root / "real"


class _Recorder:
    """A perfect generator (each caption's own image) that remembers the captions it was asked for."""

    def __init__(self, reference):
        self.lookup = {c: reference.images[i] for i in range(len(reference)) for c in reference.captions_of(i)}
        self.captions: list[str] = []

    def __call__(self, captions):
        self.captions += captions
        return torch.stack([self.lookup[c] for c in captions])


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# -- any number of generated images --------------------------------------------------------------------
def test_cycled_captions_same_seed_same_order_every_image_each_pass(reference):
    n = 3 * R + 2
    first, again, other = cycled_captions(reference, n, 7), cycled_captions(reference, n, 7), cycled_captions(reference, n, 8)
    assert len(first) == n and first == again and first != other
    order = seeded_order(R, 7)
    # n <= R: exactly the historical choice; image i is row order[i mod R] on every pass
    assert cycled_captions(reference, R, 7) == seeded_caption(reference, order, 7) == first[:R]
    for i, caption in enumerate(first):
        assert caption in reference.captions_of(int(order[i % R]))


def test_fid_kid_is_generate_n_larger_than_the_reference_and_record_it(reference, extractor, tmp_path):
    n = 2 * R + 3
    records = {}
    for metric in (FID(InceptionMetricConfig(n_generated=n, seed=3, cache_dir=str(tmp_path)), extractor=extractor),
                   KID(KIDConfig(n_generated=n, seed=3, subset_size=R, subsets=4, cache_dir=str(tmp_path)), extractor=extractor),
                   InceptionScore(ISConfig(n_generated=n, seed=3, splits=2), extractor=extractor)):  # fmt: skip
        generate = _Recorder(reference)
        result = metric.evaluate(generate, reference)
        assert generate.captions == cycled_captions(reference, n, 3)
        p = result["protocol"]
        assert (p["n"], p["n_generated"], p["seed"], p["captions"]) == (n, n, 3, CYCLE_RULE)
        assert "n_requested" not in p and p["reference"]["size"] == R
        records[metric.metric] = result
    assert records["fid"]["fid"] >= 0 and records["kid"]["kid/std"] >= 0 and records["is"]["is"] >= 1
    assert records["fid"]["protocol"]["n_reference"] == R
    # the default still caps n at the reference split (what existing runs recorded)
    capped = FID(InceptionMetricConfig(n=100, cache_dir=str(tmp_path)), extractor=extractor).evaluate(_Recorder(reference), reference)
    assert (capped["protocol"]["n"], capped["protocol"]["n_requested"]) == (R, 100)


def test_prc_and_fd_dinov2_generate_n_larger_than_the_reference(reference, extractor, tmp_path):
    n = 2 * R + 1
    prc = PrecisionRecall(PrecisionRecallConfig(n=R, n_generated=n, k=2, seed=4, feature="pool3", cache_dir=str(tmp_path)))
    fd = FrechetDino(FrechetDinoConfig(n_generated=n, seed=4, cache_dir=str(tmp_path)))
    prc._extractor = fd._extractor = extractor  # any extractor will do for the protocol
    for metric in (prc, fd):
        generate = _Recorder(reference)
        p = metric.evaluate(generate, reference)["protocol"]
        assert generate.captions == cycled_captions(reference, n, 4)
        assert (p["n"], p["n_reference"], p["n_generated"], p["captions"]) == (n, R, n, CYCLE_RULE)
    with pytest.raises(ValueError, match="n_generated"):
        InceptionMetricConfig(n_generated=1)


# -- reference statistics from a file --------------------------------------------------------------------
class _PytorchFidModel(torch.nn.Module):
    """Stands in for pytorch-fid's InceptionV3: its [0, 1] float batches -> our extractor's pool3, as (B, 2048, 1, 1)."""

    BLOCK_INDEX_BY_DIM = {2048: 3}
    extractor: InceptionFeatures

    def __init__(self, blocks):
        super().__init__()

    def forward(self, x):
        images = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return [self.extractor(images)["pool3"][:, :, None, None]]


def test_fid_from_pytorch_fid_npz_equals_fid_from_the_images_rel_1e6(folders, extractor, weights, tmp_path, monkeypatch):
    from pytorch_fid import fid_score

    gen, real = folders
    _PytorchFidModel.extractor = extractor
    monkeypatch.setattr(fid_score, "InceptionV3", _PytorchFidModel)
    theirs = tmp_path / "pytorch-fid.npz"
    fid_score.save_fid_stats([str(real), str(theirs)], 6, "cpu", 2048, num_workers=0)  # pytorch-fid's own writer

    cfg = dict(weights=str(weights), device="cpu", cache_dir=str(tmp_path / "cache"))
    from_images = FID(InceptionMetricConfig(**cfg), extractor=extractor).compare(folder_images(gen), folder_images(real))
    from_file = FID(InceptionMetricConfig(reference_stats=str(theirs), **cfg), extractor=extractor).compare(folder_images(gen), None)
    assert _rel(from_file["fid"], from_images["fid"]) <= 1e-6
    source = from_file["protocol"]["reference_stats"]
    assert source["n"] == "unknown" and "not t2i" in source["written_by"] and len(source["sha256"]) == 64

    # and t2i's writer, read back by pytorch-fid's reader: the same mu/sigma
    ours = save_reference_stats(extractor, folder_images(real), tmp_path / "t2i.npz", batch_size=4)
    mu, sigma = fid_score.compute_statistics_of_path(str(ours), None, 1, 2048, "cpu")
    with np.load(theirs) as f:
        np.testing.assert_allclose(mu, f["mu"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sigma, f["sigma"], rtol=1e-6, atol=1e-9)
    stats, source = load_reference_stats(ours, extractor)
    assert source["n"] == 6 and source["written_by"]["weights_sha256"] == extractor.weights_sha256


def test_fid_with_a_generator_reads_reference_statistics_instead_of_the_split(reference, extractor, tmp_path):
    from t2i.metrics.image_sets import tensor_images

    path = save_reference_stats(extractor, tensor_images(reference.images), tmp_path / "split.npz")
    cfg = dict(n_generated=2 * R, seed=1, cache_dir=str(tmp_path / "cache"))
    from_split = FID(InceptionMetricConfig(**cfg), extractor=extractor).evaluate(_Recorder(reference), reference)
    from_file = FID(InceptionMetricConfig(reference_stats=str(path), **cfg), extractor=extractor).evaluate(_Recorder(reference), reference)
    assert _rel(from_file["fid"], from_split["fid"]) <= 1e-9
    p = from_file["protocol"]
    assert p["n_reference"] == R and p["reference_stats"]["file"] == str(path.resolve()) and "reference_cache" not in p


def test_kid_and_is_refuse_reference_statistics_in_one_line(folders, extractor, tmp_path):
    path = save_reference_stats(extractor, folder_images(folders[1]), tmp_path / "s.npz")
    kid = KID(KIDConfig(reference_stats=str(path), cache_dir=str(tmp_path)), extractor=extractor)
    with pytest.raises(UsageError) as err:
        kid.compare(folder_images(folders[0]), folder_images(folders[1]))
    message = str(err.value)
    assert "kid needs features of the reference images, not statistics" in message and "\n" not in message
    with pytest.raises(UsageError, match="not statistics"):
        InceptionScore(ISConfig(reference_stats=str(path)), extractor=extractor).compare(folder_images(folders[0]), None)


def test_stats_written_with_other_weights_are_refused(folders, extractor, weights, tmp_path):
    path = save_reference_stats(extractor, folder_images(folders[1]), tmp_path / "s.npz")
    with np.load(path) as f:
        data = dict(f)
    record = json.loads(str(data["t2i_protocol"]))
    data["t2i_protocol"] = np.asarray(json.dumps({**record, "weights_sha256": "0" * 64}))
    np.savez(path, **data)
    with pytest.raises(UsageError, match="computed with weights 000000000000"):
        load_reference_stats(path, extractor)


def test_cli_save_stats_writes_a_file_pytorch_fid_loads_and_fid_reads_back(folders, weights, tmp_path):
    from pytorch_fid.fid_score import compute_statistics_of_path

    gen, real = folders
    env = {"T2I_INCEPTION_WEIGHTS": str(weights), "T2I_OFFLINE": "1", "OMP_NUM_THREADS": "1", "T2I_CACHE_DIR": str(tmp_path / "c")}
    stats = tmp_path / "stats" / "real.npz"
    proc = run_cli("eval", str(gen), "--reference", str(real), "-m", "fid", "--save-stats", str(stats), "--json", "-",
                   "--device", "cpu", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from_images = json.loads(proc.stdout)
    assert from_images["saved_stats"] == str(stats)
    mu, sigma = compute_statistics_of_path(str(stats), None, 1, 2048, "cpu")  # pytorch-fid's reader
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)

    proc = run_cli("eval", str(gen), "--reference", str(stats), "-m", "fid", "-m", "is", "-M", "is.splits=2", "--json", "-",
                   "--device", "cpu", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from_file = json.loads(proc.stdout)
    assert _rel(from_file["values"]["fid"], from_images["values"]["fid"]) <= 1e-6
    assert from_file["protocol"]["fid"]["reference_stats"]["n"] == 6 and from_file["reference"] == {"stats": str(stats)}

    for metric, words in (("kid", "kid needs features of the reference images, not statistics"),
                          ("prc", "metric 'prc' needs the reference images' features, not statistics")):  # fmt: skip
        proc = run_cli("eval", str(gen), "--reference", str(stats), "-m", metric, "--device", "cpu", env=env)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_eval_of_a_run_saves_the_statistics_of_its_reference_split(extractor, weights, tmp_path, monkeypatch):
    from t2i.engine.trainer import Trainer
    from t2i.runs import evaluate_checkpoint
    from t2i_test_helpers import tiny_config

    monkeypatch.setenv("T2I_INCEPTION_WEIGHTS", str(weights))
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tiny_config(data={"options": {"train_size": 32, "test_size": 6}}, train={"steps": 1, "checkpoint_every": 0})
    Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    stats = tmp_path / "split.npz"
    report = evaluate_checkpoint(tmp_path / "run", metrics=["is"], options={"is": {"n_generated": 9, "splits": 2}},
                                 device="cpu", save_stats=stats)  # fmt: skip
    assert report["saved_stats"] == str(stats) and report["protocol"]["is"]["n"] == 9
    loaded, source = load_reference_stats(stats, extractor)
    assert source["n"] == 6 and source["written_by"]["images"]["split"] == "test"
    assert source["written_by"]["images"]["count"] == 6 and loaded.mean.shape == (2048,)


def test_save_stats_without_a_reference_is_one_line(folders, tmp_path):
    proc = run_cli("eval", str(folders[0]), "-m", "is", "--save-stats", str(tmp_path / "s.npz"))
    assert proc.returncode == 2 and "--save-stats writes the statistics of the reference images" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "s.npz").exists()
