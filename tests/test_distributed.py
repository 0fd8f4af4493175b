"""Distributed training (DDP) on CPU with Gloo, through real torchrun launches.

Each launch starts two processes that import torch, so these tests are few and tiny; they carry the
``slow`` marker and their names start with ``test_ddp_`` (``pytest -k ddp`` runs them, ``-m "not slow"``
skips them).

How "the same as one process" is constructed: ``train.batch_size`` is the global batch ``2B``; rank ``r`` of
``W`` takes images ``perm[r::W]`` of each epoch's permutation and rows ``r::W`` of the noise drawn for the
global batch, so at every step the union of the two ranks' batches of ``B`` is exactly the batch of ``2B``
one process takes, with the same noise
for the same image. DDP averages the two ranks' gradients, which equals the gradient of the mean loss over
``2B`` when the loss is a per-image mean. The caption each image gets is drawn for the global batch and
sliced the same way. Two things would break the equality and are set aside here: batch norm in G
(per-rank statistics; the ``affine`` generator has none) and the matching-aware term (its negatives are
captions rolled within a rank's batch; weight 0). With ``train.micro_batch`` each rank also splits its
``B`` into micro-batches and all-reduces once, after the last (DDP's ``no_sync`` before it): the same
equality again.

This file is also the worker torchrun starts: ``python test_distributed.py worker OUT BATCH STEPS [crash]``
(``BATCH``: the global batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from t2i.engine import distributed
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError

from t2i_test_helpers import TINY_FLAGS, run_cli, tiny_config

pytestmark = pytest.mark.slow

EQUIVALENT = {  # see the module docstring
    "generator": {"options": {"ngf": 8, "conditioning": "affine"}},
    "loss": {"terms": {"matching_aware": 0.0}},
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200", distributed.TIMEOUT_ENV: "120"}


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """G's and D's parameters and buffers (spectral norm's vectors included), by name."""
    out = {f"G.{k}": v.detach().clone() for k, v in trainer.G.state_dict().items()}
    out.update({f"D.{k}": v.detach().clone() for k, v in trainer.D.state_dict().items()})
    return out


def _equivalent_trainer(run_dir: Path, batch: int, steps: int, micro_batch: int = 0, *, spectral_norm: bool = True,
                        **kwargs) -> Trainer:
    """``spectral_norm=False``: D without it, for the micro-batch comparison (its power iteration advances on
    an update's first micro-batch only, which moves sigma by ~1e-4 relative: see tests/test_accumulation.py)."""
    plain_d = {} if spectral_norm else {"discriminator": {"options": {"norm": "none", "spectral_norm": False}}}
    cfg = tiny_config(train={"batch_size": batch, "steps": steps, "checkpoint_every": 0, "micro_batch": micro_batch},
                      **EQUIVALENT, **plain_d)
    trainer = Trainer(cfg, run_dir, quiet=True, tensorboard=False, **kwargs)
    return trainer


def _worker(out: Path, batch: int, steps: int, crash: bool) -> None:
    """Two ranks: step by step, gather every rank's weights, without and with micro-batches of 4 (two per
    rank); rank 0 saves them. ``crash``: rank 1 dies."""
    with distributed.session("cpu") as ctx:
        trainer = _equivalent_trainer(out / "run", batch, steps, rank=ctx.rank, world_size=ctx.world_size)
        if crash:
            original = trainer.train_step

            def train_step():
                if ctx.rank == 1 and trainer.step == 2:
                    raise RuntimeError("rank 1 crashed on purpose")
                return original()

            trainer.train_step = train_step
            trainer.fit()
            return
        histories = {}
        for micro in (0, 4):
            if micro:
                trainer = _equivalent_trainer(out / "micro", batch, steps, micro, spectral_norm=False, rank=ctx.rank,
                                              world_size=ctx.world_size)
                assert trainer.accumulation == 2
            history = histories[micro] = []
            for _ in range(steps):
                trainer.train_step()
                history.append(distributed.all_gather_object(_state(trainer)))
        if ctx.rank == 0:
            torch.save(histories, out / "history.pt")


@pytest.mark.parametrize("micro", [0, 4])
def test_ddp_two_ranks_stay_identical_and_match_one_process_with_the_global_batch(tmp_path_factory, micro):
    steps, batch = 3, 16
    out = tmp_path_factory.getbasetemp() / "ddp-equivalence"  # one launch serves both parameters
    if not (out / "history.pt").is_file():
        done = _torchrun(__file__, "worker", str(out), str(batch), str(steps))
        assert done.returncode == 0, done.stderr[-3000:]
    history = torch.load(out / "history.pt", weights_only=True)[micro]
    # one process, no micro-batches, the same D
    single = _equivalent_trainer(tmp_path_factory.mktemp("single"), batch, steps, spectral_norm=not micro)
    start = _state(single)
    for step, (rank0, rank1) in enumerate(history, 1):
        for name in rank0:  # bit-identical across ranks: weights and buffers
            assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks after step {step}"
        single.train_step()
        reference = _state(single)
        for name, value in reference.items():
            assert torch.allclose(rank0[name], value, rtol=1e-4, atol=2e-5), (
                f"{name} after step {step}: 2 x {batch // 2} (micro-batch {micro}) differs from 1 x {batch} by "
                f"{(rank0[name] - value).abs().max():.2e}"
            )
    moved = max((reference[k] - start[k]).abs().max().item() for k in reference if reference[k].is_floating_point())
    assert moved > 5e-4  # the comparison is not between untouched weights (Adam moved them by > 2 x lr)


def test_ddp_nproc_run_writes_once_and_resumes_bit_identically_under_torchrun(tmp_path):
    flags = [*TINY_FLAGS, "--batch-size", "16", "--micro-batch", "4", "--checkpoint-every", "2", "--ema", "0.999",
             "--quiet"]  # 2 processes x 2 accumulated micro-batches of 4
    env = _env()
    # an uninterrupted 2-process run of 4 steps, and a 2-step one resumed to 4 with torchrun itself
    straight = run_cli("run", "--nproc", "2", *flags, "--steps", "4", "--out", str(tmp_path / "a"), env=env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = run_cli("run", "--nproc", "2", *flags, "--steps", "2", "--out", str(tmp_path / "b"), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun("-m", "t2i", "run", "--resume", str(tmp_path / "b"), "--steps", "4", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step 2" in resumed.stderr and "x 2 processes (gloo)" in resumed.stderr

    for run in (tmp_path / "a", tmp_path / "b"):
        # one writer: one metrics line per logged step, one TensorBoard file per launch, no stray files
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == [2, 4]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
        assert not [p for p in run.rglob(".*")], "temporary files left behind"
    assert len(list((tmp_path / "a" / "tensorboard").iterdir())) == 1
    assert straight.stdout.count("run folder:") == 1 and straight.stderr.count("t2i run into") == 1

    state_a = torch.load(tmp_path / "a" / "checkpoints" / "step_00000004" / "state.pt", weights_only=True)
    ranks = state_a["random"]["ranks"]
    assert state_a["random"]["world_size"] == 2 and len(ranks) == 2
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    from safetensors.torch import load_file

    for name in ("generator", "discriminator", "generator_ema"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / f"{name}.safetensors"))
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after a 2-process resume"

    one = run_cli("run", "--resume", str(tmp_path / "b"), "--steps", "6", env=env)  # one process
    assert one.returncode == 2 and "trained on 2 process(es)" in one.stderr


def test_ddp_study_runs_each_trial_as_a_distributed_job(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(
        'name = "ddp"\nmetrics = []\n[base]\n"data.resolution" = 32\n"generator.options.ngf" = 8\n'
        '"data.options" = { train_size = 64, test_size = 32 }\n'
        '"discriminator.options.ndf" = 8\n"text_encoder.options.dim" = 16\n'
        'train = { batch_size = 16, log_every = 1, sample_every = 0, checkpoint_every = 0, device = "cpu" }\n'
        '[budget]\nsteps = 2\n[[variants]]\nname = "two processes"\n'
    )
    result = run_cli("study", "run", str(study), "--out", str(tmp_path / "out"), "--nproc", "2", "-q", env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "out" / "runs" / "two-processes-seed0"
    state = json.loads((run / "trial.json").read_text())
    assert state["status"] == "finished" and state["step"] == 2
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]  # one writer
    assert (tmp_path / "out" / "runs" / "two-processes-seed0.log").is_file()
    assert torch.load(run / "checkpoints" / "step_00000002" / "state.pt", weights_only=True)["random"]["world_size"] == 2


def test_ddp_a_crashed_rank_ends_the_job_with_a_message(tmp_path):
    start = time.monotonic()
    done = _torchrun(__file__, "worker", str(tmp_path), "16", "6", "crash", timeout=240)
    assert done.returncode != 0
    assert time.monotonic() - start < 200  # no hang until the collective timeout of a stuck job
    assert "rank 1 crashed on purpose" in done.stderr


# -- without torchrun -----------------------------------------------------------------------------------


def test_ddp_world_size_without_a_process_group_is_refused(tmp_path):
    with pytest.raises(UsageError, match="torchrun"):
        Trainer(tiny_config(), tmp_path / "run", quiet=True, tensorboard=False, rank=0, world_size=2)


def test_ddp_sync_bn_keeps_each_layer_and_is_refused_on_cpu():
    from t2i_dcgan.models import DCGANGenerator, DCGANGeneratorConfig

    torch.manual_seed(0)
    g = DCGANGenerator(DCGANGeneratorConfig(ngf=8, conditioning="concat"), resolution=32, text_dim=16)
    z, text = torch.randn(4, g.z_dim), torch.randn(4, 16)
    before = g(z, text)
    bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    params = [id(p) for p in g.parameters()]
    assert distributed.convert_sync_batchnorm(g) == len(bns) > 0
    assert all(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)
    assert [id(p) for p in g.parameters()] == params  # optimisers built before stay valid
    assert torch.allclose(g(z, text), before, atol=1e-6)  # one process: plain batch norm underneath
    with pytest.raises(UsageError, match="CUDA"):
        distributed.check_sync_bn(torch.device("cpu"), 2)


def test_ddp_nproc_zero_is_a_usage_error(tmp_path):
    from t2i.cli import main

    assert main(["run", *TINY_FLAGS, "--steps", "1", "--out", str(tmp_path / "r"), "--nproc", "0"]) == 2


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), crash=sys.argv[5:6] == ["crash"])
