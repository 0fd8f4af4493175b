"""t2i-multiscale: ``multiscale`` through the conformance kit (t2i.testing) with several bases, with a
single-output and a multi-scale generator, a real run; then what the kit cannot know: one base per scale
at its own size, tied weights that stay tied, capabilities read from the base, one-line refusals."""

from __future__ import annotations

import copy
import tomllib

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import t2i
from t2i.config import resolve
from t2i.interfaces import Discriminator, WordFeatures
from t2i.nn import check_context
from t2i.runs import train
from t2i.testing import check_discriminator, check_pair
from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: one thread here)
from t2i_multiscale import (
    MultiScaleConfig,
    MultiScaleDiscriminator,
    first_difference,
    pyramid,
    resolutions_for,
)

TEXT_DIM = 16
B = 2
FCN = "test-fcn"  # registered by the fcn fixture


class FullyConvolutional(Discriminator):
    """A fully convolutional D that reads words: the same parameters at every size (``shared=true`` works)."""

    resolutions = (8, 16, 32, 64)
    uses_words = True

    def __init__(self, cfg=None, *, resolution, text_dim, word_dim=None):
        super().__init__()
        check_context(type(self), resolution, text_dim)
        self.resolution, self.text_dim, self.seen = resolution, text_dim, []
        self.convs = nn.ModuleList([nn.Conv2d(3, 8, 4, 2, 1), nn.Conv2d(8, 8, 4, 2, 1)])
        self.text, self.words, self.out = nn.Linear(text_dim, 8), nn.Linear(word_dim, 8), nn.Linear(8, 1)

    def on_train_step(self, step, images_seen):
        self.seen.append(images_seen)

    def image_features(self, image):
        features, h = [], image
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            features.append(h)
        return h, features

    def condition(self, h, text, words):
        mask = words.mask[..., None].to(h.dtype)
        w = (words.features * mask).sum(1) / mask.sum(1)
        pooled = h.mean(dim=(2, 3))
        return self.out(pooled).flatten() + (pooled * (self.text(text) + self.words(w))).sum(1)


@pytest.fixture
def fcn():
    reg = t2i.registry("discriminators")
    reg.register(FCN, FullyConvolutional, help="test-only fully convolutional D")
    try:
        yield FCN
    finally:
        reg.unregister(FCN)


def make(resolution=32, **options):
    options.setdefault("base_options", {"ndf": 4} if options.get("base", "dcgan") != FCN else {})
    return t2i.registry("discriminators").create("multiscale", options, resolution=resolution,
                                                 text_dim=TEXT_DIM, word_dim=TEXT_DIM)


def words(batch=B, length=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    return WordFeatures(torch.randn(batch, length, TEXT_DIM, generator=gen), mask)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the interface contract (t2i.testing) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, resolutions",
    [
        (None, (32, 64)),  # the registered test options: attngan_stage, 16 + 32 and 32 + 64 px
        ({"base": "dcgan", "base_options": {"ndf": 4}, "scale_weights": [0.5, 1.0]}, (64,)),
        ({"base": "specnorm", "base_options": {"ch": 4}}, (64,)),
        ({"base": "dfgan", "base_options": {"nf": 4}}, (64,)),
        ({"base": "attngan_stage", "base_options": {"ndf": 4}, "scales": 3}, (32,)),
    ],
    ids=["attngan_stage", "dcgan", "specnorm", "dfgan", "three-scales"],
)
def test_discriminator_conforms(options, resolutions):
    check_discriminator("multiscale", options, resolutions=resolutions)


@pytest.mark.parametrize("shared", [False, True])
def test_conforms_with_a_base_that_reads_words(fcn, shared):
    report = check_discriminator("multiscale", {"base": fcn, "base_options": {}, "shared": shared},
                                 resolutions=(32,))
    assert not any("word features" in s for s in report.skipped)  # the words reached the base at each scale


@pytest.mark.parametrize("generator", ["dcgan", "attngan"], ids=["single-output", "multi-scale"])
def test_trains_with_a_single_output_and_a_multi_scale_generator(generator):
    result = check_pair(generator, "multiscale")  # 32 px: D judges 16 and 32 (attngan: its own 16 and 32 px)
    assert {"d/adv@16", "d/adv@32", "g/adv@16", "g/adv@32"} <= set(result.last)


def test_a_real_run_with_options_as_the_command_line_gives_them(tmp_path):
    raw = {
        "data": {"name": "shapes", "resolution": 64, "options": {"train_size": 16, "test_size": 8}},
        "text_encoder": {"name": "bow", "options": {"dim": TEXT_DIM}},
        "generator": {"name": "dcgan", "options": {"ngf": 4}},
        "discriminator": {"name": "multiscale", "options": {  # strings, as -D KEY=VALUE passes them
            "base": "dcgan", "base_options": "ndf=4,norm=none", "scales": "2", "scale_weights": "0.5,1"}},
        "train": {"batch_size": 8, "steps": 2, "log_every": 1, "sample_every": 0, "checkpoint_every": 0,
                  "device": "cpu", "seed": 0},
        "eval": {"metrics": []},
    }
    result = train(resolve(raw), tmp_path / "run", quiet=True, tensorboard=False)
    assert result.status == "finished" and result.step == 2
    assert {"d/adv@32", "d/adv@64", "d/total@32"} <= set(result.last)
    d = result.last  # the weighted mean of the scales: (0.5 * L32 + 1 * L64) / 1.5
    assert d["d/total"] == pytest.approx((0.5 * d["d/total@32"] + d["d/total@64"]) / 1.5, rel=1e-5)
    saved = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["discriminator"]["options"]
    assert saved["base_options"] == {"ndf": 4, "text_proj_dim": 128, "norm": "none", "spectral_norm": False,
                                     "conditioning": "concat"}
    assert (saved["scales"], saved["shared"], saved["scale_weights"]) == (2, False, [0.5, 1.0])
    weights = load_file(str(next((tmp_path / "run").rglob("discriminator.safetensors"))))
    assert any(k.startswith("nets.0.") for k in weights) and any(k.startswith("nets.1.") for k in weights)


# -- separate trunks -----------------------------------------------------------------------------------------


def test_one_base_per_scale_each_at_its_size():
    reg = t2i.registry("discriminators")
    d = make(64, scales=3, base="attngan_stage")
    assert d.scales == (16, 32, 64) and pyramid(64, 3) == (16, 32, 64)
    assert [net.resolution for net in d.nets] == [16, 32, 64]
    assert {type(net).__name__ for net in d.nets} == {"StageDiscriminator"}
    assert d.scale_weights == (1.0, 1.0, 1.0) and d.cfg.scale_weights == [1.0, 1.0, 1.0]
    separate = {id(p) for net in d.nets for p in net.parameters()}
    assert len(separate) == sum(len(list(net.parameters())) for net in d.nets)  # nothing shared
    stages = [reg.create("attngan_stage", {"ndf": 4}, resolution=s, text_dim=TEXT_DIM) for s in (16, 32, 64)]
    assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for m in stages for p in m.parameters())
    assert {k.split(".")[1] for k in d.state_dict()} == {"0", "1", "2"}  # nets.<k>: checkpoints see each

    d.eval()
    image, text = torch.rand(B, 3, 64, 64) * 2 - 1, torch.randn(B, TEXT_DIM)
    outs = d(image, text, text.roll(1, 0))  # one image: the pyramid by area averaging, as the engine's
    by_hand = d([F.avg_pool2d(image, 4), F.avg_pool2d(image, 2), image], text, text.roll(1, 0))
    for out, ref, net, s in zip(outs, by_hand, d.nets, (16, 32, 64)):
        assert torch.allclose(out.logits, ref.logits, atol=1e-6)
        assert out.uncond_logits is not None  # whatever the base says passes through
        assert torch.equal(out.logits, net(F.interpolate(image, size=(s, s), mode="area"), text).logits)
    h, _ = d.image_features(image)  # the interface's halves: the full-resolution scale's, as AttnGAN's D
    assert torch.equal(d.condition(h, text), outs[-1].logits)
    with pytest.raises(ValueError, match=r"judges images of 16, 32, 64 px, smallest first; got 32, 64"):
        d([image[..., ::2, ::2], image], text)


def test_capabilities_and_resolutions_are_the_bases(fcn):
    assert make(64, scales=2).resolutions == (64, 128)  # dcgan: 32, 64, 128
    assert make(128, scales=3).resolutions == (128,)
    assert make(32, base="attngan_stage").resolutions == (16, 32, 64, 128, 256)
    plain = make(64)
    assert (plain.uses_words, plain.provides_features) == (False, True)
    reads_words = make(32, base=fcn)
    assert reads_words.uses_words and reads_words.resolutions == (16, 32, 64)
    reads_words.on_train_step(3, 48)
    assert [net.seen for net in reads_words.nets] == [[48], [48]]
    text, w = torch.randn(B, TEXT_DIM), words()
    out = reads_words([torch.rand(B, 3, 16, 16), torch.rand(B, 3, 32, 32)], text, words=w)
    other = reads_words([torch.rand(B, 3, 16, 16), torch.rand(B, 3, 32, 32)], text, words=words(seed=1))
    assert not torch.allclose(out[0].logits, other[0].logits)  # words reach every scale
    assert not torch.allclose(out[1].logits, other[1].logits)


# -- shared weights ------------------------------------------------------------------------------------------


def test_shared_weights_are_one_set_that_stays_tied(fcn):
    d = make(32, base=fcn, shared=True)
    single = FullyConvolutional(resolution=32, text_dim=TEXT_DIM, word_dim=TEXT_DIM)
    assert [net.resolution for net in d.nets] == [16, 32]
    assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for p in single.parameters())

    def tied(m):
        return all(a is b for a, b in zip(m.nets[0].parameters(), m.nets[1].parameters()))

    assert tied(d) and tied(copy.deepcopy(d)) and tied(d.to(torch.float64).float())
    assert tied(d.to(memory_format=torch.channels_last))

    # the one set of weights gets the gradient of every scale: that of two separate, equal nets, summed
    separate = make(32, base=fcn)
    separate.nets[0].load_state_dict(d.nets[0].state_dict())
    separate.nets[1].load_state_dict(d.nets[0].state_dict())
    images, text, w = [torch.rand(B, 3, 16, 16), torch.rand(B, 3, 32, 32)], torch.randn(B, TEXT_DIM), words()
    for m in (d, separate):
        sum(out.logits.sum() for out in m(images, text, words=w)).backward()
    for (name, p), q0, q1 in zip(d.nets[0].named_parameters(), separate.nets[0].parameters(),
                                 separate.nets[1].parameters()):
        assert torch.allclose(p.grad, q0.grad + q1.grad, atol=1e-6), name

    # a checkpoint round trip loads into the tie: both scales read the loaded weights
    fresh = make(32, base=fcn, shared=True)
    fresh.load_state_dict(d.state_dict())
    assert tied(fresh) and torch.equal(fresh.nets[1].out.weight, d.nets[0].out.weight)


def test_shared_refuses_a_base_whose_parameters_depend_on_the_size():
    with pytest.raises(t2i.UsageError) as info:
        t2i.registry("discriminators").build("multiscale", {"base": "dcgan", "base_options": {"ndf": 4},
                                                            "shared": True}, resolution=64, text_dim=TEXT_DIM)
    message = str(info.value)
    assert "\n" not in message and "base 'dcgan'" in message
    assert ("'joint.0.weight' of shape (16, 144, 1, 1) at 32 px and of shape (32, 160, 1, 1) at 64 px"
            in message)
    a, b = nn.Sequential(nn.Linear(2, 3)), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    assert first_difference(a, a) is None
    assert first_difference(a, b) == ("1.weight", None, (1, 3))


# -- options and refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, resolution, expected",
    [
        ({"base_options": "ngf=4"}, 64,
         r"base: discriminator 'dcgan': unknown key 'ngf'; did you mean 'ndf'"),
        ({"base": "dcgn"}, 64, r"base: unknown discriminator 'dcgn'; did you mean 'dcgan'"),
        ({"base_options": "ndf=4"}, 32,
         r"base 'dcgan' cannot judge the 16 px scale \(scales 16, 32 px at 32 px\): "
         r"DCGANDiscriminator supports resolutions 32, 64, 128; got 16 \(with scales=2 it judges 64, 128 px"),
        ({"base": "attngan", "base_options": {"ndf": 4}}, 64, r"base 'attngan' is itself multi-scale"),
        ({"base": "progressive", "base_options": {"ch": 4}}, 64, r"base 'progressive' grows progressively"),
        ({"scales": 4, "base": "attngan_stage"}, 36, r"supports resolutions 16, 32, 64, 128, 256; got 36"),
    ],
    ids=["base-option", "base-name", "scale-too-small", "multi-scale-base", "progressive-base", "resolution"],
)
def test_refusals_are_one_line_naming_what_to_change(options, resolution, expected):
    with pytest.raises(t2i.UsageError, match=expected) as info:
        t2i.registry("discriminators").build("multiscale", options, resolution=resolution, text_dim=TEXT_DIM)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(scales=1), "scales"),
        (dict(scales=True), "scales"),
        (dict(scale_weights=[1.0]), "scale_weights"),
        (dict(scale_weights=[0.0, 0.0]), "scale_weights"),
        (dict(scale_weights=[-1.0, 1.0]), "scale_weights"),
        (dict(base="multiscale"), "base"),
        (dict(base_options="=4"), "base_options"),
        (dict(shared="yes"), "shared"),
    ],
)
def test_config_validation(options, field):
    with pytest.raises(ValueError, match=field):
        MultiScaleConfig(**options)


def test_base_options_from_the_command_line():
    assert pyramid(128, 2) == (64, 128)
    assert resolutions_for((32, 64, 128), 2) == (64, 128) and resolutions_for((32, 64), 3) == ()
    with pytest.raises(ValueError, match="cannot be halved 3 times"):
        pyramid(36, 4)
    d = make(64, base_options="ndf=4,norm=none", scale_weights=[0.25, 1])
    assert isinstance(d, MultiScaleDiscriminator) and d.cfg.base_options["norm"] == "none"
    assert d.scale_weights == (0.25, 1.0)
    assert t2i.registry("discriminators").owner("multiscale").startswith("t2i-multiscale")
