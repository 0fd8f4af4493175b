"""DiffAugment and its adaptive probability (t2i.augment): each op does what it says, is differentiable, is
applied alike to real and fake, ADA's p moves the right way, and the engine trains with it (CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from t2i.augment import OPS, DiffAugment, adjust_color, cutout, translate
from t2i.config import AUGMENT_OPS, AugmentConfig, parse_policy, resolve
from t2i.errors import UsageError
from t2i.testing import check_training_step

POLICY = "translation,color,cutout"


def dot(b=2, c=3, h=8, w=8, at=(3, 4)):
    x = torch.zeros(b, c, h, w)
    x[:, :, at[0], at[1]] = 1.0
    return x


def test_every_policy_name_the_config_accepts_has_its_code():
    assert tuple(OPS) == AUGMENT_OPS
    assert parse_policy(" cutout, color ") == ["cutout", "color"]


def test_translate_moves_content_and_fills_zeros():
    x = dot()
    moved = translate(x, torch.tensor([2, -3]), torch.tensor([-1, 2]))
    assert moved[0, :, 5, 3].eq(1).all() and moved[0].sum() == 3  # down 2, left 1
    assert moved[1, :, 0, 6].eq(1).all() and moved[1].sum() == 3  # up 3, right 2
    gone = translate(x, torch.tensor([6, 0]), torch.tensor([0, 0]))
    assert gone[0].sum() == 0  # shifted out of the image: zeros came in


def test_cutout_zeroes_exactly_the_rectangle_clipped_to_the_image():
    x = torch.ones(2, 3, 8, 8)
    out = cutout(x, torch.tensor([2, -2]), torch.tensor([1, 6]), (4, 4))
    assert out[0, :, 2:6, 1:5].eq(0).all() and out[0].sum() == 3 * (64 - 16)
    assert out[1, :, 0:2, 6:8].eq(0).all() and out[1].sum() == 3 * (64 - 4)  # clipped at the corner


def test_colour_brightness_saturation_contrast():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    one, zero = torch.ones(2), torch.zeros(2)
    assert torch.allclose(adjust_color(x, torch.tensor([0.25, -0.5]), one, one) - x,
                          torch.tensor([0.25, -0.5]).view(2, 1, 1, 1).expand_as(x), atol=1e-6)
    grey = adjust_color(x, zero, zero, one)
    assert torch.allclose(grey, x.mean(1, keepdim=True).expand_as(x), atol=1e-6)  # saturation 0: channel mean
    flat = adjust_color(x, zero, one, zero)
    assert torch.allclose(flat, x.mean((1, 2, 3), keepdim=True).expand_as(x), atol=1e-6)  # contrast 0: image mean


@pytest.mark.parametrize("policy", ["translation", "color", "cutout", POLICY])
def test_each_op_is_differentiable_and_applied_alike_to_real_and_fake(policy):
    aug = DiffAugment(AugmentConfig(policy=policy))
    gen = torch.Generator().manual_seed(1)
    real = (torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1).requires_grad_(True)
    fake = real.detach().clone().requires_grad_(True)
    torch.manual_seed(0)
    a, b = aug(real, fake)
    assert torch.equal(a, b)  # one call: the same shift, colour change and hole for real[i] and fake[i]
    assert not torch.equal(a, real)
    weights = torch.randn(a.shape, generator=gen)
    (a * weights).sum().backward()
    assert real.grad is not None and torch.isfinite(real.grad).all() and real.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # runs on bf16 activations too
        out, = aug(real.detach().bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_off_and_p_zero_are_the_identity():
    x = torch.rand(4, 3, 8, 8)
    state = torch.get_rng_state()
    off = DiffAugment(AugmentConfig())
    assert not off.enabled and off(x, x)[0] is x
    assert torch.equal(torch.get_rng_state(), state)  # no random draws: runs without augmentation are unchanged
    assert torch.equal(DiffAugment(AugmentConfig(policy=POLICY, p=0.0))(x)[0], x)


def test_ada_p_rises_when_d_is_confident_on_reals_and_falls_otherwise():
    cfg = AugmentConfig(policy="translation", p=0.5, ada_target=0.6, ada_interval=2, ada_speed=100)
    aug = DiffAugment(cfg)
    for step in range(2):
        aug.observe(torch.full((8,), 3.0))  # D calls every real image real: it overfits
        aug.update(step)
    assert aug.p.item() == pytest.approx(0.5 + 16 / 100)  # sign(1 - 0.6) * 16 images / 100
    assert aug.sign_count.item() == 0  # statistics restart after each adjustment
    for step in range(2, 6):
        aug.observe(torch.tensor([1.0, -1.0, -2.0, 0.5]))  # E[sign] = 0 < 0.6
        aug.update(step)
    assert aug.p.item() == pytest.approx(0.66 - 2 * 8 / 100)
    for step in range(6, 100):
        aug.observe(torch.full((8,), -1.0))
        aug.update(step)
    assert aug.p.item() == 0.0  # clamped
    fixed = DiffAugment(AugmentConfig(policy="translation", p=0.5))
    fixed.observe(torch.full((8,), 3.0))
    fixed.update(3)
    assert fixed.p.item() == 0.5  # ada_target = 0: a fixed p


def test_ada_state_is_a_buffer_that_round_trips():
    cfg = AugmentConfig(policy="color", p=0.0, ada_target=0.6, ada_interval=1, ada_speed=10)
    aug = DiffAugment(cfg)
    aug.observe(torch.ones(4))
    aug.update(0)
    restored = DiffAugment(cfg)
    restored.load_state_dict(aug.state_dict())
    assert restored.p.item() == pytest.approx(0.4) and set(aug.state_dict()) == {"p", "sign_sum", "sign_count"}


@pytest.mark.parametrize("raw, match", [
    ({"policy": "rotate"}, "unknown augmentation rotate"),
    ({"policy": "color", "p": 1.5}, r"augment.p must be in \[0, 1\]"),
    ({"ada_target": 0.6}, "augment.policy is empty"),
])
def test_bad_settings_are_usage_errors(raw, match):
    with pytest.raises(UsageError, match=match):
        resolve({"augment": raw})


def test_r1_gradient_reaches_the_real_images_through_the_augmentation():
    aug = DiffAugment(AugmentConfig(policy=POLICY))
    real = torch.rand(4, 3, 16, 16).requires_grad_(True)
    w = torch.randn(3 * 16 * 16).requires_grad_(True)  # a one-layer D
    logits = torch.tanh(aug(real)[0].flatten(1) @ w / 30)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    assert grad.abs().sum() > 0
    grad.pow(2).sum().backward()  # the penalty trains D
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_the_engine_trains_with_augmentation_and_logs_p(tmp_path):
    result = check_training_step(
        loss="r1", steps=4, run_dir=tmp_path / "run",
        augment={"policy": POLICY, "p": 0.2, "ada_target": 0.6, "ada_interval": 2, "ada_speed": 64},
        train={"precision": "bf16", "log_every": 1},
    )
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ps = [line["aug/p"] for line in lines if "aug/p" in line]
    assert result.status == "finished" and len(ps) == 4
    assert all(0.0 <= p <= 1.0 for p in ps) and ps[0] == pytest.approx(0.2) and ps[1] != pytest.approx(0.2)


def test_resume_with_ada_is_bit_identical(tmp_path):
    from t2i.engine.trainer import Trainer

    from t2i_test_helpers import tiny_config

    augment = {"policy": POLICY, "p": 0.3, "ada_target": 0.6, "ada_interval": 2, "ada_speed": 200}

    def trainer(steps, run, resume=False):
        cfg = tiny_config(train={"steps": steps, "checkpoint_every": 3, "ema": 0.0}, augment=augment)
        return Trainer(cfg, tmp_path / run, resume=resume, quiet=True, tensorboard=False)

    straight = trainer(6, "a")
    straight.fit()
    trainer(3, "b").fit()  # stops between two adjustments of p: the sign statistics must be restored too
    resumed = trainer(6, "b", resume=True)
    resumed.fit()
    assert torch.equal(straight.augment.p, resumed.augment.p) and straight.augment.p.item() != 0.3
    for k, v in straight.G.state_dict().items():
        assert torch.equal(v, resumed.G.state_dict()[k]), k
