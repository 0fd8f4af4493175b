"""EMA of G with StyleGAN's half-life convention (issue 14): ``train.ema_kimg`` (and StyleGAN2-ADA's
``train.ema_rampup``) beside ``train.ema``: the decay is the formula, the averaged weights are the hand
computation, exactly one of the two settings is accepted, and a resumed run averages bit-identically."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from t2i.cli import main
from t2i.cli.flags import config_flags
from t2i.engine.networks import GeneratorEMA, ema_decay, half_life_decay
from t2i.engine.trainer import Trainer
from t2i.errors import ConfigError

from t2i_test_helpers import TINY_FLAGS, tiny_config


def test_the_decay_is_stylegans_formula():
    assert half_life_decay(32, 10) == 0.5 ** (32 / 10_000)  # StyleGAN2: ema_kimg=10 at batch 32
    assert round(half_life_decay(32, 10), 5) == 0.99778
    assert half_life_decay(64, 10) == pytest.approx(half_life_decay(32, 10) ** 2)  # twice the images per step
    # StyleGAN2-ADA's ramp: the half-life is at most rampup x the images seen (none yet: 0, a copy)
    assert half_life_decay(32, 10, rampup=0.05, images=0) == 0.0
    assert half_life_decay(32, 10, rampup=0.05, images=3200) == 0.5 ** (32 / 160)
    assert half_life_decay(32, 10, rampup=0.05, images=10**7) == half_life_decay(32, 10)  # ramp over
    cfg = tiny_config(train={"ema": 0.0, "ema_kimg": 2.0, "batch_size": 16}).train
    assert ema_decay(cfg) == 0.5 ** (16 / 2000)
    ramped = ema_decay(tiny_config(train={"ema": 0.0, "ema_kimg": 2.0, "ema_rampup": 0.5, "batch_size": 16}).train)
    assert callable(ramped) and ramped(3) == 0.5 ** (16 / (3 * 16 * 0.5))
    assert ema_decay(tiny_config(train={"ema": 0.9}).train) == 0.9
    assert ema_decay(tiny_config(train={"ema": 0.0}).train) is None


@pytest.mark.parametrize("ramp", [False, True])
def test_the_averaged_weights_are_the_hand_computation(ramp):
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    decay = (lambda n: half_life_decay(4, 0.01, 0.5, n * 4)) if ramp else half_life_decay(4, 0.01)
    ema = GeneratorEMA(net, decay)
    expected = None
    for step in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        current = [p.detach().clone() for p in net.parameters()]
        beta = decay(step) if ramp else decay
        expected = current if expected is None else [beta * e + (1 - beta) * c for e, c in zip(expected, current)]
    for got, want in zip(ema.module.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(expected[0], current[0])  # the average is not simply the last weights


def test_one_of_ema_and_ema_kimg(tmp_path, capsys):
    assert "--ema-kimg" in {n for f in config_flags() for n in f.names}
    code = main(["run", *TINY_FLAGS, "--ema", "0.999", "--ema-kimg", "10", "--steps", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "set one of train.ema" in err[0] and not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="set train.ema_kimg too"):
        tiny_config(train={"ema": 0.0, "ema_rampup": 0.05})


@pytest.mark.slow
def test_a_run_averages_g_with_the_ramped_half_life_and_resumes_bit_identically(tmp_path):
    def config(steps):
        return tiny_config(train={"steps": steps, "checkpoint_every": 2, "ema": 0.0, "ema_kimg": 0.05, "ema_rampup": 0.5},
                           data={"options": {"train_size": 64}})

    straight = Trainer(config(3), tmp_path / "a", quiet=True, tensorboard=False)
    expected = None
    for step in range(3):  # a copy, then decays 0.5 ** (16 / min(50, 0.5 * 16 * step)): 0.25, 0.5
        straight.train_step()
        current = {k: v.detach().clone() for k, v in straight.G.named_parameters()}
        beta = half_life_decay(16, 0.05, 0.5, step * 16)
        expected = current if expected is None else {k: beta * expected[k] + (1 - beta) * current[k] for k in current}
    for k, v in straight.ema.module.named_parameters():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    straight.fit()  # saves step 3 and the summary, which names the half-life
    assert "EMA half-life 0.05 kimg (ramp-up 0.5)" in (tmp_path / "a" / "summary.md").read_text()

    Trainer(config(2), tmp_path / "b", quiet=True, tensorboard=False).fit()
    resumed = Trainer(config(3), tmp_path / "b", resume=True, quiet=True, tensorboard=False)
    assert resumed.step == 2 and int(resumed.ema.n_averaged) == 2  # the ramp continues from the saved count
    resumed.fit()
    a, b = (load_file(str(tmp_path / r / "checkpoints" / "step_00000003" / "generator_ema.safetensors")) for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
