"""``clip_score`` on a tiny random open-clip model whose config and weights file the test writes."""

from __future__ import annotations

import json

import pytest
import torch

from t2i.data.shapes import Shapes, ShapesConfig
from t2i.engine.components import build_generator, build_text_encoder
from t2i.engine.evaluate import evaluate
from t2i.metrics.build import build_metrics
from t2i.errors import UsageError
from t2i.metrics.clip_score import ClipScore, ClipScoreConfig, clip_scores
from t2i.weights import WeightsNotFound, file_sha256
from t2i_test_helpers import tiny_config

R = 32
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open-clip config and its weights file, as a user's own files would be."""
    import open_clip

    from t2i.clip import _model_name

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "t2i-test-clip-score.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    torch.save(open_clip.create_model(_model_name(str(config))).state_dict(), folder / "weights.pt")
    return config, folder / "weights.pt"


@pytest.fixture(scope="module")
def reference():
    return Shapes(ShapesConfig(train_size=1, test_size=24)).load("test", R)


def lookup_generator(reference):
    table = {}
    for row in range(len(reference)):
        for caption in reference.captions_of(row):
            table.setdefault(caption, row)
    return lambda captions: reference.images[[table[c] for c in captions]]


def test_clip_score_formula():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    text = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [4.0, 3.0]])
    assert clip_scores(image, text).tolist() == pytest.approx([100.0, 0.0, 96.0])  # cos 1, -1 -> 0, 24/25


def test_clip_score_is_the_mean_of_100_max_cos_0(tiny_clip, reference):
    config, weights = tiny_clip
    metric = ClipScore(ClipScoreConfig(n=10, model=str(config), weights=str(weights), device="cpu", batch_size=4))
    seen = []
    generate = lookup_generator(reference)
    result = metric.evaluate(lambda c: seen.extend(c) or generate(c), reference)
    clip = metric.clip
    by_hand = 100 * (clip.encode_image(generate(seen)) * clip.encode_text(seen)).sum(-1).clamp(min=0)
    assert len(seen) == 10
    assert result["clip_score"] == pytest.approx(by_hand.mean().item(), abs=1e-4)
    assert result["clip_score/std"] == pytest.approx(by_hand.std(unbiased=False).item(), abs=1e-4)
    assert result["clip_score/real"] == pytest.approx(result["clip_score"], abs=1e-4)  # the generator returns real images
    p = result["protocol"]
    assert p["clip_model"] == "t2i-test-clip-score" and p["clip_weights_sha256"] == file_sha256(weights)
    assert (p["n"], p["seed"], p["clip_image_size"]) == (10, 0, 16)


def test_clip_score_through_the_engine(tiny_clip, reference):
    config, weights = tiny_clip
    cfg = tiny_config()
    encoder, _ = build_text_encoder(cfg)
    encoder.fit(reference.captions)
    torch.manual_seed(0)
    generator, _ = build_generator(cfg, encoder.dim)
    metrics = build_metrics(["clip_score"], {"clip_score": {"n": 8, "model": str(config), "weights": str(weights), "device": "cpu"}})
    values, protocols = evaluate(metrics, generator, encoder, reference, torch.device("cpu"))
    scores = {k: v for k, v in values.items() if k.startswith("clip_score")}
    assert len(scores) == 3 and all(0 <= v <= 100 for v in scores.values())
    assert protocols["clip_score"]["options"]["n"] == 8


def test_clip_weights_missing_offline_is_a_usage_error(tiny_clip, reference, monkeypatch):
    config, _ = tiny_clip
    monkeypatch.delenv("T2I_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("T2I_OFFLINE", "1")
    metric = ClipScore(ClipScoreConfig(n=2, model="ViT-B-32-quickgelu", pretrained="openai", device="cpu"))
    with pytest.raises(WeightsNotFound, match="not available offline"):
        metric.evaluate(lookup_generator(reference), reference)
    with pytest.raises(UsageError, match="is not a file"):
        ClipScore(ClipScoreConfig(model=str(config), weights="/nonexistent/w.pt", device="cpu")).evaluate(
            lookup_generator(reference), reference)
