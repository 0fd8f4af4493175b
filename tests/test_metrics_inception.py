"""fid, kid and is: validated against torch-fidelity on the same images and the same (random, test-made)
weights file, against closed forms, and through the cache and ``t2i eval FOLDER --reference ...``.

Inception is slow on a CPU (~0.15 s per image at 299 px), so the images are few (12 + 12 Shapes renders)
and one weights file and one set of torch-fidelity results are shared by the whole module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.errors import UsageError
from t2i.metrics.frechet import RunningStats, frechet_distance
from t2i.metrics.image_sets import folder_images, tensor_images
from t2i.metrics.inception import INCEPTION_FILE, InceptionFeatures, write_random_inception_weights
from t2i.metrics.inception_metrics import (
    FID, KID, InceptionMetricConfig, InceptionScore, ISConfig, KIDConfig, inception_score_from_logits, kid_from_features,
)  # fmt: skip
from t2i.plugins import registry
from t2i_test_helpers import run_cli

N = 12  # images per side


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth", seed=0)


@pytest.fixture(scope="module")
def images():
    """Two different sets of N Shapes renders at 32 px: uint8 (N, 32, 32, 3) each."""
    reg = registry("datasets")
    data = reg.create("shapes", reg.make_config("shapes", {"train_size": 64, "test_size": 2 * N})).load("test", 32)
    return data.images[:N].clone(), data.images[N:].clone()


@pytest.fixture(scope="module")
def extractor(weights):
    torch.set_num_threads(1)
    return InceptionFeatures(weights, features=("pool3", "logits_unbiased"), batch_size=N)


class _UInt8Dataset(torch.utils.data.Dataset):
    """What torch-fidelity takes: a Dataset of uint8 (3, H, W) tensors."""

    def __init__(self, images):
        self.images = images.permute(0, 3, 1, 2).contiguous()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@pytest.fixture(scope="module")
def reference_values(images, weights):
    """torch-fidelity's own FID, KID and IS (and its features) on the same images and weights file."""
    import torch_fidelity
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

    kwargs = dict(
        input1=_UInt8Dataset(images[0]), input2=_UInt8Dataset(images[1]), cuda=False, batch_size=N, verbose=False,
        feature_extractor_weights_path=str(weights), kid_subset_size=N, save_cpu_ram=True, cache=False,
    )  # fmt: skip
    values = torch_fidelity.calculate_metrics(fid=True, kid=True, isc=True, **kwargs)
    net = create_feature_extractor("inception-v3-compat", ["2048", "logits_unbiased"], **kwargs)
    values["features"] = {i: extract_featuresdict_from_input_id(i, net, **kwargs) for i in (1, 2)}
    return values


def _exact_fid(x, y):
    """FID straight from two small feature sets: tr sqrt(S1 S2) = nuclear norm of Xc^T Yc (N x N, exact)."""
    x, y = x.double(), y.double()
    xc, yc = (x - x.mean(0)) / (len(x) - 1) ** 0.5, (y - y.mean(0)) / (len(y) - 1) ** 0.5
    trace = torch.linalg.svdvals(xc @ yc.T).sum()
    return float((x.mean(0) - y.mean(0)).square().sum() + xc.square().sum() + yc.square().sum() - 2 * trace)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# -- against torch-fidelity --------------------------------------------------------------------------
def test_fid_kid_is_match_torch_fidelity(images, extractor, reference_values, tmp_path):
    """Same images, same weights file. Features agree to float32 rounding; the metrics computed from them agree
    with torch-fidelity's formulas in float64 to 1e-5. torch-fidelity's own reported numbers carry more noise
    at this tiny N (12 images < 2048 dimensions): its FID trace loses ~sqrt(eps) in the covariances' null space
    (~2e-5) and its KID sums float32 kernels (~1e-4), hence the looser bounds on those two."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    fake, real = tensor_images(images[0]), tensor_images(images[1])
    cfg = dict(cache_dir=str(tmp_path), device="cpu", batch_size=N)
    # cache_images: the three metrics share one pass over each set (the shared extractor computes both features)
    fid = FID(InceptionMetricConfig(**cfg), extractor=extractor).compare(fake, real, cache_images=True)
    kid = KID(KIDConfig(subset_size=N, **cfg), extractor=extractor).compare(fake, real, cache_images=True)
    isc = InceptionScore(ISConfig(**cfg), extractor=extractor).compare(fake, None, cache_images=True)

    theirs = reference_values["features"]
    ours = {k: torch.from_numpy(np.load(f)[f"{k}.features"]) for f in sorted((tmp_path / "metrics").glob("*.npz"))
            for k in ("pool3",) if str(np.load(f)["key"]).find(fake.identity["pixels_sha256"]) >= 0}  # fmt: skip
    torch.testing.assert_close(ours["pool3"], theirs[1]["2048"], rtol=1e-4, atol=1e-5)

    assert _rel(fid["fid"], _exact_fid(theirs[1]["2048"], theirs[2]["2048"])) <= 1e-5
    assert _rel(fid["fid"], reference_values["frechet_inception_distance"]) <= 1e-4
    kid64 = kid_features_to_metric(theirs[1]["2048"].double(), theirs[2]["2048"].double(), kid_subset_size=N, verbose=False)
    assert _rel(kid["kid"], kid64["kernel_inception_distance_mean"]) <= 1e-5
    assert _rel(kid["kid"], reference_values["kernel_inception_distance_mean"]) <= 5e-4
    assert _rel(isc["is"], reference_values["inception_score_mean"]) <= 5e-3
    assert _rel(isc["is"], inception_score_from_logits(theirs[1]["logits_unbiased"])[0]) <= 1e-6
    protocol = fid["protocol"]
    assert protocol["weights_sha256"] == extractor.weights_sha256 and protocol["n"] == N and protocol["n_reference"] == N
    assert "TF1" in protocol["resize"] and protocol["versions"]["torch_fidelity"]


def test_fid_formula_matches_torch_fidelity_with_full_rank_covariances():
    """More samples than dimensions: our streaming statistics and trace give the exact value (to ~1e-15) and
    torch-fidelity's within 1e-6 (its eigenvalues of the non-symmetric S1 S2 lose ~1e-7 at condition ~1e5)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    gen = torch.Generator().manual_seed(3)
    x = torch.rand(400, 96, generator=gen) @ torch.rand(96, 96, generator=gen) + 2.0
    y = torch.rand(300, 96, generator=gen) @ torch.rand(96, 96, generator=gen) * 1.2 + 2.0
    theirs = fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(y), False)
    sx, sy = RunningStats().update(x[:150]).update(x[150:]), RunningStats().update(y)
    ours = frechet_distance(sx.mean, sx.cov, sy.mean, sy.cov)
    assert _rel(ours, _exact_fid(x, y)) <= 1e-12
    assert _rel(ours, theirs["frechet_inception_distance"]) <= 1e-6


def test_is_and_kid_formulas_match_torch_fidelity_on_spread_out_features():
    """Random logits and features far from degenerate: the formulas alone agree to float64 rounding."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 1008, generator=gen, dtype=torch.float64) * 4
    ours = inception_score_from_logits(logits, splits=10, seed=2020)
    theirs = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert ours[0] > 5
    assert _rel(ours[0], theirs["inception_score_mean"]) <= 1e-12
    assert _rel(ours[1], theirs["inception_score_std"]) <= 1e-9

    x = torch.rand(60, 32, generator=gen, dtype=torch.float64)
    y = torch.rand(50, 32, generator=gen, dtype=torch.float64) + 0.1
    ours = kid_from_features(x, y, subsets=20, subset_size=40, seed=7)
    theirs = kid_features_to_metric(x, y, kid_subsets=20, kid_subset_size=40, rng_seed=7, verbose=False)
    assert _rel(ours[0], theirs["kernel_inception_distance_mean"]) <= 1e-10
    assert _rel(ours[1], theirs["kernel_inception_distance_std"]) <= 1e-8


# -- closed forms ----------------------------------------------------------------------------------
def test_frechet_closed_forms():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(500, 8, generator=gen, dtype=torch.float64)
    stats = RunningStats().update(feats[:123]).update(feats[123:])
    np.testing.assert_allclose(stats.mean.numpy(), feats.mean(0).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(feats.numpy(), rowvar=False), rtol=1e-10, atol=1e-13)
    assert abs(frechet_distance(stats.mean, stats.cov, stats.mean, stats.cov)) < 1e-9  # FID(x, x) = 0

    mu1, mu2 = torch.randn(8, generator=gen, dtype=torch.float64), torch.randn(8, generator=gen, dtype=torch.float64)
    assert frechet_distance(mu1, stats.cov, mu2, stats.cov) == pytest.approx(float((mu1 - mu2).square().sum()), rel=1e-9)

    a, b = torch.rand(8, generator=gen, dtype=torch.float64) + 0.1, torch.rand(8, generator=gen, dtype=torch.float64) + 0.1
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-10)

    # singular covariances (fewer samples than dimensions) stay finite and non-negative
    few = RunningStats().update(torch.randn(5, 64, generator=gen))
    assert 0 <= frechet_distance(few.mean, few.cov, stats.mean.repeat(8), torch.eye(64)) < float("inf")


def test_running_stats_survive_a_round_trip(tmp_path):
    stats = RunningStats().update(torch.rand(10, 4) + 1e4)
    stats.save(tmp_path / "s.npz")
    back = RunningStats.load(tmp_path / "s.npz")
    assert back.n == 10
    torch.testing.assert_close(back.cov, stats.cov, rtol=0, atol=0)
    torch.testing.assert_close(back.mean, stats.mean, rtol=0, atol=0)


def test_inception_score_closed_forms():
    uniform = torch.zeros(40, 1008)
    assert inception_score_from_logits(uniform, splits=4)[0] == pytest.approx(1.0, abs=1e-12)
    k = 5
    one_hot = torch.full((10 * k, 1008), -1e4)
    one_hot[torch.arange(10 * k), torch.arange(10 * k) % k] = 0  # k classes used equally
    assert inception_score_from_logits(one_hot, splits=1)[0] == pytest.approx(k, rel=1e-9)


def test_impossible_inception_score_raises(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "log", lambda self: torch.zeros_like(self) + 50.0, raising=True)  # breaks KL
    with pytest.raises(RuntimeError, match="outside"):
        inception_score_from_logits(torch.randn(20, 10), splits=2)


# -- batch size, cache, weights ----------------------------------------------------------------------
def test_batch_size_does_not_change_results(images, weights, tmp_path):
    fake, real = tensor_images(images[0][:5]), tensor_images(images[1][:5])
    values = []
    for batch_size in (2, 5):
        cfg = InceptionMetricConfig(weights=str(weights), batch_size=batch_size, device="cpu", cache=False)
        values.append(FID(cfg).compare(fake, real)["fid"])
    assert values[0] == pytest.approx(values[1], rel=1e-6)


def test_reference_cache_is_reused_and_rebuilt_when_its_key_changes(images, extractor, tmp_path, monkeypatch):
    from t2i.metrics import image_sets

    calls = []
    real_extract = image_sets.extract_all
    monkeypatch.setattr(image_sets, "extract_all", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    fake = tensor_images(images[0][:2])
    metric = FID(InceptionMetricConfig(cache_dir=str(tmp_path), batch_size=8), extractor=extractor)
    first = metric.compare(fake, tensor_images(images[1][:2], {"split": "test"}))
    again = metric.compare(fake, tensor_images(images[1][:2], {"split": "test"}))
    assert (first["protocol"]["reference_cache"]["hit"], again["protocol"]["reference_cache"]["hit"]) == (False, True)
    assert first["fid"] == again["fid"] and len(calls) == 1
    changed = metric.compare(fake, tensor_images(images[1][:2], {"split": "train"}))  # another key: computed again
    assert changed["protocol"]["reference_cache"]["hit"] is False and len(calls) == 2
    # a file whose stored key does not match what it is asked for (tampered, stale) is rebuilt, never reused
    path = next(f for f in (tmp_path / "metrics").glob("*.npz") if '"test"' in str(np.load(f)["key"]))
    data = dict(np.load(path))
    data["key"] = np.asarray(str(data["key"]).replace('"test"', '"tampered"'))
    np.savez(path, **data)
    rebuilt = metric.compare(fake, tensor_images(images[1][:2], {"split": "test"}))
    assert rebuilt["protocol"]["reference_cache"]["hit"] is False and rebuilt["fid"] == first["fid"] and len(calls) == 3
    assert metric.compare(fake, tensor_images(images[1][:2], {"split": "test"}))["protocol"]["reference_cache"]["hit"]


def test_missing_weights_offline_is_one_line_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("T2I_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("T2I_WEIGHTS_DIR", raising=False)
    with pytest.raises(UsageError) as err:
        FID(InceptionMetricConfig(device="cpu")).extractor
    assert INCEPTION_FILE in str(err.value) and "\n" not in str(err.value)


def test_wrong_weights_file_is_a_usage_error(tmp_path):
    path = tmp_path / "not-inception.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UsageError, match="does not hold torch-fidelity's Inception"):
        InceptionFeatures(path)


def test_evaluate_with_a_generator_records_the_protocol(images, extractor, tmp_path):
    reg = registry("datasets")
    reference = reg.create("shapes", reg.make_config("shapes", {"train_size": 64, "test_size": 6})).load("test", 32)
    lookup = {c: reference.images[i] for i in range(len(reference)) for c in reference.captions_of(i)}
    generate = lambda captions: torch.stack([lookup[c] for c in captions])  # noqa: E731 - a perfect "generator"
    result = FID(InceptionMetricConfig(n=100, cache_dir=str(tmp_path)), extractor=extractor).evaluate(generate, reference)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6 * max(1.0, float(RunningStats().update(extractor(reference.images)["pool3"]).cov.trace())))
    p = result["protocol"]
    assert (p["n"], p["n_requested"], p["reference"]["split"], p["reference"]["size"]) == (6, 100, "test", 6)


# -- folder evaluation ---------------------------------------------------------------------------------
def _write_folder(folder, images):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im.numpy()).save(folder / f"{i:03d}.png")


def test_folder_images_read_pngs_in_order(images, tmp_path):
    _write_folder(tmp_path / "a", images[0][:5])
    batches = list(folder_images(tmp_path / "a").batches(2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert torch.equal(torch.cat(batches), images[0][:5])
    with pytest.raises(UsageError, match="does not exist"):
        folder_images(tmp_path / "missing")


def test_eval_folder_cli_writes_json(images, weights, tmp_path):
    _write_folder(tmp_path / "gen", images[0][:4])
    _write_folder(tmp_path / "real", images[1][:4])
    env = {"T2I_INCEPTION_WEIGHTS": str(weights), "T2I_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "report.json"
    proc = run_cli("eval", str(tmp_path / "gen"), "--reference", str(tmp_path / "real"), "--metric", "fid", "--metric", "kid",
                   "--metric", "is", "--json", str(out), "-M", "is.splits=2", "--device", "cpu", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["values"]) == {"fid", "kid", "kid/std", "is", "is/std"}
    assert report["values"]["fid"] > 0
    assert report["protocol"]["fid"]["weights_sha256"] and report["protocol"]["fid"]["n"] == 4
    assert report["images"]["count"] == 4 and report["reference"]["count"] == 4
    # folder vs a registered data set's split, JSON on stdout
    proc = run_cli("eval", str(tmp_path / "gen"), "--reference", "shapes:test", "-d", "test_size=5", "-m", "fid", "--json", "-",
                   "--device", "cpu", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["reference"]["source"] == "dataset" and report["reference"]["split"] == "test"
    assert report["reference"]["count"] == 5 and report["values"]["fid"] >= 0


def test_eval_folder_cli_missing_folder_exits_2(tmp_path):
    (tmp_path / "real").mkdir()
    proc = run_cli("eval", str(tmp_path / "nothing-here"), "--reference", str(tmp_path / "real"), "-m", "fid")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
