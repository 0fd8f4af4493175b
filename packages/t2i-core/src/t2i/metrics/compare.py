"""Metrics between image sets, without a generator: what ``t2i eval FOLDER --reference ...`` runs.

Like torch-fidelity's command line: ``images`` is a folder of image files; ``reference`` is another folder,
or a registered data set's split (``shapes``, ``shapes:train``), loaded at the folder images' size.
Only metrics that compare image sets qualify: those built as a :class:`t2i.interfaces.ImageSetMetric`
(in the core ``fid``, ``kid``, ``is``, ``prc`` and ``fd_dinov2``). Inception metrics with the same settings
share one loaded network, and the features of both folders are cached on disk (keyed by the sha256 of the
files), so ``fid`` then ``kid`` reads each image once.

    from t2i.metrics.compare import evaluate_images
    report = evaluate_images("samples/", "data/real/", metrics=["fid", "kid"])
    report["values"]["fid"], report["protocol"]["fid"]["weights_sha256"]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from ..errors import UsageError
from ..interfaces import CaptionedImages, ImageSet, ImageSetMetric
from ..plugins import registry
from .build import build_metrics, flat_key
from .image_sets import folder_images, split_images
from .reference_stats import is_stats_file, save_reference_stats

__all__ = ["evaluate_images", "resolve_reference", "save_stats"]


def resolve_reference(reference: str | Path, resolution: int, data_options: Mapping[str, Any] | None = None) -> ImageSet:
    """A folder, else ``NAME`` / ``NAME:SPLIT`` of a registered data set (default split: test) at ``resolution``,
    built with ``data_options`` (e.g. ``{"test_size": 1000}``)."""
    path = Path(reference).expanduser()
    if path.is_dir():
        if data_options:
            raise UsageError(f"data set options were given but --reference {reference} is a folder")
        return folder_images(path)
    return split_images(reference_split(reference, data_options, resolution))


def reference_split(reference: str | Path, data_options: Mapping[str, Any] | None, resolution: int) -> CaptionedImages:
    """``--reference NAME[:SPLIT]``: that split of a registered data set (its ``test`` split by default, else
    its first), loaded at ``resolution``; an unknown name or split is a one-line UsageError."""
    name, _, split = str(reference).partition(":")
    datasets = registry("datasets")
    if name not in datasets:
        installed = ", ".join(datasets.names()) or "none"
        raise UsageError(f"--reference {reference} is neither a folder nor a registered data set (installed: {installed})")
    dataset, _ = datasets.build(name, dict(data_options or {}))
    split = split or ("test" if "test" in dataset.splits else dataset.splits[0])
    if split not in dataset.splits:
        raise UsageError(f"data set '{name}' has no split '{split}'; splits: {', '.join(dataset.splits)}")
    return dataset.load(split, resolution)


def evaluate_images(
    images: str | Path,
    reference: str | Path | None,
    *,
    metrics: list[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
    data_options: Mapping[str, Any] | None = None,
    save_stats: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of the image folder ``images`` against ``reference`` (a folder or data set; ``None``: only
    metrics that need none, like ``is``). Returns ``{"values", "protocol", "images", "reference", ...}``.

    ``data_options`` configure a data set reference. ``device`` sets the ``device`` option of every metric
    that has one (``-M fid.device=...`` wins). A ``reference`` ending in ``.npz`` is a file of ``mu``/``sigma``
    (pytorch-fid's format): ``fid`` reads it as its ``reference_stats``; metrics that need the reference
    features (``kid``, ``prc``, ``fd_dinov2``) refuse it. ``save_stats``: also write the reference's
    ``mu``/``sigma`` there (:func:`save_stats`).
    """
    from .. import __version__

    names = list(metrics or (["fid"] if reference is not None else ["is"]))
    fake = folder_images(images)
    size = fake.identity["size"]
    real = None
    stats_file = reference is not None and is_stats_file(reference)
    if save_stats is not None and reference is None:
        raise UsageError("--save-stats writes the statistics of the reference images: pass --reference")
    if stats_file and save_stats is not None:
        raise UsageError(f"--save-stats writes the statistics of reference images; --reference {reference} already is statistics")
    if reference is not None and not stats_file:
        if size[0] != size[1]:
            ref_path = Path(reference).expanduser()
            if not ref_path.is_dir():
                raise UsageError(f"images in {images} are {size[0]}x{size[1]}; a data set reference needs square images")
        real = resolve_reference(reference, size[0], data_options)
    reg = registry("metrics")
    merged: dict[str, dict[str, Any]] = {n: dict((options or {}).get(n, {})) for n in names}
    for name in names:
        cfg_type = reg.get(name).config
        if device and cfg_type is not None and "device" in {f.name for f in dataclasses.fields(cfg_type)}:
            merged[name].setdefault("device", device)
    if stats_file:
        for name in names:
            cfg_type, factory = reg.get(name).config, reg.get(name).factory
            fields = {f.name for f in dataclasses.fields(cfg_type)} if cfg_type is not None else set()
            if not (_compares_image_sets(factory) and factory.needs_reference):
                continue  # is: needs no reference; a metric that needs a generator is refused below
            if "reference_stats" in fields:
                merged[name].setdefault("reference_stats", str(reference))  # fid; kid refuses it in one line
            else:
                raise UsageError(f"metric '{name}' needs the reference images' features, not statistics: "
                                 f"--reference {reference} holds only mu/sigma; pass a folder or a data set")  # fmt: skip
    built = build_metrics(names, {n: o for n, o in merged.items() if o})
    _share_extractors(built)
    values: dict[str, float] = {}
    protocols: dict[str, Any] = {}
    for name, metric, opts in built:
        if not isinstance(metric, ImageSetMetric):
            able = [n for n in reg.names() if _compares_image_sets(reg.get(n).factory)]
            raise UsageError(
                f"metric '{name}' needs a generator, not image folders; folder evaluation supports: {', '.join(able)}"
            )
        if metric.needs_reference and real is None and not stats_file:
            raise UsageError(f"metric '{name}' compares with reference images: pass --reference FOLDER or a data set")
        result = dict(metric.compare(fake, real if metric.needs_reference else None, cache_images=True))
        protocols[name] = {"options": opts, **result.pop("protocol", {})}
        for key, value in result.items():
            values[flat_key(name, key)] = float(value)  # "fid", "kid/std"
    saved = {"saved_stats": str(save_stats_with(built, real, save_stats, device))} if save_stats is not None else {}
    return {
        **saved,
        "images": fake.describe(),
        "reference": real.describe() if real is not None else ({"stats": str(reference)} if stats_file else None),
        "values": values,
        "protocol": protocols,
        "versions": {"t2i": __version__, **_library_versions()},
    }


def save_stats(
    reference: ImageSet, path: str | Path, *, options: Mapping[str, Any] | None = None, device: str | None = None
) -> Path:
    """Write ``mu``/``sigma`` of ``reference``'s pool3 features to ``path`` (pytorch-fid's ``.npz``), with the
    extractor ``fid`` would use given ``options`` (``weights``, ``batch_size``, ``device``, ``mode``): same network, same resize."""
    return save_stats_with([], reference, path, device, options)


def save_stats_with(
    built: list[tuple[str, Any, dict[str, Any]]], reference: ImageSet | None, path: str | Path, device: str | None,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """:func:`save_stats` reusing the network of a ``fid`` among ``built`` (else one built from ``options``)."""
    from .inception_metrics import FID

    if reference is None:
        raise UsageError("--save-stats writes the statistics of the reference images: pass --reference")
    fid = next((m for _, m, _ in built if isinstance(m, FID)), None)
    if fid is None:
        opts = {k: v for k, v in (options or {}).items() if k in ("weights", "batch_size", "device", "mode")}
        if device:
            opts.setdefault("device", device)
        fid = registry("metrics").build("fid", opts)[0]
    return save_reference_stats(fid.extractor, reference, path, batch_size=fid.cfg.batch_size)


def _compares_image_sets(factory: Any) -> bool:
    return isinstance(factory, type) and issubclass(factory, ImageSetMetric)


def _library_versions() -> dict[str, str]:
    import torch

    out = {"torch": torch.__version__}
    try:
        import torch_fidelity

        out["torch_fidelity"] = torch_fidelity.__version__
    except ImportError:  # pragma: no cover - a core dependency
        pass
    return out


def _share_extractors(built: list[tuple[str, Any, dict[str, Any]]]) -> None:
    """Give metrics with the same Inception settings one network computing all the features they need."""
    from .inception_metrics import InceptionMetric

    groups: dict[tuple[str, str, int, str], list[InceptionMetric]] = {}
    for _, metric, _ in built:
        if isinstance(metric, InceptionMetric) and metric._extractor is None:
            key = (metric.cfg.weights, metric.cfg.device, metric.cfg.batch_size, metric.cfg.mode)
            groups.setdefault(key, []).append(metric)
    for (weights, device, batch_size, mode), members in groups.items():
        if len(members) < 2:
            continue
        from ..device import pick_device
        from .features import make_extractor

        features = tuple(sorted({f for m in members for f in m.features}))
        shared = make_extractor(
            "inception", weights=weights or None, device=pick_device(device), features=features, batch_size=batch_size,
            mode=mode,
        )
        for m in members:
            m._extractor = shared
