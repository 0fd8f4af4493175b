"""Caption augmentation (data.caption_variants, data.word_dropout, data.word_shuffle) and precision "auto"."""

from __future__ import annotations

import torch

from t2i import device as t2i_device
from t2i.data.caption_augment import augment_captions, caption_variant
from t2i.data.shapes import Shapes, ShapesConfig
from t2i.engine.components import build_components
from t2i.engine.optim import Precision
from t2i_test_helpers import tiny_config


def small_split():
    return Shapes(ShapesConfig(train_size=40, test_size=4)).load("train", 8)


def test_variants_drop_words_keep_the_rest_in_order_and_are_seeded():
    text = "a small red circle in the top left corner on a black background"
    a = caption_variant(text, 0, word_dropout=0.3, word_shuffle=False, seed=0)
    assert a == caption_variant(text, 0, word_dropout=0.3, word_shuffle=False, seed=0)
    assert a != caption_variant(text, 1, word_dropout=0.3, word_shuffle=False, seed=0)
    words = text.split()
    kept = iter(words)
    assert all(w in kept for w in a.split()) and len(a.split()) < len(words)  # a subsequence, shorter
    assert caption_variant("red", 0, word_dropout=0.99, word_shuffle=False, seed=0) == "red"  # never empty
    shuffled = caption_variant(text, 0, word_dropout=0.0, word_shuffle=True, seed=0)
    assert sorted(shuffled.split()) == sorted(words) and shuffled != text


def test_augmented_split_keeps_originals_and_adds_each_captions_variants():
    data = small_split()
    out = augment_captions(data, variants=2, word_dropout=0.25, word_shuffle=False, seed=3)
    assert out.captions[: len(data.captions)] == data.captions
    assert out.caption_ids.shape == (len(data), 9) and torch.equal(out.caption_counts, data.caption_counts * 3)
    for row in range(len(data)):
        own = data.captions_of(row)
        assert out.captions_of(row)[:3] == own
        variants = out.captions_of(row)[3:]
        assert len(variants) == 6 and all(set(v.split()) <= set(o.split()) for v, o in zip(variants, sum(([c, c] for c in own), [])))
    assert torch.equal(out.images, data.images) and out.info["caption_augment"]["variants"] == 2
    assert augment_captions(data, variants=0, word_dropout=0.5, word_shuffle=False, seed=0) is data


def test_training_draws_the_variants(tmp_path):
    cfg = tiny_config(data={"caption_variants": 1, "word_dropout": 0.3})
    parts = build_components(cfg)
    assert parts.train_split.caption_ids.shape[1] == 2 * 3
    assert len(parts.train_split.captions) > len(Shapes(ShapesConfig(train_size=256, test_size=64)).load("train", 32).captions)


def test_precision_auto_is_bf16_only_where_bf16_is_fast(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(t2i_device, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    p = Precision("auto", cpu)
    assert p.name == "bf16" and "AVX512-BF16" in p.reason
    monkeypatch.setattr(t2i_device, "cpu_bf16_flags", lambda: ())
    p = Precision("auto", cpu)
    assert p.name == "fp32" and "no AVX512-BF16" in p.reason
    assert Precision("bf16", cpu).name == "bf16"  # asked for: used even where it is slow
