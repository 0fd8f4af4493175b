"""Studies: many runs from one TOML file (a base config plus a grid, named variants, one-factor-at-a-time
points and seeds), each an ordinary run folder, resumable, summarised in report.md and results.csv.

    from t2i.study import load_study, run_study, write_report
    spec = load_study("examples/studies/seed-log.toml", overrides={"train.steps": 100})
    outcome = run_study(spec, "studies/seed-log")      # writes studies/seed-log/report.md at the end

The file format is documented in :mod:`t2i.study.spec`; the folder layout and resuming in
:mod:`t2i.study.runner`; the report in :mod:`t2i.study.report`. A study with ``[search]`` is an Optuna
search pruned by the health monitor: :mod:`t2i.study.search` (format), :mod:`t2i.study.optimize` (running),
:mod:`t2i.study.pruning` (stopping a trial), :mod:`t2i.study.search_report`.
"""

from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from .optimize import run_search
from .report import write_report
from .runner import StudyOutcome, run_planned, run_trial
from .spec import PlannedRun, StudySpec, Trial, load_study, parse_study

__all__ = ["load_study", "parse_study", "run_study", "run_trial", "write_report", "StudySpec", "Trial", "PlannedRun",
           "StudyOutcome"]


def run_study(
    spec: StudySpec,
    folder: str | Path,
    *,
    jobs: int = 1,
    nproc: int = 1,
    quiet: bool = True,
    overrides: dict[str, Any] | None = None,
    report: bool = True,
    log: Callable[[str], None] | None = None,
    worker: bool = False,
    storage: str | None = None,
) -> StudyOutcome:
    """Run (or continue) the study ``spec`` in ``folder``, then write the report: its planned runs
    (:func:`t2i.study.runner.run_planned`), or, for a study with ``[search]``, its search
    (:func:`t2i.study.optimize.run_search`; ``worker`` joins a search that another process started,
    ``storage`` is its database URL). ``jobs``: runs at a time, each in its own process; ``nproc`` > 1: each
    run is a distributed job of ``nproc`` processes."""
    if spec.search is not None:
        return run_search(spec, folder, jobs=jobs, nproc=nproc, quiet=quiet, overrides=overrides, report=report,
                          log=log, worker=worker, storage=storage)
    if worker or storage:
        raise UsageError("--worker and --storage are for a study with a [search] section")
    return run_planned(spec, folder, jobs=jobs, nproc=nproc, quiet=quiet, overrides=overrides, report=report, log=log)
