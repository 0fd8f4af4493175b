"""``t2i study run FILE`` and ``t2i study report DIR``: thin wrappers over :mod:`t2i.study`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import set_path
from ..errors import UsageError
from ..options import parse_assignments

study_app = typer.Typer(
    name="study",
    help="Run many trials from one study file (grid, named variants, one-factor-at-a-time, seeds) and report them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _overrides(sets: list[str] | None) -> dict[str, Any]:
    """``--set a.b=1`` -> ``{"a.b": "1"}`` (values are typed by the config, as for ``t2i run --set``)."""
    out = parse_assignments(sets, "--set")
    probe: dict[str, Any] = {}
    for key in out:
        set_path(probe, key, None)  # a malformed key fails here, in one line
    return out


@study_app.command("run")
def run_cmd(
    file: Annotated[Path, typer.Argument(help="study TOML file (see examples/studies/)")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="study folder (default: studies/<name>); re-running into it resumes")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="runs at a time, each in its own process (with several GPUs, each on GPUs of its own)")] = 1,
    nproc: Annotated[int, typer.Option("--nproc", help="processes per run: each run a distributed job (torchrun, Gloo on CPU / NCCL on GPUs)")] = 1,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="config key for every run, applied last: section.key=value")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and list the runs, train nothing")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar per run")] = False,
    worker: Annotated[bool, typer.Option("--worker", help="[search] join the search in its storage and run trials until it has enough; no report (start one per process or machine)")] = False,
    storage: Annotated[Optional[str], typer.Option("--storage", help="[search] database URL of the search (default: [search] storage, else sqlite search.db in the study folder)")] = None,
) -> None:
    """Run (or continue) a study; finished runs are kept, unfinished ones resume. Writes report.md at the end.
    A study with [search] runs an Optuna search that prunes failing trials; re-running it continues it."""
    from ..study import load_study, run_study

    overrides = _overrides(sets)
    spec = load_study(file, overrides=overrides)
    folder = out_dir if out_dir is not None else Path("studies") / spec.name
    if (worker or storage) and spec.search is None:
        raise UsageError("--worker and --storage are for a study with a [search] section")
    if dry_run and spec.search is not None:
        search = spec.search
        for key, text in search.summary()["space"].items():
            print(f"{key}: {text}")
        print(f"objective: {search.objective.describe()}; sampler {search.sampler}, pruner {search.pruner}"
              + (" + health verdicts" if search.prune_on_health else ""))
        print(f"{search.n_trials} trials x {len(spec.seeds)} seeds, runs under {folder / 'runs'}; configs valid at "
              f"every choice and both ends of every range ({len(search.corner_points())} checked)")
        return
    if dry_run:
        for run in spec.runs:
            print(f"{run.trial.label} | seed {run.seed} | {folder / 'runs' / run.name}")
        print(f"{len(spec.trials)} trials x {len(spec.seeds)} seeds = {len(spec.runs)} runs; all configs valid")
        return
    if folder.exists() and not (folder / "plan.json").exists() and not (folder / "search.json").exists() \
            and any(folder.iterdir()):
        raise UsageError(f"{folder} exists and is not a study folder; choose another --out")
    outcome = run_study(spec, folder, jobs=jobs, nproc=nproc, quiet=quiet, overrides=overrides, worker=worker,
                        storage=storage)
    failed = {n: s for n, s in outcome.records.items() if s.get("status") not in ("finished", "pruned")}
    print(f"study folder: {outcome.folder}")
    if outcome.interrupted:
        print(f"interrupted; continue with: t2i study run {file} --out {folder}")
        raise typer.Exit(130)
    if failed:
        print(f"{len(failed)} of {len(outcome.records)} runs did not finish: "
              + ", ".join(f"{n} ({s.get('status')})" for n, s in failed.items()))


@study_app.command("report")
def report_cmd(
    folder: Annotated[Path, typer.Argument(help="a study folder written by 't2i study run'")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="[search] the search's database URL, when it is not the folder's search.db")] = None,
) -> None:
    """(Re)write report.md, results.csv and plots/ of a study folder."""
    from ..study import write_report

    print(write_report(folder, storage))
