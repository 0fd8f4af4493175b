"""What ``t2i eval`` does with ``--protocol``, ``--list-protocols`` and statistics files, apart from the command.

The command (:func:`t2i.cli.app.eval_cmd`) parses its flags and calls these; the rules themselves live in
:mod:`t2i.metrics.protocols` (a preset refuses explicit flags that contradict it, instead of overriding them or
being overridden) and :mod:`t2i.metrics.captioned` (folders scored against their captions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..errors import UsageError
from ..metrics.protocols import TABLE_COLUMNS, AppliedProtocol, apply_protocol, get_protocol, protocol_names, table_rows
from . import tables

__all__ = ["EvalRequest", "print_protocols", "prepare_request", "attach_preset"]


@dataclass
class EvalRequest:
    """The flags of one ``t2i eval`` after a preset and statistics files are taken into account."""

    metrics: list[str] | None
    options: dict[str, dict[str, str]]
    split: str | None
    reference: str | None
    folder: bool
    applied: AppliedProtocol | None = None


def print_protocols(console: Console) -> None:
    """``t2i eval --list-protocols``: one row per preset, then where each one's numbers come from."""
    table = tables.table(*TABLE_COLUMNS, names=1)
    for row in table_rows():
        table.add_row(*(cell.replace("`", "") for cell in row))
    tables.print_table(console, table)
    for name in protocol_names():
        preset = get_protocol(name)
        needs = "".join(f"\n  you supply -M {n.option}=FILE: {n.what}" for n in preset.needs)
        console.print(f"[bold]{name}[/bold]: {escape(preset.reproduces)}{escape(needs)}", soft_wrap=True)
    console.print("use: t2i eval RUN_OR_FOLDER --protocol NAME; the JSON's \"preset\" block cites the authors' files", soft_wrap=True)


def _is_stats(reference: str | None) -> bool:
    return reference is not None and reference.lower().endswith(".npz") and Path(reference).expanduser().is_file()


def _set_option(options: dict[str, dict[str, str]], metric: str, key: str, value: str, flag: str) -> None:
    given = options.setdefault(metric, {}).get(key)
    if given is not None and given != value:
        raise UsageError(f"{flag} {value} and -M {metric}.{key}={given} name two different files; give one")
    options[metric][key] = value


def prepare_request(
    *,
    protocol: str | None,
    metrics: list[str] | None,
    options: dict[str, dict[str, str]],
    split: str | None,
    reference: str | None,
    folder: bool,
) -> EvalRequest:
    """Apply ``--protocol`` (if any) and route statistics files: for a run, ``--reference stats.npz`` becomes
    ``-M fid.reference_stats``; for a folder, ``-M fid.reference_stats=F`` without ``--reference`` becomes
    ``--reference F`` (the folder path of :func:`t2i.metrics.compare.evaluate_images` reads it from there)."""
    options = {m: dict(o) for m, o in options.items()}
    if not folder and _is_stats(reference):
        _set_option(options, "fid", "reference_stats", str(reference), "--reference")
        reference = None
    preset = get_protocol(protocol) if protocol is not None else None
    if folder and _is_stats(reference) and preset is not None and "fid" in preset.metrics:
        _set_option(options, "fid", "reference_stats", str(reference), "--reference")  # seen by the preset's check
    request = EvalRequest(metrics, options, split, reference, folder)
    if preset is not None:
        ref_split = _reference_split(reference) if folder else None
        if ref_split is not None and preset.split and ref_split != preset.split:
            raise UsageError(f"--reference {reference} conflicts with protocol {preset.name}, which is defined on the "
                             f"'{preset.split}' split")  # fmt: skip
        applied = apply_protocol(preset, metrics=metrics, options=options, split=split, generator=not folder)
        request = EvalRequest(applied.metrics, applied.options, applied.split, reference, folder, applied)
    if folder and request.reference is None:
        stats = request.options.get("fid", {}).get("reference_stats")
        if stats:
            request.reference = stats
    if folder and request.reference is not None and request.split and _is_dataset(request.reference):
        if ":" not in request.reference:
            request.reference = f"{request.reference}:{request.split}"
    return request


def _is_dataset(reference: str) -> bool:
    return not Path(reference).expanduser().is_dir() and not reference.lower().endswith(".npz")


def _reference_split(reference: str | None) -> str | None:
    """The split a data set reference names (``cub:test`` -> ``test``), else ``None``."""
    if reference is None or not _is_dataset(reference):
        return None
    return reference.partition(":")[2] or None


def attach_preset(report: dict[str, Any], applied: AppliedProtocol | None) -> list[str]:
    """Write the preset's JSON block into ``report`` (``"preset"``) and name it in each metric's protocol; return
    notes for the user (a folder whose image count is not the preset's)."""
    if applied is None:
        return []
    report["preset"] = applied.block()
    for protocol in report.get("protocol", {}).values():
        protocol["preset"] = applied.protocol.name
    preset, count = applied.protocol, (report.get("images") or {}).get("count")
    if not applied.generator and preset.images is not None and count is not None and count != preset.images:
        return [f"protocol {preset.name} scores {preset.images:,} images ({preset.images_rule}); this folder has {count:,}"]
    return []
