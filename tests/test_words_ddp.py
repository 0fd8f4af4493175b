"""Word features from a trainable text encoder on several processes (issue 13): two Gloo processes on CPU
match one process at the same global batch, the encoder included.

The encoder's word pass goes through DistributedDataParallel (``EncoderPasses``), so its gradients are
averaged over the ranks like the sentence pass's; were it called on the bare encoder, each rank's encoder
would learn from its own half of the batch only and the ranks would drift apart (and from one process).

The networks are the toy ones with word attention (no batch norm, which would differ per rank: AttnGAN's
would); the conditions of the equality are those of tests/test_distributed.py (whose launcher is reused).
This file is also the worker torchrun starts: ``python test_words_ddp.py worker OUT BATCH STEPS``.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import t2i
from t2i import plugins
from t2i.config import merge, resolve
from t2i.engine import distributed
from t2i.engine.networks import EncoderPasses
from t2i.engine.trainer import Trainer
from t2i.interfaces import WordFeatures
from t2i.testing import ToyConfig, ToyDiscriminator, ToyGenerator

from t2i_test_helpers import TINY
from test_distributed import _torchrun

pytestmark = pytest.mark.slow


def _pool(words: WordFeatures, query: Tensor) -> Tensor:
    """Masked attention pooling of the words by ``query`` ``(B, Dw)``."""
    scores = (words.features * query[:, None]).sum(-1).masked_fill(~words.mask, float("-inf"))
    return (scores.softmax(1)[..., None] * words.features).sum(1)


class AttendingGenerator(ToyGenerator):
    uses_words = True

    def __init__(self, cfg=None, *, resolution=32, text_dim=16, word_dim=None):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.query = nn.Linear(text_dim, word_dim)
        self.words_in = nn.Linear(word_dim, text_dim)

    def forward(self, z, text, words=None):
        return super().forward(z, text + self.words_in(_pool(words, self.query(text))))


class AttendingDiscriminator(ToyDiscriminator):
    uses_words = True

    def __init__(self, cfg=None, *, resolution=32, text_dim=16, word_dim=None):
        super().__init__(cfg, resolution=resolution, text_dim=text_dim)
        self.query = nn.Linear(text_dim, word_dim)
        self.words_in = nn.Linear(word_dim, text_dim)

    def condition(self, h, text, words):
        return super().condition(h, text + self.words_in(_pool(words, self.query(text))))


def _register() -> None:
    plugin = types.ModuleType("ddpwords")
    plugin.t2i_register_generators = t2i.hookimpl(
        lambda register: register("attending_g", AttendingGenerator, config=ToyConfig))
    plugin.t2i_register_discriminators = t2i.hookimpl(
        lambda register: register("attending_d", AttendingDiscriminator, config=ToyConfig))
    plugins.register_plugin(plugin, name="ddpwords")


def _trainer(run_dir: Path, batch: int, steps: int, **kwargs) -> Trainer:
    raw = merge(TINY, {"data": {"options": {"train_size": 64, "test_size": 16}},
                       "loss": {"terms": {"matching_aware": 0.0}},  # its negatives are rolled within a rank's batch
                       "train": {"batch_size": batch, "steps": steps, "checkpoint_every": 0, "ema": 0.0}})
    raw["generator"] = {"name": "attending_g", "options": {"width": 4}}
    raw["discriminator"] = {"name": "attending_d", "options": {"width": 4}}
    raw["text_encoder"] = {"name": "gru", "options": {"dim": 8, "word_dim": 8}}  # trainable
    return Trainer(resolve(raw), run_dir, quiet=True, tensorboard=False, **kwargs)


def _state(trainer: Trainer) -> dict[str, Tensor]:
    """G's, D's and the text encoder's parameters and buffers, by name."""
    parts = {"G": trainer.G, "D": trainer.D, "T": trainer.encoder}
    return {f"{p}.{k}": v.detach().clone() for p, net in parts.items() for k, v in net.state_dict().items()}


def _worker(out: Path, batch: int, steps: int) -> None:
    _register()
    with distributed.session("cpu") as ctx:
        trainer = _trainer(out / "run", batch, steps, rank=ctx.rank, world_size=ctx.world_size)
        wrapped = trainer.nets.encoder_train
        assert isinstance(wrapped, nn.parallel.DistributedDataParallel) and isinstance(wrapped.module, EncoderPasses)
        history = []
        for _ in range(steps):
            trainer.train_step()
            history.append(distributed.all_gather_object(_state(trainer)))
        if ctx.rank == 0:
            torch.save(history, out / "history.pt")


@pytest.fixture
def attending():
    _register()
    yield
    plugins.unregister_plugin("ddpwords")


def test_ddp_trainable_encoder_words_match_one_process_with_the_global_batch(tmp_path, attending):
    steps, batch = 3, 16
    done = _torchrun(__file__, "worker", str(tmp_path), str(batch), str(steps))
    assert done.returncode == 0, done.stderr[-3000:]
    history = torch.load(tmp_path / "history.pt", weights_only=True)
    single = _trainer(tmp_path / "single", batch, steps)
    start = _state(single)
    for step, (rank0, rank1) in enumerate(history, 1):
        for name in rank0:
            assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks after step {step}"
        single.train_step()
        reference = _state(single)
        for name, value in reference.items():
            assert torch.allclose(rank0[name], value, rtol=1e-4, atol=2e-5), (
                f"{name} after step {step}: 2 x {batch // 2} differs from 1 x {batch} by "
                f"{(rank0[name] - value).abs().max():.2e}")
    moved = {k: (reference[k] - start[k]).abs().max().item() for k in reference if k.startswith("T.")
             and reference[k].is_floating_point()}
    assert max(moved.values()) > 5e-4, moved  # the encoder learned: its gradients were compared, not zeros


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
