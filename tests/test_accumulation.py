"""Gradient accumulation: ``train.batch_size`` is the global batch, ``train.micro_batch`` splits it inside the step.

The equivalence tested here: with a loss that never compares the samples of a batch with each other (hinge,
no matching-aware term), no batch statistics (the ``affine`` generator; D without batch norm), no spectral
norm and fp32, ``k`` steps on batches of
16 give the same weights whether each update runs on the 16 at once or on 4 micro-batches of 4 whose
gradients are accumulated. "The same" up to float rounding: a sum over 16 samples is added up in another
order (four partial sums), which moves each gradient by about 1e-7 relative; Adam divides by the root of
the gradient's running square, so parameters whose gradient is near zero can move by a few 1e-6 after a
few steps. rtol 1e-4 / atol 2e-5 is far below what any real difference produces (the weights move by more
than 5e-4 over the same steps, and a wrong loss scaling -- summing instead of averaging the micro-batches --
moves them by Adam's full step size).

Spectral norm is left out because its power iteration is state that advances with each forward pass: the
step runs it on the first micro-batch only (so an update makes as many iterations as unsplit), and the
later micro-batches' real pass then uses the vectors of the fake pass (one iteration further), which moves
sigma by about 1e-4 relative: close, not equal.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from t2i.augment import DiffAugment
from t2i.engine.feed import process_batch
from t2i.engine.optim import Precision
from t2i.engine.step import GANStep, micro_batches
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.interfaces import DiscOutput, LossTerm, WordFeatures
from t2i.losses import HingeLoss, MatchingAwareTerm

from t2i_test_helpers import TINY_FLAGS, run_cli, tiny_config

ROLL_FREE = {  # no term compares a sample with its neighbour, no batch statistics in G
    "generator": {"options": {"ngf": 8, "conditioning": "affine"}},
    "loss": {"adversarial": "hinge", "terms": {"matching_aware": 0.0}},
    "discriminator": {"options": {"ndf": 8, "norm": "none", "spectral_norm": False}},  # see the module docstring
    "text_encoder": {"options": {"dim": 16, "trainable": True}},  # its gradients are accumulated too
}


def _trainer(tmp_path, name: str, micro: int, steps: int = 3, **train) -> Trainer:
    cfg = tiny_config(train={"batch_size": 16, "micro_batch": micro, "steps": steps, "checkpoint_every": 0, **train},
                      **ROLL_FREE)
    return Trainer(cfg, tmp_path / name, quiet=True, tensorboard=False)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"G.{k}": v.detach().clone() for k, v in trainer.G.state_dict().items()}
    out.update({f"D.{k}": v.detach().clone() for k, v in trainer.D.state_dict().items()})
    out.update({f"T.{k}": v.detach().clone() for k, v in trainer.encoder.state_dict().items()})
    return out


@pytest.mark.slow
def test_micro_batches_accumulate_to_the_whole_batch(tmp_path):
    whole, split = _trainer(tmp_path, "whole", 0), _trainer(tmp_path, "split", 4)
    assert split.accumulation == 4 and split.gan_step.micro_batch == 4 and whole.gan_step.micro_batch == 0
    assert whole.encoder.trainable
    start = _weights(whole)
    calls = []
    split.G.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    for _ in range(3):
        logs_whole, logs_split = whole.train_step(), split.train_step()
    assert calls == [4] * 24  # 3 steps x (D + G) x 4 micro-batches of 4
    a, b = _weights(whole), _weights(split)
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=2e-5), (
            f"{name}: micro-batches of 4 differ from the batch of 16 by {(a[name] - b[name]).abs().max():.2e}")
    moved = max((a[k] - start[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 5e-4  # Adam moved them by more than twice its step size
    for key in ("d/adv", "d/total", "g/adv", "d/real_logit"):  # logged losses: means over the whole batch
        assert torch.allclose(logs_whole[key], logs_split[key], rtol=1e-4, atol=1e-5), key


def test_the_feed_and_its_random_streams_do_not_depend_on_the_micro_batch(tmp_path):
    whole, split = _trainer(tmp_path, "whole", 0, steps=1), _trainer(tmp_path, "split", 8, steps=1)
    whole.train_step()
    split.train_step()
    a, b = whole.feed.state_dict(), split.feed.state_dict()
    assert a["position"] == b["position"] == 1
    assert torch.equal(a["rng"], b["rng"]) and torch.equal(a["noise_rng"], b["noise_rng"])


def test_process_batch_splits_the_global_batch():
    assert process_batch(64, 1) == (64, 1)
    assert process_batch(64, 4) == (16, 1)
    assert process_batch(64, 4, micro_batch=4) == (16, 4)
    assert process_batch(64, 2, micro_batch=32) == (32, 1)  # a micro-batch of the whole share: no accumulation
    with pytest.raises(UsageError, match=r"train.micro_batch 5 does not divide the 16 images per process.*2, 4, 8"):
        process_batch(16, 1, micro_batch=5)
    with pytest.raises(UsageError, match="does not split over 3 processes"):
        process_batch(16, 3)
    assert micro_batches(8, 0) == [slice(0, 8)]
    assert micro_batches(8, 4) == [slice(0, 4), slice(4, 8)]


def test_bf16_with_accumulation_and_grad_clip_trains_and_the_summary_says_so(tmp_path):
    trainer = _trainer(tmp_path, "bf16", 8, steps=1, precision="bf16", grad_clip=1.0, log_every=1)
    start = _weights(trainer)
    result = trainer.fit()
    assert result.status == "finished" and all(isinstance(v, float) for v in result.last.values())
    after = _weights(trainer)
    assert any(not torch.equal(start[k], after[k]) for k in start)
    summary = (tmp_path / "bf16" / "summary.md").read_text()
    assert "batch 16 (micro-batches of 8, 2 accumulated per update and process)" in summary


def test_a_micro_batch_that_does_not_divide_the_batch_is_a_usage_error(tmp_path):
    out = tmp_path / "r"
    done = run_cli("run", *TINY_FLAGS, "--micro-batch", "6", "--steps", "1", "--out", str(out))
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert "train.micro_batch 6 does not divide the 16 images per process" in line and "0 for no accumulation" in line
    assert not out.exists()  # refused before the run folder is written


# -- word features through the step (with micro-batches: each gets its own rows) ---------------------------


class WordG(nn.Module):
    uses_words, resolution, z_dim = True, 8, 4

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4 + 5, 3 * 8 * 8)
        self.seen: list[WordFeatures] = []

    def forward(self, z, text, words=None):
        self.seen.append(words)
        pooled = (words.features * words.mask.unsqueeze(-1)).sum(1)
        return torch.tanh(self.fc(torch.cat([z, text + pooled], 1))).view(-1, 3, 8, 8)


class WordD(nn.Module):
    uses_words, resolution = True, 8

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)
        self.seen: list[tuple] = []

    def forward(self, image, text, mismatched_text=None, *, words=None, mismatched_words=None):
        self.seen.append((words, mismatched_words))
        h = self.fc(image.flatten(1))

        def score(t, w):
            return (h * (t + w.features.mean(1))).sum(1)

        mismatched = None if mismatched_text is None else score(mismatched_text, mismatched_words)
        return DiscOutput(score(text, words), [], mismatched)


class WordsTerm(LossTerm):
    needs = frozenset({"words"})

    def __init__(self):
        super().__init__()
        self.seen: list[WordFeatures | None] = []

    def d_loss(self, out):
        self.seen.append(out.words)
        return out.words.features.pow(2).mean()  # reaches the (trainable) encoder's features


def test_word_features_reach_g_d_and_terms_per_micro_batch():
    torch.manual_seed(0)
    G, D, term = WordG(), WordD(), WordsTerm()
    encoder = nn.Parameter(torch.randn(4, 3, 5))  # stands for a trainable encoder's output
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam([*D.parameters(), encoder])
    step = GANStep(G=G, D=D, G_train=G, D_train=D, D_frozen=D, adversarial=HingeLoss(),
                   terms=[("words", 1.0, term), ("matching_aware", 1.0, MatchingAwareTerm())],
                   needs=frozenset({"words", "mismatched"}), augment=DiffAugment(),
                   precision=Precision("fp32", torch.device("cpu")),
                   opt_g=opt_g, opt_d=opt_d, G_params=list(G.parameters()), D_params=[*D.parameters(), encoder],
                   noise=lambda n: torch.randn(n, 4), micro_batch=2)
    mask = torch.tensor([[True, True, False]] * 4)
    words, before = WordFeatures(encoder * 1.0, mask), encoder.detach().clone()
    text = torch.randn(4, 5)
    logs = step.discriminator(torch.rand(4, 3, 8, 8) * 2 - 1, text, 0, None, words=words)
    assert torch.isfinite(logs["d/words"])
    assert encoder.grad is not None and encoder.grad.abs().sum() > 0  # the encoder's one backward pass
    assert [len(w) for w in G.seen] == [2, 2]  # G (no grad) on each micro-batch's rows
    assert not G.seen[0].features.requires_grad  # detached for G
    real_pass = D.seen[0]  # micro-batch 1, real images: words and the micro-batch's rows rolled by one
    assert torch.equal(real_pass[0].features, before[:2])
    assert torch.equal(real_pass[1].features, before[:2].roll(1, 0))
    assert D.seen[1][1] is None  # the fake pass scores no mismatched captions
    assert len(term.seen) == 2 and torch.equal(term.seen[1].mask, mask[2:])
    G.seen.clear()
    step.generator(torch.zeros(4, 3, 8, 8), text, 0, None, words=words)
    assert [len(w) for w in G.seen] == [2, 2] and not any(w.features.requires_grad for w in G.seen)
