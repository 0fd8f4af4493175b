"""Scaling: training img/s of the real engine on 1 and on N processes of this machine (DDP; Gloo on CPU).

Each configuration is a fresh ``torchrun --standalone --nproc_per_node=P`` launch of this script as a
worker. Every worker builds the real :class:`~t2i.engine.trainer.Trainer` (default recipe, shrunk by the
options below) inside :func:`t2i.engine.distributed.session`, runs ``--warmup`` untimed steps, waits at a
barrier, runs ``--steps`` timed ``train_step()`` calls, and waits at a barrier again; rank 0 reports
``steps x batch x P / seconds``: real images through D per second, all processes together.

Weak scaling: ``--batch-size`` is per process (as in ``t2i run``), so P processes train a global batch
of ``P x batch``. Ideal speed-up on P free cores (or GPUs) is P; the gap is DDP's all-reduce of G's and D's
gradients (twice per step), the per-step stop-flag all-reduce, and on CPU each process competing for
memory bandwidth. Launch and start-up (imports, data rendering) are outside the timed window.

Run: ``.venv/bin/python benchmarks/scaling.py`` (``--help`` for options; ``--device cuda --procs 1,2``
on a machine with 2 GPUs). Each process uses ``--threads`` torch threads (default 1), so P processes use
P cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _config(args: argparse.Namespace):
    from t2i.config import resolve

    return resolve({
        "data": {"resolution": args.resolution, "options": {"train_size": args.train_size, "test_size": 64}},
        "generator": {"options": {"ngf": args.ngf}},
        "discriminator": {"options": {"ndf": args.ndf}},
        "train": {"batch_size": args.batch_size, "steps": args.warmup + args.steps + 1, "log_every": 10**6,
                  "sample_every": 0, "checkpoint_every": 0, "device": args.device, "ema": 0.999},
        "eval": {"metrics": []},
    })


def worker(args: argparse.Namespace) -> None:
    from t2i.engine import distributed
    from t2i.engine.trainer import Trainer

    torch.set_num_threads(args.threads)
    with distributed.session(args.device) as ctx, tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(_config(args), Path(tmp) / "run", quiet=True, tensorboard=False,
                          rank=ctx.rank, world_size=ctx.world_size)
        for _ in range(args.warmup):
            trainer.train_step()
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        sync()
        distributed.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        sync()
        distributed.barrier()
        seconds = time.perf_counter() - start
        if ctx.rank == 0:
            images = args.steps * args.batch_size * ctx.world_size
            Path(args.result).write_text(json.dumps({"procs": ctx.world_size, "seconds": seconds, "img_per_s": images / seconds}))


def measure(procs: int, args: argparse.Namespace, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               __file__, "--worker", "--result", str(result), *argv]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"{procs} process(es) failed:\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", default="1,2", help="process counts to measure, comma-separated")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="launches per process count (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    shared = ("resolution", "batch_size", "ngf", "ndf", "train_size", "steps", "warmup", "device", "threads")
    argv = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in shared]
    counts = [int(p) for p in args.procs.split(",")]
    print(f"# scaling: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}, "
          f"{args.threads} thread(s)/process; {args.resolution} px, ngf {args.ngf}, ndf {args.ndf}, "
          f"batch {args.batch_size}/process, {args.steps} timed steps after {args.warmup}")
    rates: dict[int, float] = {}
    for procs in counts:
        runs = [measure(procs, args, argv)["img_per_s"] for _ in range(args.repeats)]
        rates[procs] = statistics.median(runs)
        print(f"{procs} process(es): {rates[procs]:.1f} img/s (global batch {procs * args.batch_size}; "
              f"repeats {', '.join(f'{r:.1f}' for r in runs)})")
    base = counts[0]
    for procs in counts[1:]:
        print(f"speed-up {procs} vs {base}: {rates[procs] / rates[base]:.2f}x (ideal {procs / base:.0f}x); "
              f"efficiency {rates[procs] / rates[base] / (procs / base):.0%}")


if __name__ == "__main__":
    main()
