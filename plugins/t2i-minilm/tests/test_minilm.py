"""t2i-minilm: real all-MiniLM-L6-v2 embeddings on CPU (the model is bundled, nothing is downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import t2i
from t2i.errors import UsageError
from t2i_minilm import MiniLMConfig, MiniLMEncoder

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from t2i_test_helpers import TINY  # noqa: E402  (the repository's tiny experiment configs)

CAPTIONS = ["a small bird with a red head", "a little bird whose head is red", "a large blue truck on a road"]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_embeddings_are_384d_normalised_and_deterministic(encoder):
    assert encoder.dim == 384 and encoder.trainable is False
    tokens = encoder.tokenize(CAPTIONS)
    assert tokens.shape[:2] == (3, 2) and tokens.dtype == torch.long  # token ids and attention mask
    emb = encoder(tokens)
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(encoder.encode(CAPTIONS), emb)
    model = encoder._loaded().model
    expected = model.encode(CAPTIONS, convert_to_tensor=True, normalize_embeddings=True).cpu()
    assert torch.allclose(emb, expected, atol=1e-6)
    again = encoder(encoder.tokenize(CAPTIONS[::-1]))
    assert torch.allclose(again, emb.flip(0), atol=1e-5)  # rows do not depend on the batch
    assert list(encoder.state_dict()) == []  # the frozen model is not in checkpoints
    assert encoder(encoder.tokenize([])).shape == (0, 384)


def test_word_features_are_the_token_embeddings_before_pooling(encoder):
    from t2i.testing.text import _check_words

    tokens = encoder.tokenize(CAPTIONS + [""])
    sentence, words = encoder.forward_words(tokens)
    assert encoder.word_dim == 384 and torch.equal(sentence, encoder(tokens))
    lengths = tokens[:, 1].sum(1)  # the tokenizer's attention mask: [CLS] words [SEP]
    assert words.mask.sum(1).tolist() == lengths.tolist() and lengths[-1] == 2
    assert words.features.shape == (4, int(lengths.max()), 384) and torch.all(words.features[~words.mask] == 0)
    # all-MiniLM-L6-v2 mean-pools its token embeddings, then normalises: the words give back the sentence
    mean = (words.features * words.mask[..., None]).sum(1) / lengths[:, None]
    assert torch.allclose(torch.nn.functional.normalize(mean, dim=-1), sentence, atol=1e-5)
    # padding invariance: a caption alone (no padding) has the same words as in the padded batch
    _, alone = encoder.forward_words(encoder.tokenize(CAPTIONS[2:3]))
    n = int(lengths[2])
    assert torch.allclose(alone.features[0, :n], words.features[2, :n], atol=1e-4)
    _check_words(encoder, CAPTIONS + ["a fourth caption here"])  # the kit's word check


def test_paraphrases_are_closer_than_other_captions(encoder):
    e = encoder.encode(CAPTIONS)
    same, other = float(e[0] @ e[1]), max(float(e[0] @ e[2]), float(e[1] @ e[2]))
    assert same > other + 0.2, (same, other)


def test_normalize_false_is_the_models_own_output(encoder):
    raw = MiniLMEncoder(MiniLMConfig(normalize=False))
    expected = raw._loaded().model.encode(CAPTIONS[:1], convert_to_tensor=True).float().cpu()
    assert torch.equal(raw.encode(CAPTIONS[:1]), expected)  # all-MiniLM-L6-v2 ends in a Normalize module anyway


def test_extra_state_names_the_weights(encoder):
    state = encoder.extra_state()
    assert state["model"] == "all-MiniLM-L6-v2" and len(state["weights_sha256"]) == 64
    encoder.load_extra_state(state)
    encoder.load_extra_state({})  # checkpoints without it are accepted
    with pytest.raises(UsageError, match="other weights"):
        encoder.load_extra_state({**state, "weights_sha256": "0" * 64})


def test_a_local_folder_loads_like_the_bundled_model(encoder, tmp_path):
    encoder._loaded().model.save(str(tmp_path / "copy"))
    other = MiniLMEncoder(MiniLMConfig(model=str(tmp_path / "copy")))
    assert other.dim == 384 and other.weights_sha256 == encoder.weights_sha256
    assert torch.allclose(other.encode(CAPTIONS), encoder.encode(CAPTIONS), atol=1e-5)


def test_a_model_not_available_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty Hugging Face cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"'no-such-org/no-such-model' is not available offline.*-T model=") as err:
        MiniLMEncoder(MiniLMConfig(model="no-such-org/no-such-model"))
    assert "\n" not in str(err.value)


def test_registered_through_t2i():
    reg = t2i.registry("text_encoders")
    assert reg.owner("minilm").startswith("t2i-minilm")
    assert {row[0] for row in reg.describe("minilm")["fields"]} == {"model", "normalize", "device"}
    assert isinstance(reg.create("minilm", {"normalize": "true"}), MiniLMEncoder)


def test_conformance():
    from t2i.testing import check_text_encoder

    check_text_encoder("minilm")


def test_two_step_training_run(tmp_path):
    from t2i.config import merge, resolve
    from t2i.engine.trainer import Trainer

    raw = merge(TINY, {"train": {"steps": 2, "checkpoint_every": 0}})
    raw["text_encoder"] = {"name": "minilm", "options": {}}  # TINY's bow options (dim=16) do not apply
    trainer = Trainer(resolve(raw), tmp_path / "run", quiet=True, tensorboard=False)
    assert trainer.captions.table.shape[1] == 384 and trainer.G.text_dim == 384
    trainer.fit()
    assert trainer.step == 2
    assert list((tmp_path / "run" / "checkpoints").iterdir())  # saved at the end, extra_state included
