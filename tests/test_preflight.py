"""The pre-flight check (t2i.engine.preflight): every network runs once on a tiny batch before step 1 and a
broken one is a one-line error naming it and what it returned; ``t2i describe KIND NAME --check``; the
warning for a loss term tuned for another discriminator."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

import t2i
from t2i import plugins
from t2i.cli import main
from t2i.engine.preflight import check_component, check_networks, tuning_warnings
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, LossTerm
from t2i.testing.toys import ToyConfig, ToyDiscriminator, ToyGenerator

from t2i.config import merge, resolve
from t2i_test_helpers import TINY, tiny_config


# -- broken networks, registered in memory ---------------------------------------------------------------
class ChannelsLast(ToyGenerator):
    def forward(self, z, text):
        return super().forward(z, text).permute(0, 2, 3, 1)


class WrongSize(ToyGenerator):
    def forward(self, z, text):
        return super().forward(z, text)[:, :, ::2, ::2]


class Unbounded(ToyGenerator):
    """Returns pixel values in [0, 255]."""

    def forward(self, z, text):
        return (super().forward(z, text) + 1) * 127.5


class NaNImages(ToyGenerator):
    def forward(self, z, text):
        return super().forward(z, text) * float("nan")


class ColumnLogits(ToyDiscriminator):
    """Returns (B, 1) logits."""

    def condition(self, h, text):
        return super().condition(h, text).unsqueeze(1)


class NoFeatures(ToyDiscriminator):
    """Declares provides_features (the default) but returns none."""

    def image_features(self, image):
        h, _ = super().image_features(image)
        return h, []


class NoMismatched(ToyDiscriminator):
    """Ignores mismatched_text."""

    def forward(self, image, text, mismatched_text=None):
        h, features = self.image_features(image)
        return DiscOutput(self.condition(h, text), features)


GENERATORS = {"channels_last_g": ChannelsLast, "wrong_size_g": WrongSize, "unbounded_g": Unbounded,
              "nan_g": NaNImages, "toy_g": ToyGenerator}
DISCRIMINATORS = {"column_d": ColumnLogits, "no_features_d": NoFeatures, "no_mismatched_d": NoMismatched,
                  "toy_d": ToyDiscriminator}


class TunedForOther(LossTerm):
    tuned_for = frozenset({"somebody_elses_d"})

    def d_loss(self, out):
        return out.real.logits.float().mean() * 0


class TunedForToy(TunedForOther):
    tuned_for = frozenset({"toy_d", "dcgan"})


@pytest.fixture
def broken():
    plugin = types.ModuleType("preflightparts")

    def gens(register):
        for name, cls in GENERATORS.items():
            register(name, cls, config=ToyConfig)

    def discs(register):
        for name, cls in DISCRIMINATORS.items():
            register(name, cls, config=ToyConfig)

    def losses(register):
        register("tuned_other", TunedForOther)
        register("tuned_toy", TunedForToy)

    plugin.t2i_register_generators = t2i.hookimpl(gens)
    plugin.t2i_register_discriminators = t2i.hookimpl(discs)
    plugin.t2i_register_losses = t2i.hookimpl(losses)
    plugins.register_plugin(plugin, name="preflightparts")
    yield
    plugins.unregister_plugin("preflightparts")


def config(generator="toy_g", discriminator="toy_d", **sections):
    raw = merge(TINY, sections)
    raw["generator"] = {"name": generator, "options": {"width": 4}}
    raw["discriminator"] = {"name": discriminator, "options": {"width": 4}}
    return resolve(raw)


def refused(tmp_path, cfg) -> str:
    with pytest.raises(UsageError) as info:
        Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before the run folder is written
    return message


# -- the check before step 1 -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, said", [
    ("channels_last_g", "generator 'channels_last_g' returned (2, 32, 32, 3) float32; expected (2, 3, 32, 32) "
                        "images in [-1, 1] (channels last: permute"),
    ("wrong_size_g", "generator 'wrong_size_g' returned (2, 3, 16, 16) float32; expected (2, 3, 32, 32) images in [-1, 1]"),
    ("unbounded_g", "generator 'unbounded_g' returned (2, 3, 32, 32) float32 with values in ["),
    ("nan_g", "generator 'nan_g' returned (2, 3, 32, 32) float32 with non-finite values"),
])
def test_a_broken_generator_is_refused_before_step_1_naming_what_it_returned(tmp_path, broken, name, said):
    message = refused(tmp_path, config(generator=name))
    assert message.startswith(said), message
    if name == "unbounded_g":
        assert "expected (2, 3, 32, 32) images in [-1, 1] (end with tanh" in message


@pytest.mark.parametrize("name, said", [
    ("column_d", "discriminator 'column_d' returned logits (2, 1) float32; expected (2,) logits"),
    ("no_features_d", "discriminator 'no_features_d' returned 0 features but declares provides_features = True"),
    ("no_mismatched_d", "discriminator 'no_mismatched_d' returned no mismatched_logits"),
])
def test_a_broken_discriminator_is_refused_before_step_1(tmp_path, broken, name, said):
    # the default recipe has the matching-aware term: mismatched logits are asked for
    message = refused(tmp_path, config(discriminator=name))
    assert message.startswith(said), message


def test_mismatched_logits_are_only_checked_when_a_loss_asks(tmp_path, broken):
    cfg = config(discriminator="no_mismatched_d", loss={"terms": {"matching_aware": 0}}, train={"steps": 1})
    Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)


def test_a_text_encoder_of_the_wrong_size_is_named(broken):
    class Short(nn.Module):
        dim = 16

        def tokenize(self, captions):
            return torch.zeros(len(captions), 3)

        def forward(self, tokens):
            return tokens

    G, D = ToyGenerator(text_dim=16), ToyDiscriminator(text_dim=16)
    with pytest.raises(UsageError, match=r"^text encoder 'short' returned \(2, 3\) float32; expected \(2, 16\) embeddings"):
        check_networks(G, D, Short(), resolution=32, names={"text_encoder": "short"}, captions=["a", "b"])


def test_the_check_leaves_buffers_and_random_streams_as_they_were():
    torch.manual_seed(0)

    class BNGenerator(ToyGenerator):  # batch norm and dropout: a forward pass would change its state
        def __init__(self):
            super().__init__(resolution=32, text_dim=16)
            self.bn, self.drop = nn.BatchNorm2d(3), nn.Dropout(0.5)

        def forward(self, z, text):
            return torch.tanh(self.drop(self.bn(super().forward(z, text))))

    class Encoder(nn.Module):
        dim = 16

        def tokenize(self, captions):
            return torch.randn(len(captions), 16)

        def forward(self, tokens):
            return tokens

    G, D = BNGenerator(), ToyDiscriminator(text_dim=16)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    rng = torch.get_rng_state()
    check_networks(G, D, Encoder(), resolution=32, names={}, captions=["a red circle"])
    assert torch.equal(torch.get_rng_state(), rng)
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_checked_run_trains_as_before(tmp_path):
    """Determinism: two runs of one config end with equal weights (the check draws nothing from the run's streams;
    bit-identical resume is tests/test_engine.py)."""
    a = Trainer(tiny_config(train={"steps": 2}), tmp_path / "a", quiet=True, tensorboard=False)
    a.fit()
    b = Trainer(tiny_config(train={"steps": 2}), tmp_path / "b", quiet=True, tensorboard=False)
    b.fit()
    for (k, v), w in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        assert torch.equal(v, w), k


# -- t2i describe KIND NAME --check ----------------------------------------------------------------------
def test_describe_check_prints_ok_or_the_one_line_problem(broken, capsys):
    assert main(["describe", "generator", "toy_g", "--check"]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    assert main(["describe", "generator", "channels_last_g", "--check", "-o", "width=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("t2i: error: generator 'channels_last_g' returned (2, 32, 32, 3) float32;") and "\n" not in err
    assert main(["describe", "discriminator", "column_d", "--check", "--resolution", "16"]) == 2
    assert "returned logits (2, 1) float32; expected (2,) logits" in capsys.readouterr().err
    assert main(["describe", "text-encoder", "bow", "--check", "-o", "dim=8"]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    assert main(["describe", "loss", "hinge", "--check"]) == 2
    assert "--check runs generators, discriminators and text encoders; 'hinge' is a loss" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["generators", "discriminators"])
def test_every_installed_network_passes_the_check(kind):
    reg = t2i.registry(kind)
    for name in reg.names():
        options = dict(reg.get(name).metadata.get("test_options", {}))
        assert check_component(kind, name, options) == "ok", name


# -- a term tuned for another discriminator --------------------------------------------------------------
def test_a_term_tuned_for_another_discriminator_warns_before_step_1(tmp_path, broken, capsys):
    cfg = config(loss={"terms": {"tuned_other": 1.0}}, train={"steps": 1})
    Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    err = [line for line in capsys.readouterr().err.splitlines() if "tuned_other" in line]
    assert err == ["t2i: warning: loss term 'tuned_other' is tuned for discriminator somebody_elses_d, not 'toy_d': "
                   "its scale may not suit this network (watch for loss_explosion; see t2i describe loss tuned_other)"]
    assert "loss term 'tuned_other' is tuned for discriminator somebody_elses_d" in (tmp_path / "run" / "summary.md").read_text()
    # a discriminator it names, or a term that names none: silent
    Trainer(config(loss={"terms": {"tuned_toy": 1.0}}, train={"steps": 1}), tmp_path / "quiet", quiet=True,
            tensorboard=False)
    assert "warning" not in capsys.readouterr().err


def test_ma_gp_declares_dfgan_and_warns_with_another_discriminator():
    from t2i.losses import MatchingAwareGradientPenalty

    assert MatchingAwareGradientPenalty.tuned_for == frozenset({"dfgan"})
    assert "gradient norms" in MatchingAwareGradientPenalty.__doc__  # its scale assumption, documented
    (line,) = tuning_warnings([("ma_gp", 1.0, MatchingAwareGradientPenalty())], "dcgan")
    assert line.startswith("loss term 'ma_gp' is tuned for discriminator dfgan, not 'dcgan'")
    assert tuning_warnings([("ma_gp", 1.0, MatchingAwareGradientPenalty())], "dfgan") == []
