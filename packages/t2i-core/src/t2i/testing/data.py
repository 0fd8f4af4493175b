"""The data set and metric checks: tiny splits in the shape the engine expects, and evaluations that
return reproducible, loggable numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import UsageError
from ..interfaces import CaptionedImages, Dataset, Metric
from ..plugins import registry
from ._common import (
    Report,
    _build,
    _config,
    _one_line,
    _options,
    _restores_rng,
    _start,
    default_options,
)

_SIZE_FIELDS = ("size", "max_images", "num_images", "n_images", "limit")


def _small_data_options(name: str, train: int, test: int) -> dict[str, Any] | None:
    """The data set's ``test_options``, else its size fields set small, else ``None`` (cannot shrink)."""
    declared = default_options("datasets", name)
    if declared:
        return declared
    entry = registry("datasets").get(name)
    if entry.config is None or not dataclasses.is_dataclass(entry.config):
        return None
    names = {f.name for f in dataclasses.fields(entry.config)}
    splits = getattr(entry.factory, "splits", Dataset.splits)
    sized = {f"{s}_size": (train if s == "train" else test) for s in splits if f"{s}_size" in names}
    sized.update({f: test for f in _SIZE_FIELDS if f in names})
    return sized or None


def _skip(report: Report, reason: str) -> None:
    report.skipped.append(reason)
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(f"{report.component}: {reason}")
    warnings.warn(f"{report.component}: {reason}", stacklevel=3)


@_restores_rng
def check_dataset(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    resolution: int = 32,
    size: int = 16,
) -> Report:
    """Check registered data set ``name`` on tiny splits: ``CaptionedImages`` with uint8 ``(N, R, R, 3)``
    images, captions and consistent caption ids and counts, attribute codes in range; the same data twice;
    an unknown split is a :class:`UsageError`.

    The splits are shrunk with the data set's ``test_options``, or its ``<split>_size`` / ``size`` options
    set to ``size``; a data set with neither is only built, and its loading is skipped (``pytest.skip``
    under pytest, a warning otherwise), since loading it could take long or need a download.
    """
    report = _start("datasets", name)
    small = _small_data_options(name, size, size) if options is None else _options("datasets", name, options)
    cfg = registry("datasets").make_config(name, small or {})

    data: Dataset | None = None
    with report.check("builds"):
        data = _build("datasets", name, cfg, 0, Dataset)
        splits = data.splits
        assert isinstance(splits, tuple) and splits and all(isinstance(s, str) for s in splits), (
            f"splits must be a non-empty tuple of names, got {splits!r}"
        )
        line = data.describe()
        assert isinstance(line, str) and line and "\n" not in line, (
            f"describe() must return one line, got {line!r}"
        )
    if data is None:
        report.raise_for_failures()
        return report
    if small is None:
        report.raise_for_failures()
        _skip(report, "loading (no test_options and no size options to load a tiny split with)")
        return report

    for split in data.splits:
        with report.check(f"split '{split}' at {resolution} px"):
            first = data.load(split, resolution)
            _assert_split(first, resolution)
            again = _build("datasets", name, cfg, 1, Dataset).load(split, resolution)
            assert torch.equal(first.images, again.images) and first.captions == again.captions, (
                "loading the same split twice gives different images or captions"
            )
    with report.check("an unknown split is a UsageError"):
        try:
            data.load("no-such-split", resolution)
        except UsageError:
            pass
        else:
            raise AssertionError("load('no-such-split') did not raise t2i.errors.UsageError")
    report.raise_for_failures()
    return report


def _assert_split(d: Any, r: int) -> None:
    assert isinstance(d, CaptionedImages), f"load returned {type(d).__name__}, expected CaptionedImages"
    img = d.images
    assert isinstance(img, Tensor) and img.dtype == torch.uint8, (
        f"images must be a uint8 tensor, got {getattr(img, 'dtype', type(img))}"
    )
    assert img.dim() == 4 and tuple(img.shape[1:]) == (r, r, 3), (
        f"images shape {tuple(img.shape)}, expected (N, {r}, {r}, 3)"
    )
    n = img.shape[0]
    assert n >= 1, "the split is empty"
    assert d.captions and all(isinstance(c, str) and c.strip() for c in d.captions), (
        "captions must be non-empty strings"
    )
    ids, counts = d.caption_ids, d.caption_counts
    assert ids.dtype == torch.int64 and ids.dim() == 2 and ids.shape[0] == n and ids.shape[1] >= 1, (
        f"caption_ids must be int64 (N, K), got {ids.dtype} {tuple(ids.shape)}"
    )
    assert tuple(counts.shape) == (n,), f"caption_counts shape {tuple(counts.shape)}, expected ({n},)"
    assert int(counts.min()) >= 1 and int(counts.max()) <= ids.shape[1], "caption_counts must be in 1..K"
    used = torch.arange(ids.shape[1])[None, :] < counts[:, None]
    assert bool(((ids >= 0) & (ids < len(d.captions)))[used].all()), (
        "caption_ids index outside the captions list"
    )
    assert bool((ids[~used] == -1).all()), "caption_ids beyond caption_counts must be padded with -1"
    for key, codes in d.attributes.items():
        assert codes.dtype == torch.int64 and tuple(codes.shape) == (n,), (
            f"attribute '{key}' must be int64 ({n},)"
        )
        values = d.attribute_values.get(key)
        if values is not None:
            assert int(codes.min()) >= 0 and int(codes.max()) < len(values), (
                f"attribute '{key}' has codes outside attribute_values"
            )


# --------------------------------------------------------------------------------------------------
# Metrics


def _synthetic_split(n: int, r: int) -> CaptionedImages:
    gen = torch.Generator().manual_seed(0)
    captions = [f"caption {i}" for i in range(n)]
    return CaptionedImages(
        images=torch.randint(0, 256, (n, r, r, 3), generator=gen, dtype=torch.uint8),
        captions=captions,
        caption_ids=torch.arange(n, dtype=torch.int64)[:, None],
        caption_counts=torch.ones(n, dtype=torch.int64),
        info={"name": "synthetic", "split": "test", "resolution": r},
    )


@_restores_rng
def check_metric(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    evaluate: bool | None = None,
    resolution: int = 32,
    size: int = 16,
    dataset: str = "shapes",
) -> Report:
    """Check registered metric ``name``: it builds with its (test) options and declares a bool
    ``higher_is_better``. With ``evaluate`` (default: the registration's ``test_evaluate`` metadata, else
    off, since a metric may train or download an evaluator): ``evaluate`` on a tiny reference split of
    ``dataset`` (or synthetic images) with a seeded random generator returns JSON-able
    ``{key: finite number, ..., "protocol": {...}}`` (the engine logs each key as ``<metric>/<key>``),
    the same numbers twice."""
    entry = registry("metrics").get(name)
    report = _start("metrics", name)
    cfg = _config("metrics", name, options)
    metric: Metric | None = None
    with report.check("builds"):
        metric = _build("metrics", name, cfg, 0, Metric)
        assert isinstance(metric.higher_is_better, bool), (
            f"higher_is_better must be a bool, got {metric.higher_is_better!r}"
        )
    if evaluate is None:
        evaluate = bool(entry.metadata.get("test_evaluate", False))
    if metric is None or not evaluate:
        if metric is not None:
            report.skipped.append(
                "evaluate (not asked for: pass evaluate=True or register with test_evaluate=True)"
            )
        report.raise_for_failures()
        return report

    reference = _synthetic_split(size, resolution)
    if dataset in registry("datasets"):
        small = _small_data_options(dataset, size, size)
        if small is not None:
            reference = registry("datasets").create(dataset, small).load("test", resolution)

    def generate(captions: Sequence[str]) -> Tensor:
        assert isinstance(captions, Sequence) and all(isinstance(c, str) for c in captions), (
            "evaluate called generate() with something other than a list of caption strings"
        )
        gen = torch.Generator().manual_seed(len(captions))
        return torch.randint(
            0, 256, (len(captions), resolution, resolution, 3), generator=gen, dtype=torch.uint8
        )

    def run() -> dict[str, Any]:
        torch.manual_seed(0)
        return _build("metrics", name, cfg, 0, Metric).evaluate(generate, reference)

    with report.check(f"evaluate on {len(reference)} reference images"):
        result = run()
        assert isinstance(result, dict), f"evaluate returned {type(result).__name__}, expected a dict"
        assert isinstance(result.get("protocol"), dict), (
            "evaluate's result has no 'protocol' dict (what makes the figure reproducible)"
        )
        numbers = {k: v for k, v in result.items() if k != "protocol"}
        assert numbers, "evaluate's result holds no value besides the protocol"
        odd = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        assert not odd, (
            f"values other than the protocol must be numbers (the engine logs them as floats): "
            f"{', '.join(odd)}"
        )
        bad = [k for k, v in numbers.items() if not math.isfinite(v)]
        assert not bad, f"non-finite values: {', '.join(bad)}"
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"the result is not JSON-serialisable: {_one_line(exc)}") from None
        again = run()
        assert {k: again.get(k) for k in numbers} == numbers, (
            "two evaluations under the same seed give different numbers"
        )
    report.raise_for_failures()
    return report
