"""Run registered metrics on a generator: the same code serves the end of a run, evaluation every N
steps, and ``t2i eval``.

A metric receives ``generate(captions) -> uint8 (B, R, R, 3)`` and the reference split; ``generate`` here
draws its noise from a generator seeded per metric, so a figure does not depend on what ran before it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from ..errors import UsageError
from ..interfaces import CaptionedImages, Metric, TextEncoder
from ..options import config_to_dict
from ..plugins import registry
from .grid import to_uint8

__all__ = ["build_metrics", "evaluate", "make_generate", "flat_key"]


def flat_key(metric: str, key: str) -> str:
    """How a metric's result key is logged: as given when it has a ``/`` (``"shapes_accuracy/colour"``) or is
    the metric's own name (the headline figure: ``"fid"``), else ``"<metric>/<key>"`` (``"kid/std"``)."""
    return key if "/" in key or key == metric else f"{metric}/{key}"


def build_metrics(names: list[str], options: dict[str, dict[str, Any]]) -> list[tuple[str, Metric, dict[str, Any]]]:
    """Create each metric; return ``(name, metric, full options)``. Options for unused metrics are an error."""
    unused = set(options) - set(names)
    if unused:
        raise UsageError(f"eval.options has options for metrics that are not computed: {', '.join(sorted(unused))}")
    reg = registry("metrics")
    out = []
    for name in names:
        cfg = reg.make_config(name, options.get(name, {}))
        try:
            metric = reg.create(name, cfg)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"metric '{name}' cannot be built with these settings: {exc}") from None
        if not isinstance(metric, Metric):
            raise UsageError(f"metric '{name}' built a {type(metric).__name__}, which is not a t2i Metric")
        out.append((name, metric, config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else {}))
    return out


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
                text = encoder.encode(part).to(device).float()
                if autocast is not None:
                    with autocast():
                        images = generator(z, text)
                else:
                    images = generator(z, text)
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
