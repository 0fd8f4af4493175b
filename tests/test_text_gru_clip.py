"""The ``gru`` and ``clip`` text encoders, GloVe initialisation (bow, gru) and the trainable text head:
conformance, that each trains or embeds as it says, and one-line errors. Files (GloVe, CLIP config and
weights) are written by the tests."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import t2i
from t2i.config import resolve
from t2i.engine.components import build_text_encoder
from t2i.errors import UsageError
from t2i.testing import check_text_encoder
from t2i.text.bow import UNK
from t2i.text.gru import GRUConfig, GRUEncoder
from t2i.text.head import HeadedTextEncoder

from t2i_test_helpers import tiny_config

COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "triangle"]
CAPTIONS = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
GLOVE = {"red": [1.0, 0.0, 0.5, 0.25], "blue": [0.0, 1.0, -0.5, 2.0], "circle": [3.0, 3.0, 3.0, 3.0]}
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture
def glove_file(tmp_path):
    path = tmp_path / "glove.test.4d.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in GLOVE.items()) + "zebra 9 9 9 9\n")
    return path


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    import open_clip

    from t2i.clip import _model_name

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "t2i-test-clip-text.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    torch.save(open_clip.create_model(_model_name(str(config))).state_dict(), folder / "weights.pt")
    return {"model": str(config), "weights": str(folder / "weights.pt")}


# -- gru ---------------------------------------------------------------------------------------------------


def test_gru_passes_the_conformance_kit():
    check_text_encoder("gru")


def test_gru_vocabulary_and_unknown_words():
    enc = GRUEncoder(GRUConfig(dim=8, word_dim=4, max_words=3, min_count=2))
    enc.fit(["a red circle", "a red square", "a blue circle"])
    assert enc.vocab == ["<pad>", UNK, "a", "circle", "red"]  # blue, square: seen once < min_count
    ids = enc.tokenize(["a zebra circle eats", "", "Red!"])
    unk = enc.index[UNK]
    assert ids.tolist() == [[2, unk, 3], [0, 0, 0], [4, 0, 0]]  # unseen -> <unk>, cut at 3 words, lower-cased
    assert torch.isfinite(enc(ids)).all() and enc(ids).shape == (3, 8)


def test_gru_trains_on_a_small_classification_task_under_bf16():
    """Which colour does the caption name? A linear probe on the GRU's embedding, trained jointly."""
    torch.manual_seed(0)
    enc = GRUEncoder(GRUConfig(dim=16, word_dim=8))
    enc.fit(CAPTIONS)
    probe = nn.Linear(16, len(COLOURS))
    tokens = enc.tokenize(CAPTIONS)
    labels = torch.tensor([COLOURS.index(c.split()[1]) for c in CAPTIONS])
    opt = torch.optim.Adam([*enc.parameters(), *probe.parameters()], lr=5e-2)
    losses = []
    for _ in range(15):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(probe(enc(tokens)).float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


def test_gru_trains_in_the_engine_with_ds_optimiser(tmp_path):
    from t2i.engine.trainer import Trainer

    cfg = tiny_config(text_encoder={"name": "gru", "options": {"dim": 16, "word_dim": 8}}, train={"steps": 2})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    before = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    assert trainer.fit().status == "finished"
    assert any(not torch.equal(before[k], v) for k, v in trainer.encoder.state_dict().items() if k.startswith("gru."))


# -- GloVe -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", [("bow", {"dim": 4}), ("gru", {"dim": 8, "word_dim": 4})])
def test_glove_copies_the_vectors_and_reports_coverage(glove_file, name, options):
    enc = t2i.registry("text_encoders").create(name, {**options, "glove": str(glove_file)})
    enc.fit(["a red circle", "a blue square"])
    for word, vector in GLOVE.items():
        assert torch.equal(enc.embedding.weight[enc.index[word]].detach(), torch.tensor(vector))
    assert enc.embedding.weight[0].abs().sum() == 0  # <pad> stays zero
    report = enc.extra_state()["glove"]
    assert report["found"] == 3 and report["words"] == 5 and report["coverage"] == 0.6  # "a", "square" missing


@pytest.mark.filterwarnings("ignore:GloVe")  # the kit's captions are mostly not in the tiny file
def test_glove_conformance_and_frozen_bow_is_the_mean_of_glove_vectors(glove_file):
    check_text_encoder("bow", {"dim": 4, "glove": str(glove_file)})
    enc = t2i.registry("text_encoders").create("bow", {"dim": 4, "glove": str(glove_file)})
    enc.fit(["red blue circle"])
    expected = torch.tensor([GLOVE["red"], GLOVE["blue"], GLOVE["circle"]]).mean(0)
    assert torch.allclose(enc.encode(["red blue circle"])[0], expected)


def test_glove_errors(glove_file, tmp_path):
    enc = t2i.registry("text_encoders").create("bow", {"dim": 8, "glove": str(glove_file)})
    with pytest.raises(UsageError, match="has 4-d vectors but the encoder's word vectors are 8-d"):
        enc.fit(CAPTIONS)
    enc = t2i.registry("text_encoders").create("gru", {"dim": 8, "word_dim": 4, "glove": str(tmp_path / "nope.txt")})
    with pytest.raises(UsageError, match=r"GloVe file .*nope\.txt does not exist"):
        enc.fit(CAPTIONS)


def test_glove_with_low_coverage_warns(glove_file):
    enc = t2i.registry("text_encoders").create("bow", {"dim": 4, "glove": str(glove_file)})
    with pytest.warns(UserWarning, match="1 of 4 words"):
        enc.fit(["the green red triangle"])


# -- clip --------------------------------------------------------------------------------------------------


def test_clip_embeddings_match_the_bundle_and_pass_the_kit(clip_files):
    from t2i.clip import load_clip

    enc = t2i.registry("text_encoders").create("clip", clip_files)
    assert enc.trainable is False and enc.cache_embeddings and enc.dim == 16 and list(enc.state_dict()) == []
    bundle = load_clip(clip_files["model"], weights=clip_files["weights"])
    assert torch.allclose(enc.encode(CAPTIONS[:3]), bundle.encode_text(CAPTIONS[:3]), atol=1e-6)
    check_text_encoder("clip", clip_files)


def test_clip_refuses_a_checkpoint_of_other_weights(clip_files, tmp_path):
    enc = t2i.registry("text_encoders").create("clip", clip_files)
    state = json.loads(json.dumps(enc.extra_state()))
    other = torch.load(clip_files["weights"], weights_only=True)
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in other.items()}
    torch.save(other, tmp_path / "other.pt")
    changed = t2i.registry("text_encoders").create("clip", {**clip_files, "weights": str(tmp_path / "other.pt")})
    with pytest.raises(UsageError, match="used other weights"):
        changed.load_extra_state(state)


def test_clip_missing_weights_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("T2I_OFFLINE", "1")
    monkeypatch.delenv("T2I_CLIP_WEIGHTS", raising=False)
    with pytest.raises(UsageError) as info:
        build_text_encoder(resolve({"text_encoder": {"name": "clip"}}))
    assert "\n" not in str(info.value) and "weights=PATH" in str(info.value)


# -- the head ------------------------------------------------------------------------------------------------


def test_mlp_head_changes_dims_and_trains_with_d(tmp_path):
    from t2i.engine.trainer import Trainer

    options = {"dim": 16, "trainable": False, "head": "mlp", "head_dim": 24}
    cfg = tiny_config(text_encoder={"name": "bow", "options": options}, train={"steps": 2})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    enc = trainer.encoder
    assert isinstance(enc, HeadedTextEncoder) and enc.dim == 24 and trainer.G.text_dim == 24
    assert [type(m).__name__ for m in enc.head] == ["Linear", "LayerNorm", "ReLU", "Dropout"]
    head_params = {id(p) for p in enc.head.parameters()}
    assert head_params <= {id(p) for p in trainer.nets.D_params}  # trained with D's optimiser
    assert not any(p.requires_grad for p in enc.base.parameters())  # the frozen bow stays frozen
    before = [p.detach().clone() for p in enc.head.parameters()]
    assert trainer.fit().status == "finished"
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.head.parameters()))
    saved = trainer.resolved.text_encoder.options
    assert saved["head"] == "mlp" and saved["head_dim"] == 24 and saved["dim"] == 16  # written back in full


def test_linear_head_on_a_trainable_encoder_and_bad_head_options():
    enc, full = build_text_encoder(resolve({"text_encoder": {"name": "gru", "options": {"dim": 8, "word_dim": 4, "head": "linear"}}}))
    enc.fit(CAPTIONS)
    assert isinstance(enc.head, nn.Linear) and enc.dim == 8 and full["head_dim"] == 0
    w = torch.randn(len(CAPTIONS), 8)
    (enc.encode(CAPTIONS) * w).sum().backward()
    assert enc.base.gru.weight_ih_l0.grad is not None and enc.head.weight.grad is not None
    with pytest.raises(UsageError, match="text encoder head: head"):
        build_text_encoder(resolve({"text_encoder": {"name": "bow", "options": {"head": "transformer"}}}))


def test_everything_is_listed():
    from typer.testing import CliRunner

    from t2i.cli.app import app

    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = {line.split("│")[2].strip() for line in result.output.splitlines() if line.count("│") >= 4}
    assert {"gru", "clip", "perceptual", "contrastive"} <= listed
