"""Lazy R1 (the core's ``r1`` with ``every``) and StyleGAN2's path-length term: the conformance kit, then the
laziness (applied every k steps, scaled by k, no input gradient paid for in between), pl_mean's running mean,
and the one-line refusal of a generator without mapping/synthesis."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from t2i.config import merge, resolve
from t2i.engine.step import GANStep
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.interfaces import StepOutputs
from t2i.losses import HingeLoss, MatchingAwareTerm, R1Config, R1Penalty
from t2i.testing import check_loss, check_training_step
from t2i_stylegan.discriminator import StyleGANDiscriminator, StyleGANDiscriminatorConfig
from t2i_stylegan.generator import StyleGANGenerator, StyleGANGeneratorConfig
from t2i_stylegan.regularizers import PathLengthConfig, PathLengthTerm

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from t2i_test_helpers import TINY  # noqa: E402  (the repository's tiny experiment configs)

TEXT_DIM = 16


def tiny_g():
    cfg = StyleGANGeneratorConfig(channel_base=256, channel_max=16, w_dim=16, mapping_layers=2)
    return StyleGANGenerator(cfg, resolution=32, text_dim=TEXT_DIM)


def tiny_d():
    return StyleGANDiscriminator(StyleGANDiscriminatorConfig(channel_base=256, channel_max=16), resolution=32,
                                 text_dim=TEXT_DIM)


def outputs(step, *, D=None, G=None, batch=4):
    """The StepOutputs of a D step (real images that require grad, scored by ``D``) at ``step``."""
    gen = torch.Generator().manual_seed(0)
    real = (torch.rand(batch, 3, 32, 32, generator=gen) * 2 - 1).requires_grad_(True)
    text = torch.randn(batch, TEXT_DIM, generator=gen)
    real_out = D(real, text) if D is not None else None
    fake_out = real_out if real_out is not None else SimpleNamespace(logits=torch.zeros(batch))
    return StepOutputs(real_out, fake_out, real, real.detach(), text, HingeLoss(), D, G, step)


# --------------------------------------------------------------------------------------------------
# lazy R1


def test_lazy_r1_applies_every_k_steps_scaled_by_k():
    torch.manual_seed(0)
    D = tiny_d()
    every_step, lazy = R1Penalty(), R1Penalty(R1Config(every=4))
    for step in range(9):
        out = outputs(step, D=D)
        eager = every_step.d_loss(out)
        value = lazy.d_loss(out)
        assert eager is not None and eager > 0
        if step % 4:
            assert value is None and not lazy.active(step)
        else:
            assert lazy.active(step) and torch.allclose(value, 4 * eager)


def test_the_engine_pays_for_no_input_gradient_between_lazy_r1_steps():
    lazy = R1Penalty(R1Config(every=16))
    step = SimpleNamespace(adversarial=HingeLoss(), needs=frozenset({"real_grad", "mismatched"}),
                           terms=[("r1", 5.0, lazy), ("matching_aware", 1.0, MatchingAwareTerm())])
    assert GANStep.needs_at(step, 0) == {"real_grad", "mismatched"}
    assert GANStep.needs_at(step, 1) == {"mismatched"}
    assert GANStep.needs_at(step, 16) == {"real_grad", "mismatched"}
    # another active term asking for real_grad keeps it
    step.terms.append(("r1_eager", 1.0, R1Penalty()))
    assert GANStep.needs_at(step, 1) == {"real_grad", "mismatched"}


def test_lazy_r1_is_refused_with_a_bad_interval():
    with pytest.raises(ValueError, match="every"):
        R1Config(every=0)


def test_lazy_r1_trains_with_the_engine():
    # steps 0 and 2 apply it, step 1 does not (the kit's toy networks; the kit checks the last step logs d/r1)
    check_training_step(loss="hinge", terms={"r1": 5.0}, term_options={"r1": {"every": 2}}, steps=3, batch_size=4)


# --------------------------------------------------------------------------------------------------
# path length


def test_path_length_passes_the_kit():
    check_loss("path_length")  # with its test_options, every=1: laziness is tested below


def test_path_length_is_lazy_and_keeps_a_running_mean():
    torch.manual_seed(0)
    G, term = tiny_g(), PathLengthTerm(PathLengthConfig(every=4, pl_decay=0.5))
    assert term.pl_mean == 0 and "pl_mean" in term.state_dict()  # a buffer: checkpointed with the term
    first = term.g_loss(outputs(0, G=G))
    assert first is not None and first > 0 and first.requires_grad
    mean_after_one = term.pl_mean.clone()
    assert mean_after_one > 0
    for step in (1, 2, 3):
        assert term.g_loss(outputs(step, G=G)) is None and not term.active(step)
    assert torch.equal(term.pl_mean, mean_after_one)  # untouched off its steps
    term.g_loss(outputs(4, G=G))
    assert term.pl_mean != mean_after_one
    # the penalty trains the generator
    first.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


def test_path_length_scales_by_its_interval():
    G = tiny_g()
    values = []
    for every in (1, 4):
        torch.manual_seed(1)  # the same z and image-space noise
        values.append(PathLengthTerm(PathLengthConfig(every=every)).g_loss(outputs(0, G=G)).detach())
    assert torch.allclose(values[1], 4 * values[0])


def test_path_length_uses_a_shrunk_batch():
    G, term = tiny_g(), PathLengthTerm(PathLengthConfig(pl_batch_shrink=2))
    seen = []
    synthesis = G.synthesis
    G.synthesis = lambda ws, **kw: seen.append(ws.shape[0]) or synthesis(ws, **kw)
    term.g_loss(outputs(0, G=G, batch=6))
    assert seen == [3]


def test_path_length_refuses_a_generator_without_mapping_and_synthesis():
    class Plain(torch.nn.Module):
        z_dim = 4

    with pytest.raises(UsageError, match="mapping.*synthesis"):
        PathLengthTerm().g_loss(outputs(0, G=Plain()))


@pytest.mark.slow  # three short runs of the engine
def test_pl_mean_is_checkpointed_and_a_resumed_run_is_bit_identical(tmp_path):
    def config(steps):
        base = {k: v for k, v in TINY.items() if k not in ("generator", "discriminator")}  # DCGAN's widths
        return resolve(merge(base, {
            "generator": {"name": "stylegan", "options": {"channel_base": 128, "channel_max": 8, "w_dim": 8,
                                                          "mapping_layers": 1}},
            "discriminator": {"name": "stylegan", "options": {"channel_base": 128, "channel_max": 8, "cmap_layers": 1}},
            "loss": {"terms": {"path_length": 2.0, "r1": 1.0},
                     "term_options": {"path_length": {"every": 1}, "r1": {"every": 2}}},
            "train": {"batch_size": 4, "steps": steps, "checkpoint_every": 1, "ema": 0.0}}))

    # step 1, after the resume, uses the restored pl_mean (and skips the lazy R1)
    Trainer(config(2), tmp_path / "a", quiet=True, tensorboard=False).fit()
    Trainer(config(1), tmp_path / "b", quiet=True, tensorboard=False).fit()
    Trainer(config(2), tmp_path / "b", resume=True, quiet=True, tensorboard=False).fit()
    for name in ("generator", "discriminator", "term_path_length"):
        a, b = (load_file(str(tmp_path / r / "checkpoints" / "step_00000002" / f"{name}.safetensors")) for r in "ab")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"
    assert a["pl_mean"] > 0
