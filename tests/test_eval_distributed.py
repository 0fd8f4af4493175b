"""Evaluation split over processes: each rank generates and maps a share of the images, the rows are gathered
in image order, and the figures are those of one process (t2i.engine.evaluate, t2i.metrics.generated_rows).

The unit tests run in this process: the shares, the noise stream that :meth:`SeededGenerate.skip` advances,
and ``generated_rows`` against mapping every image at once. The ``test_ddp_`` test launches two Gloo ranks
with torchrun (this file is also the worker: ``python test_eval_distributed.py worker OUT``) and compares
their figures with one process's, exactly: the shares start where a chunk and a batch start, so each rank
runs the very batches one process runs, and the statistics are summed from the gathered rows in one order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2i.engine import distributed
from t2i.engine.evaluate import RankShare, evaluate, make_generate
from t2i.engine.trainer import Trainer
from t2i.metrics import generate_images, generated_rows
from t2i.metrics.inception import write_random_inception_weights

from t2i_test_helpers import tiny_config

CHUNK = 4  # captions per generate() call in the worker: 12 images make three shares' worth of blocks


def _trainer(run_dir: Path, weights: Path, **kwargs) -> Trainer:
    """A tiny untrained run whose evaluator computes fid (random Inception, 12 images in batches of 4) and
    diversity (6 captions x 2 images), over an 8-image test split."""
    inception = {"weights": str(weights), "n_generated": 12, "batch_size": 4, "device": "cpu"}
    cfg = tiny_config(data={"options": {"test_size": 8}},
                      eval={"metrics": ["fid", "diversity"],
                            "options": {"fid": inception, "diversity": {"n_captions": 6, "per_caption": 2}}})
    trainer = Trainer(cfg, run_dir, quiet=True, tensorboard=False, **kwargs)
    for _, metric, _ in trainer.evaluator.metrics:
        metric.chunk = CHUNK
    return trainer


def _evaluate(trainer: Trainer) -> dict[str, float]:
    return trainer.evaluator.run(0, trainer.sample_generator(), trainer.encoder, trainer.device)


def _worker(out: Path) -> None:
    """Both metrics split over the two ranks; then diversity again as a metric that does not split (rank 0
    computes it alone, rank 1 skips it)."""
    torch.set_num_threads(1)
    with distributed.session("cpu") as ctx:
        trainer = _trainer(out / "run", out / "inception.pth", rank=ctx.rank, world_size=ctx.world_size)
        values = _evaluate(trainer)
        ev = trainer.evaluator
        (diversity,) = [m for m in ev.metrics if m[0] == "diversity"]
        diversity[1].splits_across_ranks = False
        alone, _ = evaluate([diversity], trainer.sample_generator(), trainer.encoder, ev.reference, trainer.device,
                            seed=ev.seed)
        alone_by_rank = distributed.all_gather_object(alone)
        if ctx.rank == 0:
            (out / "values.json").write_text(json.dumps({"split": values, "rank 0 alone": alone_by_rank}))


# -- in this process ---------------------------------------------------------------------------------
def test_rank_shares_are_whole_blocks_in_order_and_cover_every_image():
    for n, unit, world in [(12, 4, 2), (10, 4, 3), (3, 4, 2), (1000, 250, 8)]:
        shares = [RankShare(r, world).share(n, unit) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        for (_, stop), (start, _) in zip(shares, shares[1:]):
            assert stop == start and (start % unit == 0 or start == n)
    assert [RankShare(r, 2).share(3, 4) for r in (0, 1)] == [(0, 3), (3, 3)]  # fewer blocks than ranks: rank 1 idles


class _Tiny(torch.nn.Module):
    """A generator whose image is its noise: what skip() must keep aligned is visible in the pixels."""

    z_dim = 3 * 4 * 4

    def forward(self, z, text):
        return torch.tanh(z.view(-1, 3, 4, 4) + text[:, :1, None, None])


class _Encoder(torch.nn.Module):
    def encode(self, captions):
        return torch.tensor([[float(len(c))] for c in captions]) / 10


def test_skip_draws_the_noise_a_call_would_so_a_share_gets_the_images_one_process_makes():
    captions = [f"caption {i}" for i in range(10)]
    whole = generate_images(make_generate(_Tiny(), _Encoder(), torch.device("cpu"), seed=3, batch_size=3), captions, 4, 4)
    late = make_generate(_Tiny(), _Encoder(), torch.device("cpu"), seed=3, batch_size=3)
    late.skip(4)
    assert torch.equal(generate_images(late, captions[4:], 4, 4), whole[4:])


def test_generated_rows_in_one_process_equals_mapping_every_image_at_once():
    captions = [f"caption {i}" for i in range(11)]

    def rows(images):  # batches of 2, as an extractor's
        return {"mean": torch.cat([images[i : i + 2].float().mean((1, 2, 3)) for i in range(0, len(images), 2)])}

    generate = make_generate(_Tiny(), _Encoder(), torch.device("cpu"), seed=1)
    expected = rows(generate_images(generate, captions, 4, 3))
    generate = make_generate(_Tiny(), _Encoder(), torch.device("cpu"), seed=1)
    got = generated_rows(generate, captions, 4, rows, chunk=3, align=2)
    assert torch.equal(got["mean"], expected["mean"])


# -- two Gloo processes ------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_two_ranks_give_exactly_the_figures_of_one_process_and_rank_0_runs_unsplit_metrics_alone(tmp_path):
    weights = write_random_inception_weights(tmp_path / "inception.pth", seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", distributed.TIMEOUT_ENV: "120"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "worker", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "values.json").read_text())
    alone, two = two["rank 0 alone"], two["split"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _evaluate(_trainer(tmp_path / "single", weights))
    finally:
        torch.set_num_threads(threads)
    assert set(one) == set(two) and {"fid", "diversity/within_caption"} <= set(one)
    assert one == two  # bit-identical
    assert alone[1] == {} and alone[0] == {k: v for k, v in one.items() if k.startswith("diversity")}


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]))
