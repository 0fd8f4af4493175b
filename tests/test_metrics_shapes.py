"""The Shapes attribute reader and the shapes_accuracy and diversity metrics.

The reader is trained once per test session (32 px, into a temporary cache); every other test reads it
from there.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
import torch

from t2i import plugins
from t2i.data.shapes import HELD_OUT_PHRASINGS, Shapes, ShapesConfig, render
from t2i.errors import UsageError
from t2i.interfaces import CaptionedImages
from t2i.metrics import shapes_reader
from t2i.metrics.diversity import Diversity, DiversityConfig
from t2i.metrics.shapes_accuracy import ShapesAccuracy, ShapesAccuracyConfig
from t2i.metrics.shapes_reader import ATTRIBUTES, load_reader, reader_path

R = 32


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A cache holding the default 32 px reader (trained here, once)."""
    path = tmp_path_factory.mktemp("t2i-cache")
    load_reader(R, cache_dir=path)
    return path


@pytest.fixture(scope="session")
def reference():
    return Shapes(ShapesConfig(train_size=1, test_size=600)).load("test", R)


def lookup_generator(reference: CaptionedImages, image_of=lambda row, ref: ref.images[row], rephrased=True):
    """``generate`` that answers each caption with ``image_of(row)`` of a reference image it describes;
    ``rephrased=False``: it knows only the training phrasings and answers any other caption with image 0."""
    table = {}
    for row in range(len(reference)):
        extra = reference.extra_caption_ids.get(HELD_OUT_PHRASINGS)
        held_out = extra[row].tolist() if rephrased and extra is not None else []
        for caption in reference.captions_of(row) + [reference.captions[i] for i in held_out]:
            table.setdefault(caption, row)
    calls = []

    def generate(captions):
        calls.append(len(captions))
        return torch.stack([image_of(table.get(c, 0), reference) for c in captions])

    generate.calls = calls
    return generate


def constant_generator(image):
    return lambda captions: image.expand(len(captions), *image.shape).clone()


def metric(cache_dir, n=300) -> ShapesAccuracy:
    return ShapesAccuracy(ShapesAccuracyConfig(n=n, cache_dir=str(cache_dir)))


# -- the reader --------------------------------------------------------------------------------------
def test_reader_reads_real_test_images(cache_dir):
    reader = load_reader(R, cache_dir=cache_dir)
    test = Shapes(ShapesConfig(train_size=1, test_size=2000, seed=7)).load("test", R)  # not its validation
    predicted = reader.predict(test.images)
    for name in ATTRIBUTES:
        accuracy = (predicted[name] == test.attributes[name]).double().mean().item()
        assert accuracy >= 0.99, (name, accuracy)
        assert reader.info["val_accuracy"][name] >= 0.99


def test_reader_is_cached_and_reused(cache_dir, reference, monkeypatch):
    first = load_reader(R, cache_dir=cache_dir)
    monkeypatch.setattr(shapes_reader, "train_reader", lambda *a, **k: pytest.fail("trained again, not read"))
    second = load_reader(R, cache_dir=cache_dir)
    assert second.info["file"] == reader_path(R, cache_dir).name
    assert re.fullmatch(r"shapes-reader-32px-v\d+-[0-9a-f]{16}\.safetensors", second.info["file"])
    assert second.info["sha256"] == first.info["sha256"]
    a, b = first.predict(reference.images), second.predict(reference.images)
    assert all(torch.equal(a[name], b[name]) for name in ATTRIBUTES)


def test_corrupt_reader_file_is_retrained(cache_dir, tmp_path, monkeypatch):
    path = reader_path(R, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(reader_path(R, cache_dir).read_bytes()[:1000])  # truncated
    calls = []
    quick = functools.partial(shapes_reader.train_reader, steps=2)
    monkeypatch.setattr(shapes_reader, "train_reader", lambda r: calls.append(r) or quick(r))
    reader = load_reader(R, cache_dir=tmp_path)
    assert calls == [R]
    assert reader.info["file"] == path.name
    assert shapes_reader._read(path, R) is None  # a 2-step recipe is not the default one: not taken for it
    assert path.stat().st_size > 1000 and not list(path.parent.glob("*.tmp"))


def test_reader_training_is_deterministic():
    a = shapes_reader.train_reader(R, steps=3)
    b = shapes_reader.train_reader(R, steps=3)
    assert a.info["sha256"] == b.info["sha256"]
    assert shapes_reader.train_reader(R, steps=3, seed=1).info["sha256"] != a.info["sha256"]


# -- shapes_accuracy ---------------------------------------------------------------------------------
def test_oracle_generator_scores_like_real_images(cache_dir, reference):
    generate = lookup_generator(reference)
    results = metric(cache_dir).evaluate(generate, reference)
    assert generate.calls == [250, 50, 250, 50]  # chunks: training phrasings, then held-out phrasings
    for name in (*ATTRIBUTES, "mean"):
        for suffix in ("", "/seen", "/unseen", "/rephrased", "/real"):
            assert results[f"shapes_accuracy/{name}{suffix}"] >= 0.99, (name, suffix)
        assert results[f"shapes_accuracy/{name}"] == results[f"shapes_accuracy/{name}/real"]
    assert HELD_OUT_PHRASINGS in results["protocol"]["rephrased"]


def test_a_generator_that_knows_only_training_phrasings_fails_rephrased(cache_dir, reference):
    results = metric(cache_dir).evaluate(lookup_generator(reference, rephrased=False), reference)
    assert results["shapes_accuracy/mean"] >= 0.99
    assert results["shapes_accuracy/position/rephrased"] <= 0.3  # one image (row 0) for every new wording
    assert results["shapes_accuracy/mean/rephrased"] <= 0.6


def test_a_split_without_held_out_phrasings_has_no_rephrased_keys(cache_dir, reference):
    v1 = dataclasses.replace(reference, extra_caption_ids={})
    results = metric(cache_dir, n=50).evaluate(lookup_generator(reference), v1)
    assert not [k for k in results if k.endswith("/rephrased")]
    assert results["protocol"]["rephrased"].startswith("not measured")


def test_constant_generator_scores_near_chance(cache_dir, reference):
    results = metric(cache_dir).evaluate(constant_generator(reference.images[0]), reference)
    assert results["shapes_accuracy/shape"] <= 0.4
    assert results["shapes_accuracy/colour"] <= 0.3
    assert results["shapes_accuracy/position"] <= 0.3
    assert results["shapes_accuracy/shape/real"] >= 0.99


def test_right_colour_wrong_shape(cache_dir, reference):
    def circle_in_the_centre(row, ref):
        colour = ref.attribute_values["colour"][int(ref.attributes["colour"][row])]
        return torch.from_numpy(render("circle", colour, "black", "large", "center", R))

    results = metric(cache_dir).evaluate(lookup_generator(reference, circle_in_the_centre), reference)
    assert results["shapes_accuracy/colour"] >= 0.98
    assert 0.15 <= results["shapes_accuracy/shape"] <= 0.35
    assert results["shapes_accuracy/position"] <= 0.2
    assert results["shapes_accuracy/size"] <= 0.65


def test_protocol_names_sample_and_reader(cache_dir, reference):
    results = metric(cache_dir, n=20).evaluate(lookup_generator(reference), reference)
    p = results["protocol"]
    assert (p["n"], p["seed"], p["resolution"], p["reference"]["size"]) == (20, 0, R, len(reference))
    assert p["n_seen"] + p["n_unseen"] == 20
    assert p["reader"]["file"] == reader_path(R, cache_dir).name
    assert re.fullmatch(r"[0-9a-f]{64}", p["reader"]["sha256"])
    assert set(p["reader"]["val_accuracy"]) == set(ATTRIBUTES)
    assert all(isinstance(v, float) for k, v in results.items() if k != "protocol")


def test_same_seed_same_sample(cache_dir, reference):
    seen = []
    for _ in range(2):
        generate = lookup_generator(reference)
        calls = []
        wrapped = lambda captions, g=generate: calls.append(list(captions)) or g(captions)  # noqa: E731
        metric(cache_dir, n=10).evaluate(wrapped, reference)
        seen.append(calls)  # training phrasings, then held-out phrasings
    assert seen[0] == seen[1] and len(seen[0]) == 2 and all(len(set(c)) == 10 for c in seen[0])


def test_shapes_accuracy_refuses_other_data(cache_dir):
    other = CaptionedImages(
        images=torch.zeros(4, R, R, 3, dtype=torch.uint8),
        captions=["a", "b"],
        caption_ids=torch.tensor([[0], [1], [0], [1]]),
        caption_counts=torch.ones(4, dtype=torch.int64),
        info={"name": "birds"},
    )
    with pytest.raises(UsageError, match="shapes_accuracy needs the built-in shapes data set"):
        metric(cache_dir).evaluate(constant_generator(other.images[0]), other)


def test_generate_must_return_uint8_images(cache_dir, reference):
    with pytest.raises(ValueError, match="uint8"):
        metric(cache_dir, n=4).evaluate(lambda captions: torch.zeros(len(captions), 3, R, R), reference)


# -- diversity ---------------------------------------------------------------------------------------
def diversity(**options) -> Diversity:
    return Diversity(DiversityConfig(**{"n_captions": 20, "per_caption": 4, **options}))


def test_constant_generator_collapses(reference):
    results = diversity().evaluate(constant_generator(reference.images[0]), reference)
    assert results["diversity/collapse_score"] < 0.01
    assert results["diversity/within_caption"] < 1e-6
    assert results["diversity/real_between_captions"] > 0.1


def test_oracle_generator_is_healthy(reference):
    results = diversity().evaluate(lookup_generator(reference), reference)
    assert results["diversity/collapse_score"] == pytest.approx(1.0, abs=0.02)
    assert results["diversity/within_caption"] < 1e-6  # real Shapes images of one caption are identical
    if "diversity/real_within_caption" in results:
        assert results["diversity/real_within_caption"] < 1e-6
    p = results["protocol"]
    assert (p["n_captions"], p["per_caption"], p["seed"]) == (20, 4, 0)


def test_noise_per_image_shows_within_caption(reference):
    gen = torch.Generator().manual_seed(0)

    def noisy(row, ref):
        noise = torch.randint(-20, 21, ref.images[row].shape, generator=gen)
        return (ref.images[row].int() + noise).clamp(0, 255).to(torch.uint8)

    results = diversity().evaluate(lookup_generator(reference, noisy), reference)
    assert results["diversity/within_caption"] > 0.02
    assert results["diversity/collapse_score"] > 0.9


def test_diversity_needs_no_attributes():
    images = torch.stack([torch.full((R, R, 3), v, dtype=torch.uint8) for v in (0, 255, 0, 255)])
    ids = torch.tensor([[0], [1], [0], [1]])
    other = CaptionedImages(images, ["dark", "light"], ids, torch.ones(4, dtype=torch.int64))
    results = diversity(n_captions=5).evaluate(lookup_generator(other), other)
    assert results["protocol"]["n_captions"] == 2
    assert results["diversity/collapse_score"] == pytest.approx(1.0)
    assert results["diversity/real_within_caption"] == 0.0


# -- registration ------------------------------------------------------------------------------------
def test_metrics_are_registered():
    from t2i.builtins import metrics as builtin_metrics

    if "shapes_accuracy" not in plugins.registry("metrics"):  # until the core lists the module itself
        plugins.register_plugin(builtin_metrics, name="t2i-builtin-metrics-test")
    reg = plugins.registry("metrics")
    made = reg.create("shapes_accuracy", {"n": 5})
    assert isinstance(made, ShapesAccuracy) and made.cfg.n == 5
    assert isinstance(reg.create("diversity", {"per_caption": 3}), Diversity)
    assert {row[0] for row in reg.describe("diversity")["fields"]} == {"n_captions", "per_caption", "seed"}
