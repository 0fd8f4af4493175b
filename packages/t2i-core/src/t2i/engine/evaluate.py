"""Run registered metrics on a generator: the same code serves the end of a run, evaluation every N
steps, and ``t2i eval``.

:class:`Evaluator` is the training run's side: it builds the metrics and loads the reference split before
the first step (so a misspelt metric fails at once), knows when an evaluation is due, and runs it on
rank 0 while the other ranks wait.

A metric receives ``generate(captions) -> uint8 (B, R, R, 3)`` and the reference split; ``generate`` here
draws its noise from a generator seeded per metric, so a figure does not depend on what ran before it.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import torch

from ..config import EvalConfig
from ..data.splits import load_split
from ..errors import UsageError
from ..interfaces import CaptionedImages, Dataset, Metric, TextEncoder
from ..metrics.build import build_metrics, flat_key
from ..plugins import registry
from . import distributed
from .generate import encode_captions, generate_images, uses_words
from .grid import to_uint8

__all__ = ["Evaluator", "build_metrics", "evaluate", "make_generate", "flat_key"]


def make_generate(
    generator: torch.nn.Module,
    encoder: TextEncoder,
    device: torch.device,
    *,
    seed: int = 0,
    batch_size: int = 250,
    autocast: Callable[[], Any] | None = None,
) -> Callable[[list[str]], torch.Tensor]:
    """``generate(captions)``: one image per caption, uint8 ``(B, R, R, 3)`` on the CPU, noise seeded by ``seed``."""
    rng = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def generate(captions: list[str]) -> torch.Tensor:
        was_training = generator.training
        generator.eval()
        try:
            chunks = []
            for i in range(0, len(captions), batch_size):
                part = list(captions[i : i + batch_size])
                z = torch.randn(len(part), generator.z_dim, generator=rng).to(device)
                text, words = encode_captions(encoder, part, device, words=uses_words(generator))
                if autocast is not None:
                    with autocast():
                        images = generate_images(generator, z, text, words)
                else:
                    images = generate_images(generator, z, text, words)
                chunks.append(to_uint8(images.float().cpu()))
        finally:
            generator.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, 0, 0, 3, dtype=torch.uint8)

    return generate


def evaluate(
    metrics: list[tuple[str, Metric, dict[str, Any]]],
    generator: torch.nn.Module,
    encoder: TextEncoder,
    reference: CaptionedImages,
    device: torch.device,
    *,
    seed: int = 0,
    autocast: Callable[[], Any] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every metric on ``generator``; returns (flat ``{key: value}``, ``{metric: protocol}``)."""
    values: dict[str, float] = {}
    protocols: dict[str, Any] = {}
    for name, metric, options in metrics:
        generate = make_generate(generator, encoder, device, seed=seed, autocast=autocast)
        result = dict(metric.evaluate(generate, reference))
        protocols[name] = {"options": options, **result.pop("protocol", {})}
        for key, value in result.items():
            values[flat_key(name, key)] = float(value)
    return values, protocols


class Evaluator:
    """The metrics of ``eval_cfg`` on the reference split of ``dataset``, every ``eval.every`` steps and at the end.

    Why rank 0 alone, the others waiting at a barrier, rather than split the work and gather: a metric
    receives ``generate`` and the reference and returns aggregate figures (FID needs every feature at
    once), so splitting it would change the metric interface, and the figures would no longer be those
    ``t2i eval`` gives for the checkpoint. Every rank holds the same weights, so rank 0's figures are the
    run's. The barrier waits at most ``T2I_DIST_TIMEOUT`` seconds (default 1800); raise it for
    evaluations that take longer.
    """

    def __init__(self, eval_cfg: EvalConfig, dataset: Dataset, resolution: int, *, seed: int, rank: int = 0):
        self.metrics = build_metrics(eval_cfg.metrics, eval_cfg.options)
        self.split, self.every, self.seed, self.rank = eval_cfg.split, eval_cfg.every, seed, rank
        self.reference = load_split(dataset, eval_cfg.split, resolution) if self.metrics else None
        self.results: dict[int, dict[str, float]] = {}  # step -> values
        self.protocols: dict[str, Any] = {}  # of the latest evaluation

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """Every metric's full options (defaults filled in), for the saved config."""
        return {name: options for name, _, options in self.metrics if options}

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def run(self, step: int, generator: torch.nn.Module, encoder: TextEncoder, device: torch.device, *,
            autocast: Callable[[], Any] | None = None, wait: bool = True) -> dict[str, float]:
        """The metrics at ``step``, kept in :attr:`results`: computed on rank 0 (``{}`` on other ranks and
        without metrics); with ``wait``, every rank waits at a barrier until rank 0 is done."""
        values: dict[str, float] = {}
        if self.rank == 0 and self.metrics and self.reference is not None:
            values, self.protocols = evaluate(
                self.metrics, generator, encoder, self.reference, device, seed=self.seed, autocast=autocast)
            self.results[step] = values
        if wait:
            distributed.barrier()
        return values

    def report(self, step: int) -> str:
        """``eval.json``: the step, the split, the values and each metric's protocol."""
        return json.dumps({"step": step, "split": self.split, "values": self.results.get(step, {}),
                           "protocol": self.protocols}, indent=2) + "\n"
