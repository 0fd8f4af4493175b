"""R-precision with AttnGAN/DM-GAN's released DAMSM encoders (``-M r_precision.encoder=damsm``).

The test writes the three files the authors release, with their key names and real layer shapes (random
weights, a tiny vocabulary): ``text_encoder.pth`` (RNN_ENCODER), ``image_encoder.pth`` (CNN_ENCODER, the full
Inception-v3 trunk, without BatchNorm counters as PyTorch 0.3 saved it) and ``captions.pickle`` (protocol 2:
``[train_captions, test_captions, ixtoword, wordtoix]``). It then checks the networks against the authors'
forward passes, the R-precision figure against a direct computation, the protocol block and the errors.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3

from t2i.data.source import record
from t2i.errors import UsageError
from t2i.metrics import seeded_caption, seeded_order
from t2i.metrics.build import build_metrics
from t2i.metrics.damsm import (
    DamsmImageEncoder,
    DamsmPair,
    DamsmTextEncoder,
    caption_ids,
    load_damsm_pair,
    load_text_encoder,
    load_image_encoder,
    parameter_counts,
    tokenize,
)
from t2i.metrics.retrieval import image_classes, mismatched_captions, scene_classes
from t2i.weights import file_sha256

WORDS = ["<end>", "this", "bird", "has", "a", "red", "crown", "and", "black", "wings", "small", "yellow", "belly",
         "white", "long", "beak", "blue", "tail", "short", "brown"]  # fmt: skip
HIDDEN = 128  # per direction: the authors' nhidden=256 halved


def authors_text_state(n_words: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """RNN_ENCODER's state dict: nn.Embedding(n_words, 300) and a bidirectional one-layer LSTM(300, 128)."""
    gen = torch.Generator().manual_seed(seed)
    state = {"encoder.weight": torch.rand(n_words, 300, generator=gen) * 0.2 - 0.1}
    for suffix in ("", "_reverse"):
        state[f"rnn.weight_ih_l0{suffix}"] = torch.randn(4 * HIDDEN, 300, generator=gen) * 0.1
        state[f"rnn.weight_hh_l0{suffix}"] = torch.randn(4 * HIDDEN, HIDDEN, generator=gen) * 0.1
        state[f"rnn.bias_ih_l0{suffix}"] = torch.randn(4 * HIDDEN, generator=gen) * 0.1
        state[f"rnn.bias_hh_l0{suffix}"] = torch.randn(4 * HIDDEN, generator=gen) * 0.1
    return state


def authors_image_state() -> dict[str, torch.Tensor]:
    """CNN_ENCODER's state dict: torchvision's Inception-v3 layers it keeps (no AuxLogits, no fc), emb_features
    (conv1x1 768 -> 256, no bias) and emb_cnn_code (linear 2048 -> 256); no num_batches_tracked (PyTorch 0.3)."""
    torch.manual_seed(0)
    trunk = Inception3(aux_logits=False, init_weights=False)
    state = {}
    for key, value in trunk.state_dict().items():
        if key.startswith(("Conv2d_", "Mixed_")) and not key.endswith("num_batches_tracked"):
            state[key] = value * 6**0.5 if key.endswith("conv.weight") else value  # He scale: no denormals
    gen = torch.Generator().manual_seed(1)
    state["emb_features.weight"] = torch.rand(256, 768, 1, 1, generator=gen) * 0.2 - 0.1
    state["emb_cnn_code.weight"] = torch.rand(256, 2048, generator=gen) * 0.2 - 0.1
    state["emb_cnn_code.bias"] = torch.rand(256, generator=gen) * 0.2 - 0.1
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damsm")
    wordtoix = {w: i for i, w in enumerate(WORDS)}
    ixtoword = {i: w for w, i in wordtoix.items()}
    paths = {"text": folder / "text_encoder200.pth", "image": folder / "image_encoder200.pth",
             "captions": folder / "captions.pickle"}  # fmt: skip
    torch.save(authors_text_state(len(WORDS)), paths["text"])
    image_state = authors_image_state()
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.running_var", "Mixed_6e.branch7x7dbl_5.conv.weight",
            "Mixed_7c.branch3x3dbl_3b.bn.bias", "emb_features.weight", "emb_cnn_code.bias"} <= set(image_state)  # fmt: skip
    torch.save(image_state, paths["image"])
    with open(paths["captions"], "wb") as fh:
        pickle.dump([[[1, 2, 3]], [[1, 2, 5]], ixtoword, wordtoix], fh, protocol=2)
    return paths


@pytest.fixture(scope="module")
def pair(files) -> DamsmPair:
    return load_damsm_pair(files["text"], files["image"], files["captions"])


def authors_sentence_embeddings(text_state: dict[str, torch.Tensor], ids: list[list[int]]) -> torch.Tensor:
    """RNN_ENCODER.forward as the authors run it: sort by length, pack, LSTM from zeros, hidden[0] -> (B, 256)."""
    embed = torch.nn.Embedding(len(WORDS), 300)
    lstm = torch.nn.LSTM(300, HIDDEN, 1, batch_first=True, bidirectional=True)
    embed.load_state_dict({"weight": text_state["encoder.weight"]})
    lstm.load_state_dict({k[len("rnn."):]: v for k, v in text_state.items() if k.startswith("rnn.")})
    lengths = torch.tensor([len(r) for r in ids])
    order = torch.sort(lengths, descending=True).indices
    padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for i, r in enumerate(ids):
        padded[i, : len(r)] = torch.tensor(r)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(embed(padded[order]), lengths[order].tolist(), batch_first=True)
        hidden = (torch.zeros(2, len(ids), HIDDEN), torch.zeros(2, len(ids), HIDDEN))
        _, (h_n, _) = lstm(packed, hidden)
        sent = h_n.transpose(0, 1).contiguous().view(-1, HIDDEN * 2)
    out = torch.empty_like(sent)
    out[order] = sent
    return out


# -- sizes, tokens ---------------------------------------------------------------------------------------------
def test_parameter_counts_for_the_authors_cub_encoders():
    """Vocabulary 5,450 (CUB), 300-d embedding, 128 hidden units per direction, 256-d codes."""
    counts = parameter_counts(DamsmTextEncoder(5450, 300, 128), DamsmImageEncoder(256))
    assert counts == {"text": 2_075_320, "image_trunk": 21_785_568, "image_heads": 721_152, "image": 22_506_720}


def test_tokens_and_word_ids_follow_attngans_datasets_py():
    assert tokenize("This bird has a RED crown, and black-wings!") == ["this", "bird", "has", "a", "red", "crown", "and", "black", "wings"]
    assert tokenize("a caf\u00e9\ufffd\ufffdbird") == ["a", "caf", "bird"]  # ASCII only; the U+FFFD pair splits words
    vocab = {w: i for i, w in enumerate(WORDS)}
    assert caption_ids("this purple bird", vocab, 18) == ([1, 2], 1)  # "purple" unknown: dropped, counted
    assert caption_ids("zzz qqq", vocab, 18) == ([0], 2)  # no known word: the lone <end>
    long = " ".join(WORDS[1:] * 2)  # 38 known words
    ids, _ = caption_ids(long, vocab, 18, seed=0)
    full = [vocab[w] for w in long.split()]
    assert len(ids) == 18 and ids == caption_ids(long, vocab, 18, seed=0)[0] != caption_ids(long, vocab, 18, seed=1)[0]
    it = iter(full)
    assert all(any(i == j for j in it) for i in ids)  # an ordered subset of the caption's words


# -- the networks against the authors' forward passes ------------------------------------------------------------
def test_text_encoder_equals_the_authors_rnn_encoder(files, pair):
    ids = [[1, 2, 3, 4, 5, 6], [1, 2], [7, 8, 9, 10, 11, 12, 13, 14], [15]]
    want = authors_sentence_embeddings(torch.load(files["text"], weights_only=True), ids)
    captions = [" ".join(WORDS[i] for i in r) for r in ids]
    torch.testing.assert_close(pair.encode_text(captions), F.normalize(want, dim=1), rtol=1e-5, atol=1e-6)


def test_image_encoder_equals_torchvisions_inception_with_the_authors_heads(files, pair):
    """torchvision's own Inception3 forward with fc = emb_cnn_code is CNN_ENCODER's global code; a hook on Mixed_6e
    gives its regions. Input: [-1, 1], nn.Upsample(299, bilinear, align_corners=True) as CNN_ENCODER does."""
    state = torch.load(files["image"], weights_only=True)
    net = Inception3(aux_logits=False, init_weights=False)
    net.fc = torch.nn.Linear(2048, 256)
    trunk = {k: v for k, v in state.items() if not k.startswith("emb_")}
    net.load_state_dict({**trunk, "fc.weight": state["emb_cnn_code.weight"], "fc.bias": state["emb_cnn_code.bias"]}, strict=False)
    regions = []
    net.Mixed_6e.register_forward_hook(lambda m, i, o: regions.append(o))
    image = torch.randint(0, 256, (1, 64, 64, 3), generator=torch.Generator().manual_seed(3)).to(torch.uint8)
    x = F.interpolate(image.permute(0, 3, 1, 2).float() / 127.5 - 1, size=(299, 299), mode="bilinear", align_corners=True)
    with torch.no_grad():
        code = net.eval()(x)
        want_regions = F.conv2d(regions[0], state["emb_features.weight"])
    got = []
    handle = pair.image.register_forward_hook(lambda m, i, o: got.append(o))
    try:
        embedding = pair.encode_images(image)
    finally:
        handle.remove()
    torch.testing.assert_close(embedding, F.normalize(code, dim=1), rtol=1e-4, atol=1e-5)
    assert got[0][0].shape == (1, 256, 17, 17)
    torch.testing.assert_close(got[0][0], want_regions, rtol=1e-4, atol=1e-4)


# -- R-precision through the metric --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def birds():
    """12 images of 4 'species' (CUB-style keys <class>/<name>), 2 captions each from the tiny vocabulary."""
    rng = np.random.default_rng(0)
    captions = [[" ".join(rng.choice(WORDS[1:], size=rng.integers(3, 9))) for _ in range(2)] for _ in range(12)]
    images = torch.from_numpy(rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    info = {"name": "tinybirds", "split": "test", "keys": [f"{i % 4:03d}.Species/bird_{i}" for i in range(12)]}
    return record(images, captions, info)


def cheap_image_codes(images: torch.Tensor) -> torch.Tensor:
    """A stand-in for the 299 px Inception (seconds per image on a CPU; checked above): a fixed projection."""
    projection = torch.randn(16 * 16 * 3, 256, generator=torch.Generator().manual_seed(5))
    return F.normalize(images.float().flatten(1) @ projection, dim=1)


def test_r_precision_with_damsm_equals_a_direct_computation(files, birds, monkeypatch):
    seen: dict[str, list] = {"images": [], "text": []}
    encode_text = DamsmPair.encode_text
    monkeypatch.setattr(DamsmPair, "encode_images", lambda self, images: seen["images"].append(cheap_image_codes(images)) or seen["images"][-1])
    monkeypatch.setattr(DamsmPair, "encode_text", lambda self, c: seen["text"].append((list(c), encode_text(self, c))) or seen["text"][-1][1])
    options = {"encoder": "damsm", "damsm_text_encoder": str(files["text"]), "damsm_image_encoder": str(files["image"]),
               "damsm_captions": str(files["captions"]), "n": "12", "negatives": "5", "folds": "3", "device": "cpu"}  # fmt: skip
    ((_, metric, _),) = build_metrics(["r_precision"], {"r_precision": options})
    flipped = lambda captions: torch.stack([birds.images[hash(c) % 12].flip(0) for c in captions])  # noqa: E731
    result = metric.evaluate(flipped, birds)

    # the same computation, spelled out: cosine of each image with its 1 + 5 candidates, a hit when the true one wins
    rows = seeded_order(12, 0)
    captions = seeded_caption(birds, rows, 0)
    true = np.array([birds.captions.index(c) for c in captions])
    candidates = np.concatenate([true[:, None], mismatched_captions(scene_classes(birds), true, 5, 0)], 1)
    (encoded, text), fake = seen["text"][0], seen["images"][-1]
    text = authors_sentence_embeddings(torch.load(files["text"], weights_only=True),
                                       [caption_ids(c, {w: i for i, w in enumerate(WORDS)}, 18)[0] for c in encoded])
    by_caption = dict(zip(encoded, text))
    torch.testing.assert_close(fake, cheap_image_codes(flipped(captions)))
    hits = []
    for i in range(12):
        scores = F.cosine_similarity(fake[i][None], torch.stack([by_caption[birds.captions[c]] for c in candidates[i]]))
        hits.append(float(scores.argmax() == 0))
    folds = [np.mean(hits[0:4]), np.mean(hits[4:8]), np.mean(hits[8:12])]
    assert result["r_precision"] == pytest.approx(np.mean(folds), abs=1e-12)
    assert result["r_precision/std"] == pytest.approx(np.std(folds), abs=1e-12)

    protocol = result["protocol"]
    assert (protocol["candidates"], protocol["negatives"], protocol["folds"], protocol["n"]) == (6, 5, 3, 12)
    assert {role: f["sha256"] for role, f in protocol["files"].items()} == {
        "text_encoder": file_sha256(files["text"]), "image_encoder": file_sha256(files["image"]),
        "captions": file_sha256(files["captions"])}  # fmt: skip
    assert protocol["parameters"]["text"] == len(WORDS) * 300 + 2 * (4 * HIDDEN * (300 + HIDDEN) + 8 * HIDDEN)
    assert protocol["words"] == 18 and protocol["vocabulary"] == len(WORDS) and protocol["mismatch"] == "scene"
    assert protocol["caption_counts"]["captions"] == len(encoded)


def test_dm_gan_protocol_class_negatives_and_30000_style_cycling(files, birds, monkeypatch):
    monkeypatch.setattr(DamsmPair, "encode_images", lambda self, images: cheap_image_codes(images))
    options = {"encoder": "damsm", "damsm_text_encoder": str(files["text"]), "damsm_image_encoder": str(files["image"]),
               "damsm_captions": str(files["captions"]), "damsm_words": "25", "negatives": "5", "folds": "10",
               "n_generated": "30", "mismatch": "class", "device": "cpu"}  # fmt: skip
    ((_, metric, _),) = build_metrics(["r_precision"], {"r_precision": options})
    result = metric.evaluate(lambda c: birds.images[torch.arange(len(c)) % 12], birds)
    protocol = result["protocol"]
    assert (protocol["n"], protocol["n_generated"], protocol["words"], protocol["mismatch"]) == (30, 30, 25, "class")
    assert "nor any image of its class" in protocol["selection"]
    classes = image_classes(birds)
    assert classes.tolist() == [i % 4 for i in range(12)]
    scenes = scene_classes(birds, classes)
    true = np.array([int(birds.caption_ids[r, 0]) for r in range(12)])
    negatives = mismatched_captions(scenes, true, 5, seed=0)
    owner = {int(c): r for r in range(12) for c in birds.caption_ids[r, : int(birds.caption_counts[r])]}
    assert all(classes[owner[int(c)]] != classes[r] for r in range(12) for c in negatives[r])


# -- mistakes ----------------------------------------------------------------------------------------------------
def test_key_or_shape_mismatch_is_one_line_naming_the_file(files, tmp_path):
    state = authors_text_state(len(WORDS))
    torch.save({k.replace("rnn.", "lstm."): v for k, v in state.items()}, tmp_path / "renamed.pth")
    with pytest.raises(UsageError, match=r"renamed.pth does not hold an AttnGAN/DM-GAN DAMSM text encoder .*no encoder.weight / rnn.weight_hh_l0"):
        load_text_encoder(tmp_path / "renamed.pth")
    torch.save({**state, "rnn.weight_ih_l0": torch.zeros(4 * HIDDEN, 200)}, tmp_path / "shape.pth")
    with pytest.raises(UsageError) as info:
        load_text_encoder(tmp_path / "shape.pth")
    assert "\n" not in str(info.value) and str(tmp_path / "shape.pth") in str(info.value)
    assert "rnn.weight_ih_l0 is (512, 200), expected (512, 300)" in str(info.value)
    torch.save({**state, "rnn.weight_ih_l1": torch.zeros(4 * HIDDEN, 256)}, tmp_path / "extra.pth")
    with pytest.raises(UsageError, match=r"extra.pth does not hold .*1 unexpected \(rnn.weight_ih_l1\)"):
        load_text_encoder(tmp_path / "extra.pth")
    torch.save({"emb_cnn_code.weight": torch.zeros(256, 2048), "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "img.pth")
    with pytest.raises(UsageError, match=r"img.pth does not hold an AttnGAN/DM-GAN DAMSM image encoder .* keys missing \(Conv2d_1a_3x3.bn.bias"):
        load_image_encoder(tmp_path / "img.pth")
    with pytest.raises(UsageError, match=r"DAMSM text encoder: .*missing.pth is not a file"):
        load_damsm_pair(tmp_path / "missing.pth", files["image"], files["captions"])


def test_vocabulary_mistakes_and_unsafe_pickles_are_refused(files, tmp_path):
    small = tmp_path / "captions_small.pickle"
    with open(small, "wb") as fh:
        pickle.dump([[], [], {}, {"<end>": 0, "bird": 1}], fh, protocol=2)
    with pytest.raises(UsageError, match=r"captions_small.pickle has 2 words .* but .*text_encoder200.pth embeds 20"):
        load_damsm_pair(files["text"], files["image"], small)
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")
    with pytest.raises(UsageError, match=r"evil.pickle: refused to unpickle it: it asks for os.system"):
        load_damsm_pair(files["text"], files["image"], evil)


def test_damsm_options_are_checked_before_anything_loads():
    with pytest.raises(UsageError, match="encoder=damsm needs the authors' files: pass r_precision.damsm_image_encoder=FILE, "
                                         "r_precision.damsm_captions=FILE"):
        build_metrics(["r_precision"], {"r_precision": {"encoder": "damsm", "damsm_text_encoder": "t.pth"}})
    with pytest.raises(UsageError, match="damsm_\\* files are used by encoder=damsm only"):
        build_metrics(["r_precision"], {"r_precision": {"damsm_captions": "c.pickle"}})
