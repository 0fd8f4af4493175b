"""The core's ``precomputed`` text encoder and the embedding cache (files written by the tests, CPU only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import t2i
from data_fixtures import build_twice_at_once
from t2i.errors import UsageError
from t2i.text.bow import BagOfWords, BagOfWordsConfig
from t2i.text.cache import cached_embeddings, encoder_fingerprint
from t2i.text.precomputed import Precomputed, PrecomputedConfig

CAPTIONS = ["a red circle", "a blue square", "a green triangle on a white background"]
EMB = torch.arange(3 * 5, dtype=torch.float32).reshape(3, 5) / 10


def write(path, captions=CAPTIONS, emb=EMB):
    """Write ``captions`` / ``emb`` in the format ``path``'s suffix names."""
    if path.suffix in (".pt", ".pth"):
        torch.save({"captions": list(captions), "embeddings": emb}, path)
    elif path.suffix == ".npz":
        np.savez(path, captions=np.array(captions), embeddings=emb.numpy())
    else:
        np.save(path, emb.numpy())
        path.with_suffix(".txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return path


# -- precomputed -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".npz", ".npy"])
def test_precomputed_reads_each_format(tmp_path, suffix):
    enc = t2i.registry("text_encoders").create("precomputed", {"path": str(write(tmp_path / f"e{suffix}"))})
    assert isinstance(enc, Precomputed) and enc.dim == 5 and enc.trainable is False
    tokens = enc.tokenize([CAPTIONS[2], CAPTIONS[0], CAPTIONS[2]])
    assert tokens.dtype == torch.float32 and torch.equal(tokens, EMB[[2, 0, 2]])
    assert torch.equal(enc(tokens), tokens) and torch.equal(enc.encode(CAPTIONS), EMB)
    assert list(enc.state_dict()) == []  # the table stays out of checkpoints


def test_precomputed_float64_and_duplicates(tmp_path):
    emb = torch.cat([EMB, -EMB[:1]]).double()
    enc = Precomputed(PrecomputedConfig(str(write(tmp_path / "e.pt", [*CAPTIONS, CAPTIONS[0]], emb))))
    assert enc.tokenize([CAPTIONS[0]]).dtype == torch.float32
    assert torch.equal(enc.tokenize([CAPTIONS[0]]), EMB[:1])  # the first row of a repeated caption


def test_precomputed_needs_a_path():
    with pytest.raises(ValueError, match=r"needs -T path=FILE"):
        PrecomputedConfig()
    with pytest.raises(UsageError, match=r"text encoder 'precomputed': precomputed text encoder needs -T path=FILE"):
        t2i.registry("text_encoders").make_config("precomputed", {})


def test_unknown_caption_names_it_and_the_file(tmp_path):
    path = write(tmp_path / "e.pt")
    enc = Precomputed(PrecomputedConfig(str(path)))
    long = "a very long caption " * 10
    with pytest.raises(UsageError, match=r"caption 'a very long caption .*\.\.\.' is not in the precomputed embeddings") as err:
        enc.tokenize([CAPTIONS[0], long])
    assert str(path) in str(err.value) and len(repr(long[:57])) + 3 < len(str(err.value))
    assert long not in str(err.value)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.with_suffix(".pt"), "no such file"),
        (lambda p: (p.with_suffix(".csv").write_text("x"), p.with_suffix(".csv"))[1], "unsupported suffix"),
        (lambda p: (torch.save({"emb": EMB}, p.with_suffix(".pt")), p.with_suffix(".pt"))[1], "a dict with 'captions'"),
        (lambda p: write(p.with_suffix(".pt"), CAPTIONS[:2]), r"2 captions but embeddings of shape \(3, 5\)"),
        (lambda p: write(p.with_suffix(".pt"), CAPTIONS, EMB[0]), "2-d float"),
        (lambda p: (np.save(p.with_suffix(".npy"), EMB.numpy()), p.with_suffix(".npy"))[1], r"e\.txt is not beside it"),
        (lambda p: (p.with_suffix(".pt").write_bytes(b"garbage"), p.with_suffix(".pt"))[1], "cannot read it"),
    ],
    ids=["missing", "suffix", "keys", "count", "1d", "npy-without-txt", "garbage"],
)
def test_bad_files_are_usage_errors(tmp_path, make, match):
    path = make(tmp_path / "e")
    with pytest.raises(UsageError, match=match):
        Precomputed(PrecomputedConfig(str(path)))


def test_checkpoint_state_refuses_a_changed_file(tmp_path):
    path = write(tmp_path / "e.pt")
    state = json.loads(json.dumps(Precomputed(PrecomputedConfig(str(path))).extra_state()))
    Precomputed(PrecomputedConfig(str(path))).load_extra_state(state)
    write(path, CAPTIONS, EMB + 1)
    with pytest.raises(UsageError, match="differ from the file the checkpoint was made with"):
        Precomputed(PrecomputedConfig(str(path))).load_extra_state(state)


def test_precomputed_conforms(tmp_path):
    """The kit's check, with a file that also holds the kit's 'unseen' captions (any other caption is an error)."""
    from t2i.testing import check_text_encoder
    from t2i.testing.text import _CAPTIONS

    captions = [*_CAPTIONS, "zyxwv qwerty", ""]
    emb = torch.randn(len(captions), 8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "kit.pt"
    torch.save({"captions": captions, "embeddings": emb}, path)
    check_text_encoder("precomputed", {"path": str(path)})


# -- the embedding cache --------------------------------------------------------------------------------

KEY = {"data": "shapes {'train_size': 16}", "split": "train", "encoder": "bow {'dim': 8}"}


def bow(seed=0):
    torch.manual_seed(seed)
    enc = BagOfWords(BagOfWordsConfig(dim=8))
    enc.fit(CAPTIONS)
    return enc


def files(tmp_path):
    return sorted((tmp_path / "embeddings").glob("*.safetensors"))


def test_second_call_loads_from_disk(tmp_path, monkeypatch):
    enc = bow()
    first = cached_embeddings(enc, CAPTIONS, KEY, tmp_path)
    assert first.dtype == torch.float32 and first.shape == (3, 8)
    assert torch.allclose(first, enc.encode(CAPTIONS))
    (path,) = files(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["key"]) == KEY and meta["count"] == "3" and meta["encoder_sha256"] == encoder_fingerprint(enc)

    def boom(*args, **kwargs):
        raise AssertionError("the encoder ran although the cache holds its embeddings")

    monkeypatch.setattr(enc, "forward", boom)
    assert torch.equal(cached_embeddings(enc, CAPTIONS, KEY, tmp_path), first)
    assert list(tmp_path.glob("embeddings/*.tmp")) == []


def test_two_callers_asking_at_once_encode_once(tmp_path):
    import t2i.text.cache

    enc = bow()
    (a, b), builds = build_twice_at_once(lambda: cached_embeddings(enc, CAPTIONS, KEY, tmp_path), t2i.text.cache, "_compute")
    assert builds == 1 and torch.equal(a, b) and len(files(tmp_path)) == 1


def test_env_var_names_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path))
    cached_embeddings(bow(), CAPTIONS, KEY)
    assert len(files(tmp_path)) == 1


def test_other_weights_key_or_captions_get_another_file(tmp_path):
    a = cached_embeddings(bow(0), CAPTIONS, KEY, tmp_path)
    b = cached_embeddings(bow(1), CAPTIONS, KEY, tmp_path)  # same vocabulary, other random weights
    assert not torch.allclose(a, b) and len(files(tmp_path)) == 2
    other = bow(0)
    other.fit(CAPTIONS[:2])  # other vocabulary (extra_state), its weights also change
    cached_embeddings(other, CAPTIONS, KEY, tmp_path)
    cached_embeddings(bow(0), CAPTIONS, {**KEY, "split": "test"}, tmp_path)
    cached_embeddings(bow(0), CAPTIONS[::-1], KEY, tmp_path)
    assert len(files(tmp_path)) == 5


@pytest.mark.parametrize("damage", ["truncate", "garbage", "count", "fingerprint", "values"])
def test_a_damaged_file_is_recomputed(tmp_path, monkeypatch, damage):
    enc = bow()
    good = cached_embeddings(enc, CAPTIONS, KEY, tmp_path)
    (path,) = files(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta, table = f.metadata(), f.get_tensor("embeddings")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 64)
    elif damage == "count":
        save_file({"embeddings": table[:2]}, path, metadata={**meta, "count": "2"})
    elif damage == "fingerprint":
        save_file({"embeddings": table * 0}, path, metadata={**meta, "encoder_sha256": "0" * 64})
    else:  # same metadata, other numbers
        save_file({"embeddings": table + 1}, path, metadata=meta)
    calls = []
    forward = enc.forward
    monkeypatch.setattr(enc, "forward", lambda tokens: calls.append(1) or forward(tokens))
    assert torch.equal(cached_embeddings(enc, CAPTIONS, KEY, tmp_path), good)
    assert calls, "a damaged cache file was reused"
    calls.clear()
    assert torch.equal(cached_embeddings(enc, CAPTIONS, KEY, tmp_path), good) and not calls  # rewritten


def test_chunks_eval_mode_and_frozen_only(tmp_path):
    enc = bow().train()
    out = cached_embeddings(enc, CAPTIONS, KEY, tmp_path, chunk=2)
    assert torch.allclose(out, enc.encode(CAPTIONS)) and enc.training
    assert cached_embeddings(enc, [], KEY, tmp_path).shape == (0, 8)
    trainable = BagOfWords(BagOfWordsConfig(dim=8, trainable=True))
    with pytest.raises(ValueError, match="frozen"):
        cached_embeddings(trainable, CAPTIONS, KEY, tmp_path)


def test_engine_caches_embeddings_of_slow_frozen_encoders(tmp_path, monkeypatch):
    """An encoder that declares cache_embeddings is run once per data set; the second run reads the file."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from t2i_test_helpers import tiny_config

    from t2i.engine.trainer import Trainer
    from t2i.text.bow import BagOfWords

    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(BagOfWords, "cache_embeddings", True)
    Trainer(tiny_config(train={"steps": 1, "checkpoint_every": 0}), tmp_path / "a", quiet=True, tensorboard=False)
    files = list((tmp_path / "cache" / "embeddings").glob("*.safetensors"))
    assert len(files) == 1

    def refuse(self, tokens):
        raise AssertionError("the encoder ran again instead of the cache being read")

    monkeypatch.setattr(BagOfWords, "forward", refuse)
    trainer = Trainer(tiny_config(train={"steps": 1, "checkpoint_every": 0}), tmp_path / "b", quiet=True, tensorboard=False)
    assert trainer.captions.frozen and trainer.captions.table.shape[1] == 16


# -- bow: consistency weighting --------------------------------------------------------------------------
def test_consistency_weights_words_by_how_an_images_captions_share_them():
    from t2i.text.bow import word_consistency

    captions = ["a red circle", "there is a red circle", "red circle painted", "a blue square"]
    ids = torch.tensor([[0, 1, 2], [3, -1, -1]])
    vocab = ["<pad>", "<unk>", "a", "red", "circle", "there", "painted", "blue", "square"]
    c = dict(zip(vocab, word_consistency(captions, ids, vocab)))
    assert c["red"] == c["circle"] == c["blue"] == 1.0  # every caption of its image says it
    assert c["there"] == c["painted"] == pytest.approx(1 / 3)
    assert c["a"] == pytest.approx((2 / 3 + 1) / 2)  # image 0: 2 of 3 captions; image 1: its only caption
    assert c["<unk>"] == 1.0


def test_consistency_weighted_bow_ignores_wording_and_round_trips(tmp_path):
    from t2i.data.shapes import HELD_OUT_PHRASINGS, Shapes, ShapesConfig
    from t2i.text.head import fit_encoder

    train = Shapes(ShapesConfig(train_size=2000, test_size=100)).load("train", 8)
    test = Shapes(ShapesConfig(train_size=2000, test_size=100)).load("test", 8)

    def held_out_distance(enc):  # held-out phrasings' distance to their image's training phrasings
        seen = torch.stack([enc.encode(test.captions_of(i)) for i in range(len(test))])
        held = torch.stack([enc.encode([test.captions[j] for j in test.extra_caption_ids[HELD_OUT_PHRASINGS][i]])
                            for i in range(len(test))])
        centre = seen.mean(1, keepdim=True)
        between = (centre[:, 0][:, None] - centre[:, 0][None]).norm(dim=-1).mean()
        return ((held - centre).norm(dim=-1).mean() / between).item()

    plain, weighted = BagOfWords(), BagOfWords(BagOfWordsConfig(consistency=4.0))
    fit_encoder(plain, train.captions, train.caption_ids)
    fit_encoder(weighted, train.captions, train.caption_ids)
    assert held_out_distance(weighted) < 0.4 * held_out_distance(plain)  # measured: 0.15 vs 0.65
    again = BagOfWords(BagOfWordsConfig(consistency=4.0))
    again.load_extra_state(weighted.extra_state())
    again.load_state_dict(weighted.state_dict())
    probe = test.captions[:5]
    assert torch.equal(again.encode(probe), weighted.encode(probe))
    fit_encoder(again, train.captions, None)  # no image grouping: the plain mean of the word vectors
    tokens = again.tokenize(probe)
    mean = again.embedding(tokens).sum(1) / (tokens != 0).sum(1, keepdim=True)
    assert torch.allclose(again(tokens), mean) and "consistency" not in again.extra_state()
