"""Improved precision/recall, timm feature extractors (``timm:<model>``, ``dinov2``) and ``fd_dinov2``.

The backbone in these tests is timm's ``test_vit`` (300k parameters) with random weights written here, as
a user's own weights file would be.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i.data.shapes import Shapes, ShapesConfig
from t2i.engine.components import build_generator, build_text_encoder
from t2i.engine.evaluate import evaluate
from t2i.metrics.build import build_metrics
from t2i.errors import UsageError
from t2i.metrics.fd_dinov2 import FrechetDino, FrechetDinoConfig
from t2i.metrics.features import make_extractor
from t2i.metrics.prc import PrecisionRecall, PrecisionRecallConfig, knn_radii, precision_recall
from t2i.metrics.timm_features import TimmFeatures
from t2i.weights import WeightsNotFound, file_sha256
from t2i_test_helpers import tiny_config

R = 32


# -- precision and recall: the computation -----------------------------------------------------------
def reference_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The definition, written out with loops (Kynkaanniemi et al. 2019, Eq. 1-3)."""

    def radius(points, i):
        return sorted(np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i)[k - 1]

    def inside(x, points):
        return any(np.linalg.norm(x - points[j]) <= radius(points, j) for j in range(len(points)))

    return (float(np.mean([inside(f, real) for f in fake])), float(np.mean([inside(r, fake) for r in real])))


def test_identical_sets_have_precision_and_recall_one():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)


def test_far_apart_clusters_have_precision_and_recall_zero():
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(40, 4, generator=gen), torch.randn(30, 4, generator=gen) + 100
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_hand_made_two_dimensional_example():
    # k = 1. Real radii: (0,0) -> 1, (1,0) -> 1, (5,0) -> 4. Of the fakes, (0,0.5) lies in the first ball,
    # (3,0) in the third, (10,0) and (20,0) in none: precision 2/4. Fake radii: 3.04, 3.04, 7, 10; every
    # real point is within 3.04 of (0,0.5) or (3,0): recall 1.
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    fake = torch.tensor([[0.0, 0.5], [3.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    assert knn_radii(real, k=1).tolist() == [1.0, 1.0, 16.0]  # squared
    # on the boundary counts as inside: (0, 1) is exactly 1 from (0, 0)
    assert precision_recall(real, torch.tensor([[0.0, 1.0], [50.0, 0.0]]), k=1)[0] == 0.5


def test_matches_the_definition_and_does_not_depend_on_the_block_size():
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.randn(40, 3, generator=gen), torch.randn(35, 3, generator=gen) * 1.5 + 0.5
    expected = reference_precision_recall(real.numpy().astype(np.float64), fake.numpy().astype(np.float64), k=3)
    for block in (7, 1000):
        assert precision_recall(real, fake, k=3, batch_size=block) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1


def test_too_few_samples_for_k_is_a_usage_error():
    with pytest.raises(UsageError, match="needs more than 3 samples"):
        precision_recall(torch.zeros(3, 2), torch.zeros(5, 2))


# -- timm extractors ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    """Random weights for timm's test_vit at its pretrained 160 px, saved as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_vit", pretrained=False)  # with its classifier, as released files are
    path = tmp_path_factory.mktemp("timm") / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def vit(vit_weights):
    return make_extractor("timm:test_vit", weights=str(vit_weights))


def test_timm_extractor_loads_the_file_and_preprocesses_like_the_pretrained_config(vit, vit_weights):
    import timm
    from safetensors.torch import load_file

    assert isinstance(vit, TimmFeatures) and vit.name == "timm:test_vit" and vit.dims == {"features": 64}
    net = timm.create_model("test_vit", pretrained=False, num_classes=0)
    net.load_state_dict({k: v for k, v in load_file(str(vit_weights)).items() if not k.startswith("head.")})
    images = torch.randint(0, 256, (3, R, R, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2).float() / 255, size=160, mode="bicubic",
                                        antialias=True).clamp(0, 1)
    expected = net.eval()((x - 0.5) / 0.5)  # test_vit's config: mean = std = 0.5
    got = vit(images)["features"]
    assert got.shape == (3, 64) and got.device.type == "cpu"
    assert torch.allclose(got, expected, atol=1e-5)
    p = vit.protocol()
    assert (p["input_size"], p["weights_sha256"], p["weights"]) == (160, file_sha256(vit_weights), vit_weights.name)
    assert vit.cache_key()["weights_sha256"] == file_sha256(vit_weights)


def test_timm_extractor_resizes_position_embeddings_for_another_input_size(vit_weights):
    small = TimmFeatures("test_vit", weights=vit_weights, image_size=32)
    assert small.image_size == 32 and small(torch.zeros(2, R, R, 3, dtype=torch.uint8))["features"].shape == (2, 64)


def test_timm_weights_come_from_the_environment_variable(vit_weights, monkeypatch):
    monkeypatch.setenv("T2I_TIMM_WEIGHTS", str(vit_weights))
    assert make_extractor("timm:test_vit").weights_path == vit_weights


def test_missing_weights_offline_is_one_line_naming_the_file(tmp_path, monkeypatch):
    for name in ("T2I_DINOV2_WEIGHTS", "T2I_TIMM_WEIGHTS", "T2I_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("T2I_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFound) as info:
        make_extractor("dinov2")
    message = str(info.value)
    assert "\n" not in message and "dinov2_vitl14_pretrain.pth" in message and "T2I_DINOV2_WEIGHTS" in message
    with pytest.raises(WeightsNotFound, match=r"test_vit\.r160_in1k\.safetensors"):
        make_extractor("timm:test_vit")
    with pytest.raises(WeightsNotFound, match="is not a file"):
        make_extractor("timm:test_vit", weights=str(tmp_path / "nope.safetensors"))


def test_a_hugging_face_cache_file_is_found(vit_weights, tmp_path, monkeypatch):
    monkeypatch.delenv("T2I_TIMM_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("T2I_OFFLINE", "1")
    snapshot = tmp_path / "hf" / "models--timm--test_vit.r160_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(vit_weights.read_bytes())
    assert make_extractor("timm:test_vit").weights_path == snapshot / "model.safetensors"


def test_weights_of_another_model_are_refused(tmp_path):
    import timm

    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(UsageError, match=r"does not fit timm model 'test_vit'"):
        TimmFeatures("test_vit", weights=path)
    with pytest.raises(UsageError, match=r"unknown timm model 'test_vitt'; did you mean 'test_vit'"):
        make_extractor("timm:test_vitt")


# -- the metrics, end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    return Shapes(ShapesConfig(train_size=1, test_size=40)).load("test", R)


def lookup_generator(reference):
    """Answers each caption with a real image that it describes."""
    table = {}
    for row in range(len(reference)):
        for caption in reference.captions_of(row):
            table.setdefault(caption, row)
    return lambda captions: reference.images[[table[c] for c in captions]]


def tiny_generator(reference):
    cfg = tiny_config()
    encoder, _ = build_text_encoder(cfg)
    encoder.fit(reference.captions)
    torch.manual_seed(0)
    generator, _ = build_generator(cfg, encoder.dim)
    return generator, encoder


def test_prc_of_real_images_is_one(vit, reference):
    metric = PrecisionRecall(PrecisionRecallConfig(n=30, extractor="timm:test_vit"))
    metric._extractor = vit
    result = metric.evaluate(lookup_generator(reference), reference)
    assert (result["prc/precision"], result["prc/recall"]) == (1.0, 1.0)


def test_prc_and_fd_dinov2_through_the_engine(vit_weights, reference):
    options = {
        "prc": {"n": 30, "extractor": "timm:test_vit", "weights": str(vit_weights), "device": "cpu"},
        "fd_dinov2": {"n": 40, "extractor": "timm:test_vit", "weights": str(vit_weights), "device": "cpu"},
    }
    metrics = build_metrics(["prc", "fd_dinov2"], options)
    generator, encoder = tiny_generator(reference)
    values, protocols = evaluate(metrics, generator, encoder, reference, torch.device("cpu"))
    assert 0 <= values["prc/precision"] <= 1 and 0 <= values["prc/recall"] <= 1
    fd = [v for k, v in values.items() if k.startswith("fd_dinov2")]
    assert len(fd) == 1 and fd[0] > 0
    for name in ("prc", "fd_dinov2"):
        p = protocols[name]
        assert p["extractor"] == "timm:test_vit" and p["weights_sha256"] == file_sha256(vit_weights)
        assert p["n"] == options[name]["n"]
    assert protocols["prc"]["k"] == 3 and protocols["fd_dinov2"]["n_reference"] == len(reference)


def test_fd_dinov2_is_zero_for_the_real_images_and_caches_real_statistics(vit, reference):
    def metric():
        m = FrechetDino(FrechetDinoConfig(n=len(reference), extractor="timm:test_vit"))
        m._extractor = vit
        return m

    first = metric().evaluate(lookup_generator(reference), reference)
    second = metric().evaluate(lambda c: torch.zeros(len(c), R, R, 3, dtype=torch.uint8).add_(128), reference)
    assert abs(first["fd_dinov2"]) < 1e-6  # the same 40 images: identical statistics
    assert second["fd_dinov2"] > 1e-3
    assert second["protocol"]["reference_cache"]["hit"] is True
    assert second["protocol"]["reference_cache"]["file"] == first["protocol"]["reference_cache"]["file"]


def test_metric_options_are_checked():
    with pytest.raises(ValueError, match="n must be > k"):
        PrecisionRecallConfig(n=3)
    with pytest.raises(ValueError, match="for Inception use fid"):
        FrechetDinoConfig(extractor="inception")
