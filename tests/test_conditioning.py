"""Text-conditioning methods as selectable parts: conditioning augmentation and its ``ca_kl`` term, and the
generator's DF-GAN affine fusion, in real engine runs."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Normal, kl_divergence

import t2i
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, StepOutputs, loss_role
from t2i.losses import ConditioningAugmentationKL, HingeLoss
from t2i_dcgan import DCGANGenerator, DCGANGeneratorConfig

from t2i_test_helpers import tiny_config

NO_CA = "loss term 'ca_kl' needs a generator with conditioning augmentation (e.g. -G ca_dim=128)"
B, TEXT_DIM, CA_DIM = 8, 16, 8


def g_step_outputs(g: DCGANGenerator, text: torch.Tensor) -> StepOutputs:
    """What the engine hands a term in a G step, after G's forward pass (D's outputs are stand-ins)."""
    fake = g(torch.randn(text.shape[0], g.z_dim), text)
    logits = DiscOutput(logits=torch.zeros(text.shape[0]))
    return StepOutputs(None, logits, fake.detach(), fake, text, HingeLoss(), None, g)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / "generator.safetensors"))


def test_ca_kl_is_a_core_term():
    losses = t2i.registry("losses")
    assert "ca_kl" in losses.names()
    assert losses.owner("ca_kl").startswith("t2i-core ")
    entry = losses.get("ca_kl")
    assert loss_role(entry.factory) == "term" and "ca_dim" in entry.help
    assert isinstance(losses.create("ca_kl", {}), ConditioningAugmentationKL)


def test_ca_kl_is_the_kl_to_a_standard_normal_per_sample():
    torch.manual_seed(0)
    g = DCGANGenerator(DCGANGeneratorConfig(ngf=8, ca_dim=CA_DIM), resolution=32, text_dim=TEXT_DIM)
    with torch.no_grad():
        g.ca.weight.normal_(0.0, 0.5)
    value = ConditioningAugmentationKL().g_loss(g_step_outputs(g, torch.randn(B, TEXT_DIM)))
    mu, logvar = g.ca_stats
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=1).mean()
    assert value.dim() == 0 and torch.allclose(value, expected, rtol=1e-5)
    assert value.requires_grad and value > 0


def test_ca_kl_pulls_the_ca_distribution_towards_a_standard_normal():
    torch.manual_seed(0)
    g = DCGANGenerator(DCGANGeneratorConfig(ngf=8, ca_dim=CA_DIM), resolution=32, text_dim=TEXT_DIM)
    with torch.no_grad():  # start far from N(0, I): mean 1 + noise, variance e^-1
        g.ca.weight.normal_(0.0, 0.5)
        g.ca.bias.copy_(torch.cat([torch.ones(CA_DIM), -torch.ones(CA_DIM)]))
    term, text = ConditioningAugmentationKL(), torch.randn(B, TEXT_DIM)
    opt = torch.optim.Adam(g.ca.parameters(), lr=0.05)  # only the CA layer: the term is all it sees
    values = []
    for _ in range(40):
        loss = term.g_loss(g_step_outputs(g, text))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.1 * values[0], values
    mu, logvar = g.ca_stats
    assert mu.abs().mean() < 0.3 and logvar.abs().mean() < 0.3


def test_an_engine_run_logs_ca_kl_every_step(tmp_path):
    cfg = tiny_config(generator={"options": {"ca_dim": CA_DIM}}, loss={"terms": {"ca_kl": 2.0}})
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    assert result.status == "finished"
    lines = metrics(tmp_path / "run")
    assert [x["step"] for x in lines] == [2, 4, 6]
    assert all(isinstance(x["g/ca_kl"], float) and 0 <= x["g/ca_kl"] < float("inf") for x in lines)


def test_a_run_with_ca_resumes_bit_identically(tmp_path):
    """eps is drawn from the global torch RNG, which checkpoints save and restore."""

    def run(folder, steps, resume=False):
        cfg = tiny_config(
            generator={"options": {"ca_dim": CA_DIM}},
            loss={"terms": {"ca_kl": 2.0}},
            train={"steps": steps, "checkpoint_every": 2},
        )
        Trainer(cfg, tmp_path / folder, resume=resume, quiet=True, tensorboard=False).fit()

    run("a", 4)
    run("b", 2)
    run("b", 4, resume=True)
    a, b = (weights(tmp_path / folder, 4) for folder in "ab")
    assert "ca.weight" in a and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ca_kl_without_conditioning_augmentation_is_a_one_line_usage_error(tmp_path):
    g = DCGANGenerator(DCGANGeneratorConfig(ngf=8), resolution=32, text_dim=TEXT_DIM)
    with pytest.raises(UsageError, match=re.escape(NO_CA)):
        ConditioningAugmentationKL().g_loss(g_step_outputs(g, torch.randn(B, TEXT_DIM)))

    cfg = tiny_config(loss={"terms": {"ca_kl": 2.0}})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    with pytest.raises(UsageError) as caught:
        trainer.fit()
    assert str(caught.value) == NO_CA
    assert trainer.step == 0  # it fails in the first step, before any update is counted


def test_an_engine_run_with_affine_fusion(tmp_path):
    cfg = tiny_config(
        generator={"options": {"conditioning": "affine"}},
        train={"steps": 2, "log_every": 1, "checkpoint_every": 0},
    )
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    assert trainer.G.cfg.conditioning == "affine"
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    result = trainer.fit()
    assert result.status == "finished" and result.step == 2
    lines = metrics(tmp_path / "run")
    assert [x["step"] for x in lines] == [1, 2]
    assert all(torch.isfinite(torch.tensor(x["g/total"])) for x in lines)
    after = trainer.G.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("blocks.0.fuse"))
