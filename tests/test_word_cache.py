"""The disk cache of a frozen encoder's word features (t2i.text.cache.cached_word_features), and how the
caption table uses it: a second build reads the file instead of encoding, a damaged file is recomputed,
the features are the fresh ones in float16, and the size caps ($T2I_WORD_CACHE_MB on the device,
$T2I_WORD_DISK_CACHE_MB on disk and in host memory) decide where the table lives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from t2i.engine.captions import CaptionTable
from t2i.text.bow import BagOfWords, BagOfWordsConfig
from t2i.text.cache import cached_word_features

CAPTIONS = ["a red circle", "a big blue square on the left", "", "green", "a small red triangle"]
KEY = {"data": "unit", "split": "train", "encoder": "slow_bow"}
IDS = torch.tensor([1, 4, 2])


class SlowBow(BagOfWords):
    """A frozen bag of words that asks for the disk cache (as CLIP does) and counts its word passes."""

    cache_embeddings = True

    def __init__(self, cfg=None):
        super().__init__(cfg or BagOfWordsConfig(dim=6))
        self.word_calls = 0

    def forward_words(self, tokens):
        self.word_calls += 1
        return super().forward_words(tokens)


@pytest.fixture
def enc(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    encoder = SlowBow()
    encoder.fit(CAPTIONS)
    return encoder


def word_files(root: Path) -> list[Path]:
    return sorted((root / "words").glob("*.safetensors"))


def build(enc: SlowBow) -> CaptionTable:
    return CaptionTable(enc, CAPTIONS, torch.device("cpu"), KEY)


def test_a_second_build_reads_the_words_from_disk(enc, tmp_path):
    text, words = build(enc).with_words(IDS)
    assert enc.word_calls >= 1 and len(word_files(tmp_path)) == 1
    enc.word_calls = 0
    table = build(enc)
    text2, words2 = table.with_words(IDS)
    assert enc.word_calls == 0, "the second build encoded the captions again"
    assert table.word_table.features.dtype == torch.float16 and table.word_table.mask.dtype == torch.bool
    assert torch.equal(text, text2) and torch.equal(words.features, words2.features) and torch.equal(words.mask, words2.mask)
    # the fresh features, rounded to float16 (the table's L is the longest caption: 6 words here)
    _, fresh = SlowBow.forward_words(enc, enc.tokenize([CAPTIONS[i] for i in IDS]))
    assert torch.equal(words2.mask, fresh.mask)
    assert torch.equal(words2.features, fresh.features.half().float())
    assert torch.allclose(words2.features, fresh.features, atol=1e-2)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "values", "shape"])
def test_a_damaged_word_file_is_recomputed(enc, tmp_path, damage):
    _, good = build(enc).with_words(IDS)
    (path,) = word_files(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta, features, mask = f.metadata(), f.get_tensor("features"), f.get_tensor("mask")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 64)
    elif damage == "values":  # same metadata, other numbers
        save_file({"features": features + 1, "mask": mask}, str(path), metadata=meta)
    else:  # a mask one token short of the features
        save_file({"features": features, "mask": mask[:, :-1].contiguous()}, str(path), metadata=meta)
    enc.word_calls = 0
    _, words = build(enc).with_words(IDS)
    assert enc.word_calls >= 1, "a damaged cache file was reused"
    assert torch.equal(words.features, good.features) and torch.equal(words.mask, good.mask)
    enc.word_calls = 0
    build(enc).with_words(IDS)
    assert enc.word_calls == 0  # the file was written again


def test_the_key_holds_the_length_and_the_weights(enc, tmp_path):
    tokens = enc.tokenize(CAPTIONS)
    a = cached_word_features(enc, CAPTIONS, KEY, tokens)
    cached_word_features(enc, CAPTIONS, KEY, tokens[:, :3])  # a shorter maximum length: another table
    assert len(word_files(tmp_path)) == 2
    with torch.no_grad():
        enc.embedding.weight.add_(1.0)  # other weights: another file, other features
    b = cached_word_features(enc, CAPTIONS, KEY, tokens)
    assert len(word_files(tmp_path)) == 3 and not torch.equal(a.features, b.features)
    enc.trainable = True
    with pytest.raises(ValueError, match="frozen text encoder"):
        cached_word_features(enc, CAPTIONS, KEY, tokens)


def test_the_caps_decide_device_host_or_per_batch(enc, tmp_path, monkeypatch):
    # above the device budget, within the disk cap: read from disk, kept in host memory
    monkeypatch.setenv("T2I_WORD_CACHE_MB", "0")
    table = build(enc)
    _, words = table.with_words(IDS)
    assert table.words_cached and table.word_table is not None and len(word_files(tmp_path)) == 1
    # above both: nothing written, recomputed per batch
    monkeypatch.setenv("T2I_WORD_DISK_CACHE_MB", "0")
    (tmp_path / "words").rename(tmp_path / "old")
    enc.word_calls = 0
    table = build(enc)
    _, again = table.with_words(IDS)
    table.with_words(IDS)
    assert table.words_cached is False and table.word_table is None and not word_files(tmp_path)
    assert enc.word_calls == 2 and torch.allclose(again.features, words.features, atol=1e-2)
    # no key (a caller that names nothing to cache under): never on disk
    monkeypatch.delenv("T2I_WORD_CACHE_MB")
    monkeypatch.delenv("T2I_WORD_DISK_CACHE_MB")
    table = CaptionTable(enc, CAPTIONS, torch.device("cpu"))
    table.with_words(IDS)
    assert table.words_cached and not word_files(tmp_path)
