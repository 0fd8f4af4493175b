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

from .report import write_report
from .runner import StudyOutcome, run_study, run_trial
from .spec import PlannedRun, StudySpec, Trial, load_study, parse_study

__all__ = ["load_study", "parse_study", "run_study", "run_trial", "write_report", "StudySpec", "Trial", "PlannedRun",
           "StudyOutcome"]
