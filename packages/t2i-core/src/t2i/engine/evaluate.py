"""Run registered metrics on a generator: the same code serves the end of a run, evaluation every N
steps, and ``t2i eval``.

:class:`Evaluator` is the training run's side: it builds the metrics and loads the reference split before
the first step (so a misspelt metric fails at once), knows when an evaluation is due, and runs it.

A metric receives ``generate(captions) -> uint8 (B, R, R, 3)`` and the reference split; ``generate``
(:class:`SeededGenerate`) draws its noise from a generator seeded per metric, so a figure does not depend
on what ran before it: image ``i``'s noise is row ``i`` of that seed's stream, drawn in the chunks the
metric asks for, whatever the number of processes.

Several processes (torchrun): every rank holds the same weights, so the images are split between them. A
metric that sets ``splits_across_ranks = True`` (``fid``, ``kid``, ``is``, ``prc``, ``fd_dinov2``,
``shapes_accuracy``, ``diversity``, ``clip_score``, ``r_precision``: each computes its figure from per-image
features or predictions, :func:`t2i.metrics.generated_rows`) runs on every rank with a ``generate`` that
carries a :class:`RankShare`: each rank generates and maps one share of the images, the rows are gathered
in image order, and every rank computes the same figure a single process computes (the test
``tests/test_eval_distributed.py`` checks 1 against 2 Gloo processes). Any other metric (a plugin's that
sees only ``generate`` and returns aggregates) runs on rank 0 alone while the other ranks go on to the next
metric: splitting it would need to know what it aggregates. ``t2i eval`` runs in one process (it does not
join a torchrun group), where nothing is split; the training run's evaluator is where the split happens.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
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

__all__ = ["Evaluator", "RankShare", "SeededGenerate", "build_metrics", "evaluate", "make_generate", "flat_key"]


@dataclass(frozen=True)
class RankShare:
    """This process's part of an image set split over ``world`` processes (the ``split`` of a ``generate``)."""

    rank: int
    world: int

    @staticmethod
    def current() -> "RankShare | None":
        """This process's share in the torchrun group; ``None`` without one (one process: nothing to split)."""
        if not distributed.is_distributed():
            return None
        import torch.distributed as dist

        return RankShare(dist.get_rank(), dist.get_world_size())

    def share(self, n: int, unit: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's images among ``n``: whole blocks of ``unit``, contiguous, in rank order
        (the lower ranks take one block more where they do not divide evenly)."""
        blocks = -(-n // unit)
        first, last = -(-blocks * self.rank // self.world), -(-blocks * (self.rank + 1) // self.world)
        return min(n, first * unit), min(n, last * unit)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled over the CPU group)."""
        return distributed.all_gather_object(obj)


class SeededGenerate:
    """``generate(captions)``: one image per caption, uint8 ``(B, R, R, 3)`` on the CPU, noise seeded by ``seed``.

    The noise is one stream: each call draws ``randn(len(part), z_dim)`` for each part of ``batch_size``
    captions. :meth:`skip` advances the stream exactly as a call would, without running the generator, so a
    rank that generates images ``[a, b)`` of a set draws the same noise as one process generating them all.
    """

    def __init__(self, generator: torch.nn.Module, encoder: TextEncoder, device: torch.device, *, seed: int = 0,
                 batch_size: int = 250, autocast: Callable[[], Any] | None = None, split: RankShare | None = None):
        self.generator, self.encoder, self.device = generator, encoder, device
        self.batch_size, self.autocast, self.split = batch_size, autocast, split
        self.rng = torch.Generator().manual_seed(seed)

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.generator.z_dim, generator=self.rng)

    def skip(self, n: int) -> None:
        """Draw (and drop) the noise of ``n`` captions."""
        for i in range(0, n, self.batch_size):
            self._noise(min(self.batch_size, n - i))

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        generator = self.generator
        was_training = generator.training
        generator.eval()
        try:
            chunks = []
            for i in range(0, len(captions), self.batch_size):
                part = list(captions[i : i + self.batch_size])
                z = self._noise(len(part)).to(self.device)
                text, words = encode_captions(self.encoder, part, self.device, words=uses_words(generator))
                with self.autocast() if self.autocast is not None else contextlib.nullcontext():
                    images = generate_images(generator, z, text, words)
                chunks.append(to_uint8(images.float().cpu()))
        finally:
            generator.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, 0, 0, 3, dtype=torch.uint8)


def make_generate(
    generator: torch.nn.Module,
    encoder: TextEncoder,
    device: torch.device,
    *,
    seed: int = 0,
    batch_size: int = 250,
    autocast: Callable[[], Any] | None = None,
    split: RankShare | None = None,
) -> SeededGenerate:
    """``generate(captions)``: one image per caption, uint8 ``(B, R, R, 3)`` on the CPU, noise seeded by ``seed``
    (:class:`SeededGenerate`; ``split``: this rank's share, for metrics that split their images)."""
    return SeededGenerate(generator, encoder, device, seed=seed, batch_size=batch_size, autocast=autocast, split=split)


def splits_across_ranks(metric: Metric) -> bool:
    """Whether ``metric`` computes its figure from per-image rows it gets from :func:`t2i.metrics.generated_rows`."""
    return bool(getattr(metric, "splits_across_ranks", False))


def evaluate(
    metrics: list[tuple[str, Metric, dict[str, Any]]],
    generator: torch.nn.Module,
    encoder: TextEncoder,
    reference: CaptionedImages,
    device: torch.device,
    *,
    seed: int = 0,
    autocast: Callable[[], Any] | None = None,
    split: bool = True,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every metric on ``generator``; returns (flat ``{key: value}``, ``{metric: protocol}``).

    In a torchrun group with ``split`` (every rank must call it then), the metrics that split their images
    do so and give every rank their values; the others run on rank 0 alone, so the other ranks return
    only the split metrics' values. ``split=False``: each metric runs whole in this process.
    """
    values: dict[str, float] = {}
    protocols: dict[str, Any] = {}
    share = RankShare.current() if split else None
    for name, metric, options in metrics:
        shared = share is not None and splits_across_ranks(metric)
        if share is not None and not shared and share.rank != 0:
            continue  # rank 0 computes it alone
        generate = make_generate(generator, encoder, device, seed=seed, autocast=autocast,
                                 split=share if shared else None)
        result = dict(metric.evaluate(generate, reference))
        protocols[name] = {"options": options, **result.pop("protocol", {})}
        for key, value in result.items():
            values[flat_key(name, key)] = float(value)
    return values, protocols


class Evaluator:
    """The metrics of ``eval_cfg`` on the reference split of ``dataset``, every ``eval.every`` steps and at the end.

    Under torchrun, :meth:`run` with ``wait`` is called by every rank: the metrics that split their images
    share the work (module docstring), the others run on rank 0, and the ranks meet at a barrier at the end.
    Without ``wait`` (rank 0 alone), every metric runs whole on rank 0; the training run always calls it with
    ``wait``, its final evaluation included. Either way the figures are those one process computes. The
    barrier and the gathers wait at most ``T2I_DIST_TIMEOUT`` seconds (default 1800); raise it for
    evaluations that take longer.
    """

    def __init__(self, eval_cfg: EvalConfig, dataset: Dataset, resolution: int, *, seed: int, rank: int = 0):
        self.metrics = build_metrics(eval_cfg.metrics, eval_cfg.options)
        self.split, self.every, self.seed, self.rank = eval_cfg.split, eval_cfg.every, seed, rank
        self.reference = load_split(dataset, eval_cfg.split, resolution) if self.metrics else None
        self.results: dict[int, dict[str, float]] = {}  # step -> values (rank 0)
        self.done: set[int] = set()  # the steps evaluated, on every rank that took part
        self.protocols: dict[str, Any] = {}  # of the latest evaluation

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """Every metric's full options (defaults filled in), for the saved config."""
        return {name: options for name, _, options in self.metrics if options}

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def run(self, step: int, generator: torch.nn.Module, encoder: TextEncoder, device: torch.device, *,
            autocast: Callable[[], Any] | None = None, wait: bool = True) -> dict[str, float]:
        """The metrics at ``step``, kept in :attr:`results` on rank 0 (``{}`` on other ranks and without metrics).
        With ``wait`` every rank calls it: the images are split between ranks where a metric allows, and every
        rank waits at a barrier until rank 0 is done."""
        values: dict[str, float] = {}
        if (wait or self.rank == 0) and self.metrics and self.reference is not None:
            values, protocols = evaluate(self.metrics, generator, encoder, self.reference, device, seed=self.seed,
                                         autocast=autocast, split=wait)
            self.done.add(step)
            if self.rank != 0:
                values = {}
            else:
                self.protocols, self.results[step] = protocols, values
        if wait:
            distributed.barrier()
        return values

    def report(self, step: int) -> str:
        """``eval.json``: the step, the split, the values and each metric's protocol."""
        return json.dumps({"step": step, "split": self.split, "values": self.results.get(step, {}),
                           "protocol": self.protocols}, indent=2) + "\n"
