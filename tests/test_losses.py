"""The core's LSGAN loss, feature matching and gradient penalties (R1, DF-GAN's MA-GP, WGAN-GP): their
registration, their values on hand-checkable inputs, the conformance kit, and a short engine run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

import t2i
from t2i.engine.trainer import Trainer
from t2i.interfaces import NEEDS, DiscOutput, Discriminator, LossTerm, StepOutputs, loss_role
from t2i.losses import (
    FeatureMatchingConfig,
    FeatureMatchingTerm,
    HingeLoss,
    LSGANLoss,
    MAGPConfig,
    MatchingAwareGradientPenalty,
    R1Penalty,
    WGANGradientPenalty,
)
from t2i.testing import ToyConfig, ToyDiscriminator, ToyGenerator, check_loss

from t2i_test_helpers import tiny_config

NEW = {"lsgan": "adversarial", "feature_matching": "term", "r1": "term", "ma_gp": "term", "wgan_gp": "term"}
B, R, TEXT_DIM = 4, 8, 5


class LinearD(Discriminator):
    """D(x, e) = <w, x> + <v, e>: its input gradient is (w, v) for every sample."""

    provides_features = False

    def __init__(self, w: Tensor, v: Tensor):
        super().__init__()
        self.resolution, self.text_dim = R, TEXT_DIM
        self.w, self.v = nn.Parameter(w.flatten().clone()), nn.Parameter(v.clone())

    def image_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        return image.flatten(1) @ self.w, []

    def condition(self, h: Tensor, text: Tensor) -> Tensor:
        return h + text @ self.v


def d_step_outputs(d: Discriminator, real_grad: bool = True) -> StepOutputs:
    """What the engine hands a D term: real images and text embeddings that require grad (``real_grad`` and
    ``text_grad``) and D's outputs on both batches."""
    gen = torch.Generator().manual_seed(0)
    real = (torch.rand(B, 3, R, R, generator=gen) * 2 - 1).requires_grad_(real_grad)
    fake = torch.rand(B, 3, R, R, generator=gen) * 2 - 1
    text = torch.randn(B, TEXT_DIM, generator=gen).requires_grad_(real_grad)
    return StepOutputs(d(real, text), d(fake, text), real, fake, text, HingeLoss(), d)


def features_outputs(real: list[Tensor], fake: list[Tensor]) -> StepOutputs:
    logits = torch.zeros(real[0].shape[0])
    return StepOutputs(DiscOutput(logits, real), DiscOutput(logits, fake), torch.zeros(1), torch.zeros(1),
                       torch.zeros(1), HingeLoss())


@pytest.mark.parametrize("name", sorted(NEW))
def test_registered_by_the_core_with_its_role(name):
    losses = t2i.registry("losses")
    assert losses.owner(name).startswith("t2i-core ")
    entry = losses.get(name)
    assert loss_role(entry.factory) == NEW[name] and entry.help


def test_every_core_loss_declares_its_role_by_class_and_only_known_needs():
    losses = t2i.registry("losses")
    core = [n for n in losses.names() if losses.owner(n).startswith("t2i-core ")]
    assert {"hinge", "bce", "matching_aware", "contrastive", "perceptual"} <= set(core)
    for name in core:
        entry = losses.get(name)
        assert "role" not in entry.metadata, name  # the class says it; a second declaration could disagree
        assert loss_role(entry.factory) in ("adversarial", "term"), name
        assert issubclass(entry.factory, LossTerm) and entry.factory.needs <= NEEDS.keys(), (name, entry.factory.needs)


@pytest.mark.parametrize("name", sorted(NEW))
def test_passes_the_conformance_kit(name):
    check_loss(name)


def test_lsgan_at_known_values():
    loss, logits = LSGANLoss(), torch.tensor([0.0, 2.0])
    assert loss.d_real(logits).item() == pytest.approx(0.5)   # ½ mean(1, 1)
    assert loss.d_fake(logits).item() == pytest.approx(1.0)   # ½ mean(0, 4)
    assert loss.g_fake(logits).item() == pytest.approx(0.5)
    out = StepOutputs(DiscOutput(torch.ones(3)), DiscOutput(torch.zeros(3)), None, None, None, loss)
    assert loss.d_loss(out).item() == 0.0 and loss.g_loss(out).item() == pytest.approx(0.5)


def test_feature_matching_scale():
    torch.manual_seed(0)
    real = [torch.randn(6, 4, 3, 3) + 1.0, torch.randn(6, 10) - 2.0]
    fake = [torch.randn(6, 4, 3, 3), torch.randn(6, 10)]
    fm = FeatureMatchingTerm()
    assert fm.g_loss(features_outputs(real, [r.clone() for r in real])).item() == pytest.approx(0.0, abs=1e-7)
    zeros = [torch.zeros_like(r) for r in real]
    assert fm.g_loss(features_outputs(real, zeros)).item() == pytest.approx(1.0, rel=1e-6)
    value = fm.g_loss(features_outputs(real, fake))
    scaled = fm.g_loss(features_outputs([real[0] * 37.0, real[1]], [fake[0] * 37.0, fake[1]]))
    assert value > 0 and torch.allclose(value, scaled, rtol=1e-5)
    # layers picks (negative indices allowed); the value is the mean of the per-layer values
    first = FeatureMatchingTerm(FeatureMatchingConfig(layers=(0,))).g_loss(features_outputs(real, fake))
    last = FeatureMatchingTerm(FeatureMatchingConfig(layers=(-1,))).g_loss(features_outputs(real, fake))
    assert torch.allclose(value, (first + last) / 2)


def test_feature_matching_decreases_when_g_is_trained_on_it():
    torch.manual_seed(0)
    g = ToyGenerator(ToyConfig(), resolution=16, text_dim=TEXT_DIM)
    d = ToyDiscriminator(ToyConfig(), resolution=16, text_dim=TEXT_DIM).requires_grad_(False)
    real, text, z = torch.rand(16, 3, 16, 16) * 2 - 1, torch.randn(16, TEXT_DIM), torch.randn(16, g.z_dim)
    with torch.no_grad():
        real_out = d(real, text)
    fm, opt = FeatureMatchingTerm(), torch.optim.Adam(g.parameters(), lr=1e-2)
    values = []
    for _ in range(15):
        fake = g(z, text)
        loss = fm.g_loss(StepOutputs(real_out, d(fake, text), real, fake, text, HingeLoss(), d, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0], values


def test_r1_and_ma_gp_equal_hand_computations_on_a_linear_d():
    torch.manual_seed(0)
    w, v = torch.randn(3 * R * R) * 0.1, torch.randn(TEXT_DIM) * 0.1
    d = LinearD(w, v)
    r1 = R1Penalty().d_loss(d_step_outputs(d))
    assert torch.allclose(r1, w.pow(2).sum(), rtol=1e-5)
    r1.backward()  # create_graph: the penalty trains D (d r1 / d w = 2w)
    assert torch.allclose(d.w.grad, 2 * w, rtol=1e-5)
    # MA-GP: the gradient w.r.t. image and text together, from D's real pass, k * norm^p
    norm_sq = w.pow(2).sum() + v.pow(2).sum()
    ma = MatchingAwareGradientPenalty(MAGPConfig(k=2.0, p=6.0)).d_loss(d_step_outputs(d))
    assert torch.allclose(ma, 2.0 * norm_sq.pow(3), rtol=1e-4)


def test_wgan_gp_is_zero_for_a_unit_gradient_linear_d():
    torch.manual_seed(0)
    w = torch.randn(3 * R * R)
    d = LinearD(w / w.norm(), torch.randn(TEXT_DIM))
    assert WGANGradientPenalty().d_loss(d_step_outputs(d, real_grad=False)).item() == pytest.approx(0.0, abs=1e-6)
    d2 = LinearD(3 * w / w.norm(), torch.randn(TEXT_DIM))
    assert WGANGradientPenalty().d_loss(d_step_outputs(d2, real_grad=False)).item() == pytest.approx(4.0, rel=1e-4)


def test_penalties_under_bf16_autocast():
    torch.manual_seed(0)
    d = ToyDiscriminator(ToyConfig(), resolution=R, text_dim=TEXT_DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d_step_outputs(d)
    for term in (R1Penalty(), MatchingAwareGradientPenalty(), WGANGradientPenalty()):
        value = term.d_loss(out)
        assert value.dtype == torch.float32 and torch.isfinite(value)


def test_engine_run_logs_the_new_terms(tmp_path):
    cfg = tiny_config(loss={"adversarial": "lsgan", "terms": {"feature_matching": 0.01, "r1": 1.0}})
    Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "g/feature_matching" in row and "d/r1" in row]
    assert logged and all(row["g/feature_matching"] >= 0 and row["d/r1"] >= 0 for row in logged)


# -- MA-GP: one definition, D's real pass of the step (issue 19, item 10) --------------------------------
def test_ma_gp_never_reruns_d_and_says_what_it_needs():
    d = LinearD(torch.randn(3 * R * R) * 0.1, torch.randn(TEXT_DIM) * 0.1)
    out = d_step_outputs(d)
    calls = []
    d.register_forward_pre_hook(lambda module, args: calls.append(1))
    MatchingAwareGradientPenalty().d_loss(out)
    assert calls == []  # the logits D gave the real batch are differentiated, whatever the encoder
    assert MatchingAwareGradientPenalty.needs == {"real_grad", "text_grad"} and "text_grad" in NEEDS
    frozen_text = d_step_outputs(d)
    frozen_text.text = frozen_text.text.detach()
    with pytest.raises(t2i.errors.UsageError, match="needs text embeddings that require grad.*text_grad"):
        MatchingAwareGradientPenalty().d_loss(frozen_text)


def _ma_gp_d_step(tmp_path, trainable: bool):
    """One engine D step with ma_gp: D's forward calls, the logged d/ma_gp, and the value computed directly
    from a copy of D taken just before the step (its real pass on the same images and embeddings)."""
    import copy

    cfg = tiny_config(text_encoder={"options": {"dim": 16, "trainable": trainable}},
                      loss={"terms": {"ma_gp": 1.0}}, train={"steps": 1})
    trainer = Trainer(cfg, tmp_path / f"run-{trainable}", quiet=True, tensorboard=False)
    assert trainer.encoder.trainable is trainable and "text_grad" in trainer.needs
    real, cid = trainer.feed.next_batch()
    text = trainer.captions(cid)
    assert text.requires_grad is trainable
    D0 = copy.deepcopy(trainer.D)
    calls = []
    trainer.D.register_forward_pre_hook(lambda module, args: calls.append(1))
    logs = trainer.gan_step.discriminator(real, text, 0, None)
    x = real.detach().clone().requires_grad_(True)
    e = text.detach().clone().requires_grad_(True)
    gx, ge = torch.autograd.grad(D0(x, e).logits.sum(), (x, e))
    norm = (gx.flatten(1).pow(2).sum(1) + ge.pow(2).sum(1)).sqrt()
    return len(calls), float(logs["d/ma_gp"]), float(2.0 * norm.pow(6).mean())


def test_ma_gp_runs_d_once_per_batch_with_a_frozen_or_a_trainable_encoder(tmp_path):
    frozen_calls, frozen_value, frozen_direct = _ma_gp_d_step(tmp_path, trainable=False)
    trained_calls, trained_value, trained_direct = _ma_gp_d_step(tmp_path, trainable=True)
    assert frozen_calls == trained_calls == 2  # the real and the fake batch: no second pass on the real one
    assert frozen_value == pytest.approx(frozen_direct, rel=1e-4) and frozen_value > 0
    assert trained_value == pytest.approx(trained_direct, rel=1e-4) and trained_value > 0
