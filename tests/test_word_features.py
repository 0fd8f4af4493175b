"""Word-level text features (issue 13): what every encoder returns (shapes, masks, the same sentence as
``forward``), the caption table's word cache, the refusal of a word network with a sentence-only encoder,
and one tiny run whose generator, discriminator and a loss term read words, through grids, metrics and
``t2i sample``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import t2i
from t2i import plugins
from t2i.cli import main
from t2i.config import merge, resolve
from t2i.engine.captions import CaptionTable, word_cache_bytes
from t2i.engine.generate import encode_captions, generate_images
from t2i.errors import UsageError
from t2i.interfaces import LossTerm, StepOutputs, WordFeatures
from t2i.testing import ToyConfig, ToyDiscriminator, ToyGenerator, check_discriminator, check_generator
from t2i.testing.text import _check_words
from t2i.text.bow import BagOfWords, BagOfWordsConfig
from t2i.text.gru import GRUConfig, GRUEncoder

from t2i_test_helpers import TINY

CAPTIONS = ["a red circle", "a big blue square on the left", "", "green"]
LENGTHS = [3, 7, 1, 1]  # words; the empty caption reads one <pad>


def masked_mean(words: WordFeatures) -> Tensor:
    m = words.mask[..., None].to(words.features.dtype)
    return (words.features * m).sum(1) / m.sum(1).clamp_min(1)


# -- encoders ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: GRUEncoder(GRUConfig(dim=8, word_dim=4)),
    lambda: GRUEncoder(GRUConfig(dim=8, word_dim=4, layers=2, trainable=False)),
    lambda: BagOfWords(BagOfWordsConfig(dim=6)),
    lambda: BagOfWords(BagOfWordsConfig(dim=6, consistency=2.0)),
], ids=["gru", "gru-2-layers-frozen", "bow", "bow-consistency"])
def test_vocabulary_encoders_words_shapes_masks_and_sentence(make):
    torch.manual_seed(0)
    enc = make()
    ids = torch.tensor([[0, 1, -1, -1], [2, 3, -1, -1]]) if getattr(enc.cfg, "consistency", 0) else None
    enc.fit(CAPTIONS, caption_ids=ids) if ids is not None else enc.fit(CAPTIONS)
    tokens = enc.tokenize(CAPTIONS)
    sentence, words = enc.forward_words(tokens)
    assert enc.word_dim == enc.dim
    assert torch.equal(sentence, enc(tokens))  # forward_words(tokens)[0] == forward(tokens), exactly
    assert words.features.shape == (4, 7, enc.dim) and words.mask.dtype == torch.bool
    assert words.mask.sum(1).tolist() == LENGTHS  # L = the batch's longest caption
    assert torch.all(words.features[~words.mask] == 0)
    # a caption's words do not depend on the batch (padding never reaches the GRU)
    _, alone = enc.forward_words(tokens[1:2])
    assert torch.allclose(alone.features[0], words.features[1], atol=1e-6)
    _, short = enc.forward_words(tokens[[0, 3]])
    assert short.features.shape[1] == 3 and torch.allclose(short.features[0], words.features[0, :3], atol=1e-6)


def test_bow_word_features_are_its_word_vectors_and_the_sentence_their_mean():
    enc = BagOfWords(BagOfWordsConfig(dim=5))
    enc.fit(CAPTIONS)
    tokens = enc.tokenize(CAPTIONS[:2])
    sentence, words = enc.forward_words(tokens)
    assert torch.equal(words.features[0, :3], enc.embedding.weight[tokens[0, :3]])
    assert torch.allclose(masked_mean(words), sentence, atol=1e-6)


def test_gru_words_are_both_directions_and_the_sentence_its_last_states():
    torch.manual_seed(0)
    enc = GRUEncoder(GRUConfig(dim=8, word_dim=4))
    enc.fit(CAPTIONS)
    tokens = enc.tokenize(CAPTIONS[1:2])
    sentence, words = enc.forward_words(tokens)
    half = enc.dim // 2
    assert torch.allclose(sentence[0, :half], words.features[0, -1, :half], atol=1e-6)  # forward: last word
    assert torch.allclose(sentence[0, half:], words.features[0, 0, half:], atol=1e-6)  # backward: first word


def test_gru_config_word_dim_is_the_input_size_not_the_feature_size():
    enc = GRUEncoder(GRUConfig(dim=10, word_dim=3))
    assert enc.embedding.weight.shape[1] == 3 and enc.word_dim == 10


def test_sentence_only_encoders_say_so():
    from t2i.text.head import HeadedTextEncoder, TextHeadConfig

    frozen_head = HeadedTextEncoder(BagOfWords(BagOfWordsConfig(dim=4)), TextHeadConfig(head="linear", head_dim=3))
    assert frozen_head.word_dim is None
    with pytest.raises(UsageError, match="no word features"):
        frozen_head.forward_words(torch.zeros(1, 4))
    gru = GRUEncoder(GRUConfig(dim=8, word_dim=4))
    gru.fit(CAPTIONS)
    headed = HeadedTextEncoder(gru, TextHeadConfig(head="linear", head_dim=3))
    sentence, words = headed.forward_words(gru.tokenize(CAPTIONS))
    assert headed.word_dim == 8 and sentence.shape == (4, 3) and torch.equal(sentence, headed(gru.tokenize(CAPTIONS)))
    assert words.features.shape == (4, 7, 8)


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 12, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    import open_clip

    from t2i.clip import _model_name

    folder = tmp_path_factory.mktemp("clip")
    config = folder / "t2i-test-clip-words.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    torch.save(open_clip.create_model(_model_name(str(config))).state_dict(), folder / "weights.pt")
    return {"model": str(config), "weights": str(folder / "weights.pt")}


def test_clip_token_features_mask_to_the_end_token_and_pool_to_the_sentence(clip_files):
    from t2i.clip import load_clip

    enc = t2i.registry("text_encoders").create("clip", clip_files)
    bundle = load_clip(clip_files["model"], weights=clip_files["weights"])
    tokens = enc.tokenize(CAPTIONS)
    sentence, words = enc.forward_words(tokens)
    assert torch.equal(sentence, enc(tokens))
    assert torch.allclose(sentence, bundle.encode_text(CAPTIONS), atol=1e-6)
    lengths = [(t != 0).sum().item() for t in tokens]  # start + BPE tokens + end
    assert words.mask.sum(1).tolist() == lengths and lengths[2] == 2  # "" is <start><end>
    assert enc.word_dim == 16 and words.features.shape == (4, max(lengths), 16)
    # the end token's feature, normalised, is the sentence embedding (CLIP pools there)
    ends = words.features[torch.arange(4), torch.tensor(lengths) - 1]
    assert torch.allclose(nn.functional.normalize(ends, dim=-1), sentence, atol=1e-5)
    _check_words(enc, CAPTIONS)  # the kit's word check


# -- the caption table -------------------------------------------------------------------------------------


class CountingBow(BagOfWords):
    """A frozen bag of words that counts its forward_words calls."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.word_calls = 0

    def forward_words(self, tokens):
        self.word_calls += 1
        return super().forward_words(tokens)


def test_frozen_words_are_computed_once_in_float16_and_looked_up(monkeypatch):
    enc = CountingBow(BagOfWordsConfig(dim=6))
    enc.fit(CAPTIONS)
    table = CaptionTable(enc, CAPTIONS, torch.device("cpu"))
    assert table.word_table is None  # nothing until a run asks for words
    ids = torch.tensor([1, 3])
    text, words = table.with_words(ids)
    text2, words2 = table.with_words(torch.tensor([0, 1]))
    assert enc.word_calls == 1 and table.words_cached
    assert table.word_table.features.dtype == torch.float16 and table.word_table.features.shape == (4, 7, 6)
    assert torch.equal(text, table(ids)) and words.features.dtype == torch.float32
    ref_text, ref = enc.forward_words(enc.tokenize([CAPTIONS[1], CAPTIONS[3]]))
    assert torch.equal(words.mask, ref.mask) and torch.allclose(words.features, ref.features, atol=1e-2)
    assert words2.features.shape == (2, 7, 6)
    # over the budget: recomputed per batch from the tokens, the same values in float32
    monkeypatch.setenv("T2I_WORD_CACHE_MB", "0")
    enc.word_calls = 0
    table = CaptionTable(enc, CAPTIONS, torch.device("cpu"))
    _, a = table.with_words(ids)
    _, b = table.with_words(ids)
    assert table.words_cached is False and table.word_table is None and enc.word_calls == 2
    assert torch.equal(a.features, ref.features) and torch.equal(a.mask, ref.mask)


def test_trainable_encoder_runs_forward_words_per_batch_with_gradients():
    torch.manual_seed(0)
    enc = GRUEncoder(GRUConfig(dim=8, word_dim=4))
    enc.fit(CAPTIONS)
    table = CaptionTable(enc, CAPTIONS, torch.device("cpu"))
    text, words = table.with_words(torch.tensor([1, 0]))
    (text.sum() + words.features.sum()).backward()
    assert enc.embedding.weight.grad is not None and torch.equal(text, table(torch.tensor([1, 0])))


def test_word_cache_cost_on_coco_as_documented():
    coco = 82_783 * 5
    assert round(word_cache_bytes(coco, 18, 256) / 1e9, 1) == 3.8  # DAMSM
    assert round(word_cache_bytes(coco, 77, 512) / 1e9, 1) == 32.7  # CLIP ViT-B-32, 77 tokens


# -- word-using components for the tests -------------------------------------------------------------------


def attend(words: WordFeatures, query: Tensor) -> Tensor:
    """Masked attention pooling of the words by ``query`` ``(B, Dw)``: padding gets no weight."""
    scores = (words.features * query[:, None]).sum(-1).masked_fill(~words.mask, float("-inf"))
    return (scores.softmax(1)[..., None] * words.features).sum(1)


class WordyGenerator(ToyGenerator):
    uses_words = True

    def __init__(self, cfg=None, *, resolution=32, text_dim=16, word_dim=None):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        assert word_dim is not None, "the engine passes word_dim to a network that uses_words"
        self.query = nn.Linear(text_dim, word_dim)
        self.words_in = nn.Linear(word_dim, text_dim)
        self.calls_with_words = 0

    def forward(self, z, text, words=None):
        assert isinstance(words, WordFeatures) and words.features.shape[0] == z.shape[0]
        self.calls_with_words += 1
        return super().forward(z, text + self.words_in(attend(words, self.query(text))))


class WordyDiscriminator(ToyDiscriminator):
    uses_words = True

    def __init__(self, cfg=None, *, resolution=32, text_dim=16, word_dim=None):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.words_in = nn.Linear(word_dim, text_dim)

    def condition(self, h, text, words):
        assert isinstance(words, WordFeatures)
        return super().condition(h, text + self.words_in(masked_mean(words)))


class WordProbe(LossTerm):
    """A term that needs words: records what it received, and pulls the word features (trainable encoder)."""

    needs = frozenset({"words"})
    seen: list[tuple[int, int]] = []

    def d_loss(self, out: StepOutputs):
        assert isinstance(out.words, WordFeatures) and len(out.words) == out.text.shape[0]
        WordProbe.seen.append(tuple(out.words.features.shape[:2]))
        return out.words.features.pow(2).mean() * 0.0 + out.fake.logits.mean() * 0.0


@pytest.fixture
def wordy():
    import types

    plugin = types.ModuleType("wordyparts")
    plugin.t2i_register_generators = t2i.hookimpl(
        lambda register: register("wordy_g", WordyGenerator, config=ToyConfig))

    def discriminators(register):
        register("wordy_d", WordyDiscriminator, config=ToyConfig)
        register("leaky_d", LeakyPadding, config=ToyConfig)
        register("declared_leaky_d", DeclaredLeaky, config=ToyConfig)

    plugin.t2i_register_discriminators = t2i.hookimpl(discriminators)
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("word_probe", WordProbe))
    plugin.t2i_register_metrics = t2i.hookimpl(lambda register: register("word_pixel", WordPixel))
    plugins.register_plugin(plugin, name="wordyparts")
    WordProbe.seen = []
    yield
    plugins.unregister_plugin("wordyparts")


class LeakyPadding(WordyDiscriminator):
    """Averages the padding positions too: the kit must catch it, unless it declares masks_words = False."""

    def condition(self, h, text, words):
        return ToyDiscriminator.condition(self, h, text + self.words_in(words.features.mean(1)))


class DeclaredLeaky(LeakyPadding):
    masks_words = False


def test_the_kit_checks_word_networks_with_words_of_several_lengths(wordy):
    for report in (check_generator("wordy_g", {"width": 4}, resolutions=(8,)),
                   check_discriminator("wordy_d", {"width": 4}, resolutions=(8,))):
        assert {"word features of several lengths at 8 px", "word features change the output at 8 px",
                "padding positions do not change the output at 8 px"} <= set(report.passed)


def test_the_kit_catches_a_network_that_reads_the_padding(wordy):
    with pytest.raises(AssertionError, match="padding positions"):
        check_discriminator("leaky_d", {"width": 4}, resolutions=(8,))
    check_discriminator("declared_leaky_d", {"width": 4}, resolutions=(8,))


class WordPixel(t2i.interfaces.Metric):
    """Mean pixel of images generated for 4 reference captions (through make_generate, so G gets words)."""

    def evaluate(self, generate, reference):
        images = generate([reference.captions_of(i)[0] for i in range(4)])
        assert images.shape == (4, 32, 32, 3)
        return {"word_pixel": images.float().mean().item(), "protocol": {"n": 4}}


def wordy_config(text="bow", **sections):
    raw = merge(TINY, sections)
    raw["generator"] = {"name": "wordy_g", "options": {"width": 4}}
    raw["discriminator"] = {"name": "wordy_d", "options": {"width": 4}}
    raw["text_encoder"] = {"name": text, "options": {"dim": 8} if text != "precomputed" else {}}
    return raw


def test_a_word_network_with_a_sentence_only_encoder_is_refused_in_one_line(wordy, tmp_path, capsys):
    np.save(tmp_path / "emb.npy", np.zeros((1, 8), dtype=np.float32))
    (tmp_path / "emb.txt").write_text("a caption of no data set\n")
    args = ["run", "--generator", "wordy_g", "--discriminator", "wordy_d", "-G", "width=4", "-D", "width=4",
            "--text-encoder", "precomputed", "-T", f"path={tmp_path / 'emb.npy'}", "--resolution", "32", "--steps", "1",
            "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("t2i: error: generator 'wordy_g' needs word features; text encoder 'precomputed' has none: "
                   "use --text-encoder gru, bow, clip or minilm")
    assert not (tmp_path / "run").exists()


def test_a_term_needing_words_with_a_sentence_only_encoder_is_refused(wordy, tmp_path):
    from t2i.engine.components import build_components

    raw = merge(TINY, {"loss": {"terms": {"word_probe": 1.0}}, "text_encoder": {"name": "bow",
                                                                                "options": {"dim": 8, "head": "mlp"}}})
    with pytest.raises(UsageError, match="^loss term 'word_probe' needs word features; text encoder 'bow' has none"):
        build_components(resolve(raw))


@pytest.mark.parametrize("encoder", ["gru", "bow"])  # trainable: words per batch; frozen: the cached table
def test_a_tiny_run_feeds_words_to_g_d_terms_grids_metrics_and_sampling(wordy, tmp_path, encoder):
    from t2i.runs import Sampler, train

    raw = wordy_config(encoder, loss={"terms": {"word_probe": 1.0}},
                       data={"options": {"train_size": 64, "test_size": 16}},
                       train={"steps": 2, "batch_size": 8, "sample_every": 0, "checkpoint_every": 2, "ema": 0.0},
                       eval={"metrics": ["word_pixel"], "every": 0})
    trainers = []
    result = train(resolve(raw), tmp_path / "run", quiet=True, tensorboard=False,
                   on_start=lambda trainer, ctx: trainers.append(trainer))
    assert result.status == "finished", result.message
    assert len(WordProbe.seen) == 2 and all(length >= 1 for _, length in WordProbe.seen)  # one D step per step
    table = trainers[0].captions
    assert (table.word_table is not None) == (encoder == "bow")  # a frozen encoder's words: computed once
    assert result.samples is not None and result.samples.is_file()  # the grid called G with words
    assert 0 <= result.evaluation["word_pixel"] <= 255  # the metric's generate() did too
    sampler = Sampler.load(tmp_path / "run", device="cpu")
    before = sampler.generator.calls_with_words
    images = sampler.generate(["a red circle", "a blue square on the left"], n=2)
    assert images.shape == (4, 3, 32, 32) and sampler.generator.calls_with_words > before
    frames = sampler.interpolate(["a red circle"], frames=3)
    assert frames.shape == (3, 3, 32, 32)
    with pytest.raises(UsageError, match="do not mix between two captions"):
        sampler.interpolate(["a red circle", "a blue square"], frames=3)
    text, words = encode_captions(sampler.text_encoder, ["a red circle"], "cpu", words=True)
    z = torch.zeros(1, sampler.generator.z_dim)
    assert generate_images(sampler.generator, z, text, words).shape == (1, 3, 32, 32)
