"""What the Run tab shows, read from disk without Gradio: the loss curves, the sample grids over steps, the
evaluation table, the health verdicts, and the run's summary or the export's model card.

A run folder (``t2i run --out``) holds ``metrics.jsonl``, ``samples/step_*.png``, ``eval.json``,
``health.json`` and ``summary.md``. An exported model (``t2i export``, or a Hub snapshot) keeps only the last
of them: ``samples.png``, ``eval.json``, ``health.json`` and its model card ``README.md``; it has no loss
history, and the view says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from t2i.engine.health import read_health, read_records
from t2i.engine.verdicts import verdict_lines

__all__ = ["RunView", "read_run_view", "MAX_GRIDS"]

MAX_GRIDS = 24  # grids shown over steps: evenly spaced, the last always among them
_LOSS_KEY = re.compile(r"^[dg]/")  # what the trainer logs per step for D and G (losses, logits)
_STEP_GRID = re.compile(r"^step_(\d+)\.png$")
_LOCAL_IMAGE = re.compile(r"^!\[[^\]]*\]\((?!https?://)[^)]*\)\s*$", re.MULTILINE)  # a card's relative image


@dataclasses.dataclass
class RunView:
    """The Run tab's content. ``kind``: ``"run"``, ``"export"`` (a model folder or Hub snapshot) or ``"none"``
    (a bare checkpoint folder). ``losses``: long format, ``{"step": [...], "value": [...], "series": [...]}``
    (what a line plot with one colour per series takes). ``grids``: ``(png, label)`` oldest first.
    ``eval_rows``: ``[metric, value]``; ``eval_title`` says at which step and on which split."""

    kind: str
    folder: Path | None
    losses: dict[str, list[Any]]
    grids: list[tuple[Path, str]]
    eval_title: str
    eval_rows: list[list[Any]]
    health: list[str]
    notes: str  # the run's summary.md, or the export's model card without its front matter

    @property
    def has_losses(self) -> bool:
        return bool(self.losses["step"])


def read_run_view(checkpoint: str | Path, run_dir: str | Path | None) -> RunView:
    """The view of where a model was loaded from: its ``run_dir`` when it has one, else the ``checkpoint``
    folder itself (an export has its card and last evaluation there)."""
    if run_dir is not None:
        folder, kind = Path(run_dir), "run"
    else:
        folder = Path(checkpoint)
        kind = "export" if (folder / "README.md").is_file() or (folder / "eval.json").is_file() else "none"
    if kind == "none":
        return RunView(kind, None, _losses([]), [], "", [], [], "")
    grids = _step_grids(folder / "samples") if kind == "run" else _export_grid(folder)
    eval_title, eval_rows = _evaluation(folder / "eval.json")
    # an export without health.json has no verdicts (read_health would diagnose an empty history as healthy)
    health = verdict_lines(read_health(folder)) if kind == "run" or (folder / "health.json").is_file() else []
    notes = _read_text(folder / "summary.md") if kind == "run" else _card(folder / "README.md")
    return RunView(kind, folder, _losses(read_records(folder) if kind == "run" else []), grids, eval_title,
                   eval_rows, health, notes)


def _losses(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every finite ``d/...`` and ``g/...`` value of the training records, one row per (step, key)."""
    out: dict[str, list[Any]] = {"step": [], "value": [], "series": []}
    for record in records:
        for key, value in record.items():
            if _LOSS_KEY.match(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                out["step"].append(int(record["step"]))
                out["value"].append(float(value))
                out["series"].append(key)
    return out


def _step_grids(samples: Path) -> list[tuple[Path, str]]:
    found = sorted((int(m.group(1)), p) for p in samples.glob("step_*.png") if (m := _STEP_GRID.match(p.name)))
    if len(found) > MAX_GRIDS:  # evenly spaced, first and last kept
        last = len(found) - 1
        found = [found[round(i * last / (MAX_GRIDS - 1))] for i in range(MAX_GRIDS)]
    return [(path, f"step {step}") for step, path in found]


def _export_grid(folder: Path) -> list[tuple[Path, str]]:
    if not (folder / "samples.png").is_file():
        return []
    step = _json(folder / "meta.json").get("step")
    return [(folder / "samples.png", f"step {step}" if step is not None else "samples")]


def _evaluation(path: Path) -> tuple[str, list[list[Any]]]:
    report = _json(path)
    values = report.get("values") or {}
    if not values:
        return "", []
    title = f"Evaluation at step {report.get('step', '?')} ({report.get('split', '?')} split; protocol in eval.json)"
    rows = [[name, round(v, 6) if isinstance(v, float) else v] for name, v in sorted(values.items())]
    return title, rows


def _card(path: Path) -> str:
    """A model card without its YAML front matter and without images linked by relative path (they are in
    the sample gallery)."""
    text = _read_text(path)
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        text = text[end + 5:] if end != -1 else text
    return _LOCAL_IMAGE.sub("", text).strip()


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
