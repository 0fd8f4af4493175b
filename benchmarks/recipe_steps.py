"""One training step of each 256 px recipe in ``examples/recipes`` (the paper's networks, widths, objective and
batch): seconds per step, img/s and peak memory, on the CPU here or on a GPU when one is present.

Each recipe runs in its own process (so peak memory is that recipe's) through the real ``Trainer``: the data
set is swapped for Shapes at the recipe's resolution (what a step costs does not depend on which images are
in the batch, and CUB/COCO cannot be shipped), everything else is the recipe's. ``--warmup`` untimed steps,
then ``--steps`` timed ones; the clock is read as each step starts, as in ``engine_overhead.py``.

Run: ``.venv/bin/python benchmarks/recipe_steps.py`` (``--help``). On 2 CPU cores a 256 px DF-GAN step at
batch 32 takes tens of seconds: use ``--batch-size`` and ``--steps`` to shorten it there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import torch

from engine_overhead import _clock, _sync, machine_info
from t2i.config import merge, resolve
from t2i.engine.summary import peak_memory
from t2i.engine.trainer import Trainer

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipes", nargs="*", default=None, help="recipe files (default: every *-256.toml)")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch (default: the recipe's)")
    p.add_argument("--precision", default=None, help="override the recipe's precision (fp32, bf16, fp16, auto)")
    p.add_argument("--device", default="auto", help="auto: cuda if available")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: time this recipe in this process
    return p.parse_args(argv)


def time_recipe(path: Path, args: argparse.Namespace) -> dict:
    """Seconds per step, img/s and peak memory of ``path``'s recipe, measured in this process."""
    recipe = tomllib.loads(path.read_text())
    resolution = recipe["data"]["resolution"]
    train = {"device": args.device, "steps": args.warmup + args.steps + 1, "sample_every": 0,
             "checkpoint_every": 0, "log_every": 1000, "epochs": None}
    if args.batch_size:
        train["batch_size"] = args.batch_size
    if args.precision:
        train["precision"] = args.precision
    batch = train.get("batch_size", recipe["train"]["batch_size"])
    # no crop or flip: Shapes refuses both (left/right captions; rendered at powers of two). Their cost is a
    # crop and a flip of a uint8 batch, small next to a step at 256 px
    data = {"name": "shapes", "resolution": resolution, "options": {"train_size": max(4 * batch, 64), "test_size": 16}}
    cfg = resolve(merge({k: v for k, v in recipe.items() if k != "data"},
                        {"data": data, "train": train, "eval": {"metrics": []}}))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", quiet=True, tensorboard=False)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        stamps: list[float] = []
        inner = trainer.train_step

        def timed_step():
            if len(stamps) in (args.warmup, args.warmup + args.steps):
                _sync(trainer.device)
            stamps.append(_clock()[0])
            return inner()

        trainer.train_step = timed_step  # type: ignore[method-assign]
        with contextlib.redirect_stderr(io.StringIO()):
            trainer.fit()
        seconds = (stamps[args.warmup + args.steps] - stamps[args.warmup]) / args.steps
        return {"recipe": path.name, "device": trainer.device.type, "precision": trainer.precision.described,
                "batch": cfg.train.batch_size, "seconds_per_step": seconds,
                "images_per_second": cfg.train.batch_size * cfg.train.d_steps / seconds,
                "peak_memory": peak_memory(trainer.device), "machine": machine_info(trainer.device)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(time_recipe(Path(args.one), args)))
        return 0
    paths = [Path(p) for p in args.recipes] if args.recipes else sorted(RECIPES.glob("*-256.toml"))
    passed = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--device={args.device}"]
    passed += [f"--batch-size={args.batch_size}"] if args.batch_size else []
    passed += [f"--precision={args.precision}"] if args.precision else []
    rows = []
    for path in paths:
        out = subprocess.run([sys.executable, __file__, *passed, "--one", str(path)], capture_output=True, text=True)
        if out.returncode:
            print(f"{path.name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if rows:
        print(rows[0]["machine"])
    print(f"{'recipe':<24} {'device':<6} {'precision':<28} {'batch':>5} {'s/step':>8} {'img/s':>8}  peak memory")
    for r in rows:
        print(f"{r['recipe']:<24} {r['device']:<6} {r['precision']:<28} {r['batch']:>5} {r['seconds_per_step']:>8.2f} "
              f"{r['images_per_second']:>8.1f}  {r['peak_memory']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
