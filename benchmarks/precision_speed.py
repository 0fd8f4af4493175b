"""Precision and memory format: training img/s of the default recipe in fp32, channels_last, bf16 autocast
and bf16 + channels_last (optionally torch.compile), and each one's ratio to fp32.

Every setting trains the same recipe (``t2i run``'s defaults otherwise: Shapes at 32 px, frozen bag of
words, DCGAN G and D, hinge + matching-aware term, batch 64) through the real ``Trainer.fit()``; the clock
is read as each step starts (as in ``engine_overhead.py``), so a window of ``--steps`` steps after
``--warmup`` untimed ones is timed, and the median over ``--repeats`` is reported. Settings alternate
within each repeat so that drift in machine load hits all alike.

``precision = "auto"`` (the default) picks bf16 exactly where this script should show it to be faster:
CUDA GPUs with bf16 and CPUs with AVX512-BF16 or AMX (:func:`t2i.device.fast_bf16`); the script prints
what ``auto`` chose here. Whether bf16 *learns* as well as fp32 is not a speed question: that is measured
by ``examples/studies/default-text.toml`` (its fp32 trial).

Run: ``.venv/bin/python benchmarks/precision_speed.py`` (``--help``); ``--compile`` adds torch.compile.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile

import torch

from engine_overhead import _clock, _sync, machine_info, window_rate
from t2i.config import resolve
from t2i.device import fast_bf16, pick_device
from t2i.engine.trainer import Trainer

SETTINGS = {  # name -> (precision, channels_last, compile)
    "fp32": ("fp32", False, False),
    "fp32 + channels_last": ("fp32", True, False),
    "bf16": ("bf16", False, False),
    "bf16 + channels_last": ("bf16", True, False),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--steps", type=int, default=150, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before each timed window")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all settings")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="auto: cuda if available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: torch's own choice)")
    p.add_argument("--compile", action="store_true", help="also time bf16 + channels_last + torch.compile")
    return p.parse_args(argv)


def rate(args: argparse.Namespace, precision: str, channels_last: bool, compile: bool, tmp: str) -> float:
    """img/s of ``--steps`` steps of ``Trainer.fit()`` after ``--warmup`` untimed ones."""
    cfg = resolve({
        "data": {"resolution": args.resolution},
        "train": {"device": args.device, "steps": args.warmup + args.steps + 1, "precision": precision,
                  "channels_last": channels_last, "compile": compile, "sample_every": 0, "checkpoint_every": 0,
                  "log_every": 50},
        "eval": {"metrics": []},
    })
    trainer = Trainer(cfg, tempfile.mkdtemp(dir=tmp), quiet=True, tensorboard=False)
    stamps: list[tuple[float, float]] = []
    inner, edges = trainer.train_step, {args.warmup, args.warmup + args.steps}

    def timed_step():
        if len(stamps) in edges:
            _sync(trainer.device)
        stamps.append(_clock())
        return inner()

    trainer.train_step = timed_step  # type: ignore[method-assign]
    with contextlib.redirect_stderr(io.StringIO()):
        trainer.fit()
    return window_rate(stamps, args.warmup, args.steps, cfg.train.batch_size)[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    fast, why = fast_bf16(device)
    print(machine_info(device))
    print(f"precision auto here: {'bf16' if fast else 'fp32'} ({why})")
    settings = dict(SETTINGS)
    if args.compile:
        settings["bf16 + channels_last + compile"] = ("bf16", True, True)
    rates: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory(prefix="t2i-bench-") as tmp:
        for _ in range(args.repeats):
            for name, (precision, cl, comp) in settings.items():
                rates[name].append(rate(args, precision, cl, comp, tmp))
    base = statistics.median(rates["fp32"])
    print(f"\n{'setting':34s} {'img/s (median)':>15s} {'x fp32':>8s}   repeats")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:34s} {median:15.0f} {median / base:8.2f}   {', '.join(f'{v:.0f}' for v in values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
