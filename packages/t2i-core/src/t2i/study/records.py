"""What a study writes about its runs, readable without running anything: each run's ``trial.json`` (how
the study saw it end) and the study's JSON files, written atomically.

Shared by :mod:`t2i.study.runner`, which writes them, and :mod:`t2i.study.report`, which reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileio import write_text

__all__ = ["KEPT", "trial_state", "write_json"]

KEPT = ("finished", "diverged", "pruned")  # statuses a re-run keeps; others run (again)


def trial_state(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``trial.json`` (how it ended, as the study recorded it), or ``None``."""
    path = run_dir / "trial.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``; a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2) + "\n")
