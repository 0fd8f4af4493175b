"""``summary.md``: what a run was, how it ended, and where to look next, in one page.

Everything in it is read from the run as it trained: the resolved config (every option written out), the
learning rates the optimisers actually used, the networks' parameter counts, the last logged losses, the
final evaluation (:func:`t2i.metrics.keys.evaluation_table`), the health verdicts and the sample grid.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..config import ExperimentConfig, TrainConfig
from ..metrics.keys import evaluation_table
from .health import Verdict, verdict_lines

__all__ = ["RunResult", "RunFacts", "count_parameters", "peak_memory", "summary_markdown"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "finished", "interrupted" or "diverged"
    step: int
    elapsed: float
    images_per_second: float
    samples: Path | None
    checkpoint: Path | None
    last: dict[str, float] = field(default_factory=dict)
    message: str = ""
    evaluation: dict[str, float] = field(default_factory=dict)


@dataclass
class RunFacts:
    """What the summary says about a run besides its result and its config."""

    epochs: float
    train_images: int
    device: str
    precision: str
    lr_g: float  # the learning rates the optimisers started from (train.scale_lr applied)
    lr_d: float
    world_size: int
    parameters: dict[str, int]  # generator, discriminator, text encoder
    encoder_trainable: bool
    terms: list[tuple[str, float]]
    warnings: list[str] = field(default_factory=list)  # said before step 1 (a term tuned for another D, ...)
    peak_memory: str = ""  # :func:`peak_memory`


def peak_memory(device: torch.device) -> str:
    """The process's peak memory so far: CUDA ``max_memory_allocated`` on a GPU, else the peak resident set
    size (``ru_maxrss``; Linux and macOS), as ``"1.2 GiB (peak RSS)"``; ``""`` where neither is known."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA max_memory_allocated)"
    try:
        import resource
    except ImportError:  # Windows
        return ""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return f"{rss * scale / 2**30:.2f} GiB (peak RSS of the process)"


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalars in ``module``'s parameters (spectral norm's ``original`` counted once)."""
    return sum(p.numel() for p in module.parameters())


def _accumulation(t: TrainConfig, world_size: int) -> str:
    """`` (micro-batches of 8, 4 accumulated per update and process)`` when the batch is split, else nothing."""
    share = t.batch_size // world_size
    if not t.micro_batch or t.micro_batch >= share:
        return ""
    return f" (micro-batches of {t.micro_batch}, {share // t.micro_batch} accumulated per update and process)"


def summary_markdown(result: RunResult, cfg: ExperimentConfig, facts: RunFacts, verdicts: Sequence[Verdict]) -> str:
    """The text of ``summary.md`` for ``result`` of the run configured by ``cfg`` (resolved)."""
    t, run_dir = cfg.train, result.run_dir
    p = facts.parameters
    scaled = ""
    if t.scale_lr and facts.world_size > 1:
        scaled = f" (train.scale_lr: {t.lr_g:g} / {t.lr_d:g} x {facts.world_size} processes)"
    lines = [
        f"# Run {run_dir.name}",
        "",
        f"- status: **{result.status}**" + (f" ({result.message})" if result.message else ""),
        f"- steps: {result.step} generator steps ({facts.epochs:.2f} epochs "
        f"of {facts.train_images} {cfg.data.train_split} images), "
        f"batch {t.batch_size}{_accumulation(t, facts.world_size)}",
        f"- training time: {result.elapsed / 60:.1f} min; throughput {result.images_per_second:.0f} images/s "
        f"(real images through D per second, device {facts.device}, precision {facts.precision})",
        *([f"- peak memory: {facts.peak_memory}"] if facts.peak_memory else []),
        f"- data: {cfg.data.name} at {cfg.data.resolution}x{cfg.data.resolution}",
        f"- parameters: generator {p['generator']:,}, discriminator {p['discriminator']:,}, "
        f"text encoder {p['text encoder']:,} ({'trained with D' if facts.encoder_trainable else 'frozen'})",
        f"- text encoder: {cfg.text_encoder.name} {json.dumps(cfg.text_encoder.options)}",
        f"- generator: {cfg.generator.name} {json.dumps(cfg.generator.options)}",
        f"- discriminator: {cfg.discriminator.name} {json.dumps(cfg.discriminator.options)}",
        f"- loss: {cfg.loss.adversarial} + " + (", ".join(f"{w:g} x {n}" for n, w in facts.terms) or "no terms"),
        f"- optimiser: Adam lr G {facts.lr_g:g} / D {facts.lr_d:g}{scaled}, betas {tuple(t.betas)}, "
        f"{t.d_steps} D step(s) per G step, schedule {t.schedule}, "
        + (f"EMA half-life {t.ema_kimg:g} kimg" + (f" (ramp-up {t.ema_rampup:g})" if t.ema_rampup else "")
           if t.ema_kimg else f"EMA {t.ema:g}"),
        "",
        "## Last logged losses",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in sorted(result.last.items()) if k.startswith(("d/", "g/"))],
        "",
    ]
    if result.evaluation:
        lines += [f"## Evaluation at step {result.step} ({cfg.eval.split} split; protocol in eval.json)", "",
                  *evaluation_table(result.evaluation), ""]
    if facts.warnings:
        lines += ["## Warnings before step 1", "", *[f"- {w}" for w in facts.warnings], ""]
    lines += ["## Health (health.json)", "", *verdict_lines(list(verdicts)), ""]
    if result.samples is not None:
        rel = Path(result.samples).relative_to(run_dir)
        lines += ["## Samples", "", f"Fixed noise (columns) x fixed {cfg.data.sample_split} captions (rows):", "",
                  f"![samples]({rel})", ""]
    if result.checkpoint is not None:
        lines += [f"Checkpoint: `{Path(result.checkpoint).relative_to(run_dir)}`; resume with "
                  f"`t2i run --resume {run_dir}`.", ""]
    return "\n".join(lines)
