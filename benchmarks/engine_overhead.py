"""Engine overhead: steady-state training img/s of ``t2i run`` against a minimal hand-written PyTorch loop.

Both sides train the default recipe (Shapes data, frozen bag-of-words text encoder, DCGAN G and D,
hinge loss + matching-aware term, Adam, EMA of G) with the same networks, the same initial weights,
the same data tensors and the same batch size; the figure of merit is ``engine img/s / hand img/s``
(target >= 0.97: the engine may cost at most 3 % over code a competent PyTorch user would write).

What is timed, and why:

- **Engine**: the real ``Trainer.fit()``, i.e. the loop ``t2i run`` runs, with its per-step metric
  sums, its divergence check, its metrics.jsonl and TensorBoard logging every ``log_every`` steps
  (TensorBoard on by default, as in ``t2i run``) and its progress lines (``quiet=True``). Intermediate
  sampling and checkpointing are off (``sample_every = checkpoint_every = 0``); the end-of-run sample
  grid and checkpoint happen after the timed window, and the end-of-run metrics are skipped
  (``eval.metrics = []``; ``t2i run`` computes none during training either). The only
  instrumentation is a wrapper around ``trainer.train_step`` that reads the clock as each step starts,
  so the window from the start of step ``warmup`` to the start of step ``warmup + steps`` holds
  exactly ``steps`` full iterations of ``fit``'s loop (step, bookkeeping, logging) and nothing else.
  ``fit()`` runs once per Trainer (it closes the run's writer), so each engine repeat builds a fresh
  Trainer, exactly as each ``t2i run`` does; the initial weights are checked to be identical each time.
- **Hand loop**: the ~40 lines of :func:`hand_loop`: a per-epoch permutation, a random caption per image
  from the precomputed embedding table, the hinge + matching-aware losses written inline, Adam with the
  engine's settings, D frozen during the G step, ``AveragedModel`` EMA, and a printed loss line every
  ``log_every`` steps. It trains ``copy.deepcopy`` copies of the engine's freshly initialised G and D,
  and is timed the same way (clock read at the start of every iteration).

Engine and hand repeats alternate (A B A B ...) so that drift in machine load hits both alike; the
script reports the median of each and their ratio. On CUDA the device is synchronised at the two ends
of each timed window only. It also reports images per CPU-second (process CPU time over the same
window): on a machine shared with other busy processes, wall-clock repeats scatter, and the CPU-time
ratio is the steadier estimate of the engine's own cost.

Run: ``.venv/bin/python benchmarks/engine_overhead.py`` (``--help`` for options). On a shared machine,
``--threads 1`` avoids the collapse of 2-thread OpenMP kernels when another process holds a core.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from t2i.config import resolve
from t2i.engine.trainer import Trainer

TARGET = 0.97
nan = float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before each timed window")
    p.add_argument("--repeats", type=int, default=3, help="engine/hand pairs, alternated")
    p.add_argument("--ngf", type=int, default=32, help="generator width")
    p.add_argument("--ndf", type=int, default=32, help="discriminator width")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines (both loops)")
    p.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default="auto", help="auto: cuda if available"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: torch's own choice)")
    p.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="engine without TensorBoard events (t2i run writes them)",
    )
    args = p.parse_args(argv)
    if min(args.steps, args.repeats, args.batch_size, args.log_every) < 1 or args.warmup < 0:
        p.error("--steps, --repeats, --batch-size and --log-every must be >= 1, --warmup >= 0")
    return args


def make_config(args: argparse.Namespace) -> Any:
    return resolve(
        {
            "data": {"resolution": args.resolution},
            "generator": {"options": {"ngf": args.ngf}},
            "discriminator": {"options": {"ndf": args.ndf}},
            "train": {
                "batch_size": args.batch_size,
                "device": args.device,
                "steps": args.warmup + args.steps + 1,  # +1: the window ends when step warmup+steps starts
                "log_every": args.log_every,
                "sample_every": 0,
                "checkpoint_every": 0,
                # the hand loop is fp32 in the default memory format; the engine's faster defaults (bf16
                # autocast where the CPU has it, channels_last) are benchmarks/precision_speed.py's subject
                "precision": "fp32",
                "channels_last": False,
            },
            "eval": {"metrics": []},  # end-of-run metrics only (eval.every = 0): outside the window, and slow
        }
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock() -> tuple[float, float]:
    """(wall clock, CPU time of this process: all its threads, TensorBoard's writer thread included)."""
    return time.perf_counter(), time.process_time()


def window_rate(
    stamps: list[tuple[float, float]], warmup: int, steps: int, batch_size: int
) -> tuple[float, float]:
    """(img per wall second, img per CPU second) from the start of step ``warmup`` to ``warmup + steps``."""
    (w0, c0), (w1, c1) = stamps[warmup], stamps[warmup + steps]
    return steps * batch_size / (w1 - w0), steps * batch_size / max(c1 - c0, 1e-9)


# -- the engine ------------------------------------------------------------------------------------------
def engine_run(
    trainer: Trainer, args: argparse.Namespace, sink: io.StringIO
) -> tuple[tuple[float, float], dict[str, float]]:
    """``trainer.fit()`` with a clock read at the start of every step; returns (rates, last logged record)."""
    stamps: list[tuple[float, float]] = []
    inner: Callable[[], dict[str, torch.Tensor]] = trainer.train_step
    edges = {args.warmup, args.warmup + args.steps}

    def timed_step() -> dict[str, torch.Tensor]:
        if len(stamps) in edges:
            _sync(trainer.device)
        stamps.append(_clock())
        return inner()

    trainer.train_step = timed_step  # type: ignore[method-assign]  # fit() calls self.train_step()
    with contextlib.redirect_stderr(sink):  # quiet=True progress lines
        result = trainer.fit()
    if result.status != "finished":
        raise SystemExit(f"engine run ended {result.status}: {result.message}")
    return window_rate(stamps, args.warmup, args.steps, args.batch_size), result.last


# -- the hand-written loop ---------------------------------------------------------------------------------
def hand_loop(
    G: torch.nn.Module,
    D: torch.nn.Module,
    images: torch.Tensor,  # uint8 (N, R, R, 3), where the data set put it
    caption_ids: torch.Tensor,  # int64 (N, K)
    text_table: torch.Tensor,  # (n_captions, text_dim) precomputed embeddings, on the device
    *,
    device: torch.device,
    batch_size: int,
    lr_g: float,
    lr_d: float,
    betas: tuple[float, float],
    ema_decay: float,
    n_steps: int,
    log_every: int,
    edges: set[int],
    sink: io.StringIO,
) -> tuple[list[tuple[float, float]], dict[str, float]]:
    """What a competent PyTorch user writes for this recipe. Returns the clocks at the start of every step."""
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
    ema = (
        AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        if ema_decay > 0
        else None
    )
    n, k = caption_ids.shape
    per_epoch = n // batch_size
    stamps: list[tuple[float, float]] = []
    last: dict[str, float] = {}
    for step in range(n_steps):
        if step in edges:
            _sync(device)
        stamps.append(_clock())
        if step % per_epoch == 0:
            perm = torch.randperm(n)
        idx = perm[(step % per_epoch) * batch_size : (step % per_epoch + 1) * batch_size]
        cid = caption_ids[idx, torch.randint(k, (batch_size,))]
        real = images[idx].to(device).permute(0, 3, 1, 2).contiguous().float().div_(127.5).sub_(1.0)
        text = text_table[cid.to(device)]

        # D: hinge on (real, text) and (fake, text), plus real images against the captions rolled by one
        z = torch.randn(batch_size, G.z_dim, device=device)
        with torch.no_grad():
            fake = G(z, text)
        real_out = D(real, text, text.roll(1, 0))
        fake_out = D(fake, text)
        d_loss = (
            F.relu(1.0 - real_out.logits).mean()
            + F.relu(1.0 + fake_out.logits).mean()
            + F.relu(1.0 + real_out.mismatched_logits).mean()
        )
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        # G: -D(G(z, text), text), with D frozen
        z = torch.randn(batch_size, G.z_dim, device=device)
        D.requires_grad_(False)
        g_loss = -D(G(z, text), text).logits.mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        if ema is not None:
            ema.update_parameters(G)

        if (step + 1) % log_every == 0:
            last = {"d/total": d_loss.item(), "g/total": g_loss.item()}
            print(
                f"step {step + 1} | d {last['d/total']:.3f} | g {last['g/total']:.3f}", file=sink, flush=True
            )
    return stamps, last


def hand_run(
    G0: torch.nn.Module,
    D0: torch.nn.Module,
    data: dict[str, torch.Tensor],
    cfg: Any,
    device: torch.device,
    args: argparse.Namespace,
    sink: io.StringIO,
) -> tuple[tuple[float, float], dict[str, float]]:
    t = cfg.train
    stamps, last = hand_loop(
        copy.deepcopy(G0),
        copy.deepcopy(D0),
        data["images"],
        data["caption_ids"],
        data["text_table"],
        device=device,
        batch_size=t.batch_size,
        lr_g=t.lr_g,
        lr_d=t.lr_d,
        betas=tuple(t.betas),
        ema_decay=t.ema,
        n_steps=args.warmup + args.steps + 1,
        log_every=args.log_every,
        edges={args.warmup, args.warmup + args.steps},
        sink=sink,
    )
    return window_rate(stamps, args.warmup, args.steps, args.batch_size), last


# -- driver --------------------------------------------------------------------------------------------
def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def machine_info(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu})"
    return (
        f"python {platform.python_version()} | torch {torch.__version__} | "
        f"{platform.system()} {platform.machine()} | "
        f"device {dev} | torch threads {torch.get_num_threads()} of {os.cpu_count()} CPUs"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args)
    tensorboard = not args.no_tensorboard
    sink = io.StringIO()

    rates: dict[str, list[tuple[float, float]]] = {"engine": [], "hand": []}
    G0 = D0 = None
    data: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory(prefix="t2i-bench-") as tmp:
        for r in range(args.repeats):
            trainer = Trainer(cfg, f"{tmp}/engine_{r}", quiet=True, tensorboard=tensorboard)
            if G0 is None:  # the first build supplies the hand loop's networks and data
                print(machine_info(trainer.device))
                print(
                    f"recipe: shapes {args.resolution}px ({len(trainer.feed.images)} train images), "
                    f"bow (frozen) -> dcgan ngf {args.ngf} / ndf {args.ndf}, hinge + matching_aware, "
                    f"Adam {tuple(cfg.train.betas)}, "
                    f"EMA {cfg.train.ema}, batch {args.batch_size}, precision {trainer.precision.name}, "
                    f"TensorBoard {'on' if tensorboard else 'off'}"
                )
                print(
                    f"each repeat: {args.warmup} warmup + {args.steps} timed steps; "
                    "engine and hand alternate\n"
                )
                if not trainer.captions.frozen:
                    raise SystemExit("this benchmark expects the default recipe's frozen text encoder")
                G0, D0 = copy.deepcopy(trainer.G), copy.deepcopy(trainer.D)
                data = {
                    "images": trainer.feed.images,
                    "caption_ids": trainer.feed.caption_ids,
                    "text_table": trainer.captions.table,
                }
            elif not (_same_weights(trainer.G, G0) and _same_weights(trainer.D, D0)):
                raise SystemExit(
                    "a fresh Trainer built different initial weights; the comparison would be unfair"
                )

            for side in ("engine", "hand"):
                gc.collect()
                if side == "engine":
                    rate, last = engine_run(trainer, args, sink)
                    del trainer
                else:
                    rate, last = hand_run(G0, D0, data, cfg, data["text_table"].device, args, sink)
                rates[side].append(rate)
                print(
                    f"repeat {r + 1}  {side:6s} {rate[0]:8.1f} img/s  {rate[1]:8.1f} img/CPU-s   "
                    f"(last log: d {last.get('d/total', nan):.3f}, g {last.get('g/total', nan):.3f})",
                    flush=True,
                )

    print()
    medians = {}
    for side, label in (("engine", "engine (t2i run) "), ("hand", "hand-written loop")):
        wall = [w for w, _ in rates[side]]
        cpu = [c for _, c in rates[side]]
        medians[side] = statistics.median(wall), statistics.median(cpu)
        print(
            f"{label}: {medians[side][0]:8.1f} img/s  (median of {', '.join(f'{x:.1f}' for x in wall)}); "
            f"{medians[side][1]:8.1f} img/CPU-s"
        )
    ratio = medians["engine"][0] / medians["hand"][0]
    cpu_ratio = medians["engine"][1] / medians["hand"][1]
    pairs = [e[0] / h[0] for e, h in zip(rates["engine"], rates["hand"], strict=True)]
    extra_ms = (1 / medians["engine"][0] - 1 / medians["hand"][0]) * args.batch_size * 1e3
    print(
        f"per-repeat ratios: {', '.join(f'{x:.3f}' for x in pairs)}; "
        f"engine cost per step vs hand: {extra_ms:+.2f} ms"
    )
    print(
        f"ratio engine/hand: {ratio:.3f} wall-clock "
        f"({'meets' if ratio >= TARGET else 'MISSES'} the {TARGET} target); "
        f"{cpu_ratio:.3f} in CPU time"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
