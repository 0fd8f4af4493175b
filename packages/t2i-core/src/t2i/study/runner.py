"""Run a study: every planned run is an ordinary t2i run folder under ``<study>/runs/``.

The study folder::

    study.toml            the study file as given (and the --set overrides), for the record
    plan.json             the trials, their seeds and run folders, in order
    configs/<run>.toml    each run's full config: ``t2i run --config configs/<run>.toml`` reproduces it
    runs/<run>/           the run folders (config.toml, metrics.jsonl, samples, checkpoints, health.json,
                          summary.md) plus ``trial.json``: how the study saw the run end
    report.md, results.csv, plots/

Re-running a study in the same folder keeps finished and diverged runs, resumes unfinished ones from
their latest checkpoint (``t2i run --resume``'s machinery) and starts again the ones that crashed or
never saved a checkpoint; a study file edited so that it changes what an existing run trained is refused.
A run that crashes (an exception) or diverges is recorded and the study goes on; Ctrl-C stops the study
after the current run saved its checkpoint.

With ``jobs > 1`` the runs go to worker processes (``python -m t2i.study.worker``, the same code as the
sequential path), at most ``jobs`` at a time, each with ``OMP_NUM_THREADS`` = cores / jobs unless set. On a
machine with several GPUs, runs whose device is ``auto`` or ``cuda`` get GPUs of their own: job slot ``j``
sees GPUs ``j * nproc ...`` (modulo the count) through ``CUDA_VISIBLE_DEVICES``, and the study log says which.
Every run trains through :func:`t2i.runs.train`, as ``t2i run`` does.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import load_toml, save_toml
from ..engine.checkpoint import latest_checkpoint
from ..engine.health import read_health
from ..errors import UsageError
from ..fileio import write_text
from .records import KEPT, trial_state, write_json
from .spec import PlannedRun, StudySpec

__all__ = ["run_planned", "run_trial", "trial_state", "gpu_slots", "StudyOutcome", "KEPT"]


@dataclass
class StudyOutcome:
    folder: Path
    records: dict[str, dict[str, Any]]  # run name -> trial.json
    interrupted: bool
    report: Path | None


def run_trial(config_path: str | Path, run_dir: str | Path, *, quiet: bool = True, prune_on_health: bool = False,
              stop_file: str | Path | None = None) -> dict[str, Any]:
    """Train one planned run (resuming from its checkpoint if it has one) and write its ``trial.json``.

    Never raises for a failing run: an exception becomes ``status = "crashed"`` with its message (the
    traceback goes to ``error.txt``). Returns the trial record.

    A search's trial may be stopped early (:mod:`t2i.study.pruning`): with ``prune_on_health`` at its first
    error-level health verdict, and when ``stop_file`` appears; it then saves, stops and is recorded
    ``status = "pruned"`` with the reason as its message and ``pruned`` saying by what."""
    from ..engine import distributed
    from ..runs import configure, resume_config, train
    from .pruning import HealthCheck, StopFile

    checks: list[HealthCheck | StopFile] = []

    def install_checks(trainer: Any, ctx: Any) -> None:
        if prune_on_health:
            checks.append(HealthCheck(trainer.health))
        if stop_file is not None:
            checks.append(StopFile(stop_file))
        trainer.stopping.checks.extend(checks)

    config_path, run_dir = Path(config_path), Path(run_dir)
    started = time.time()
    resumed_from = None
    rank = 0
    record: dict[str, Any]
    try:
        launched = distributed.torchrun_env()  # under torchrun (--nproc N) every process trains; rank 0 writes
        rank = launched[0] if launched is not None else 0
        raw = load_toml(config_path)
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        if ckpt is not None:
            resumed_from = int(ckpt.name.split("_")[-1])
            cfg = resume_config(run_dir, raw)
        else:
            cfg = configure(None, raw)
            if run_dir.exists() and rank == 0:  # started but never checkpointed: start again
                shutil.rmtree(run_dir)  # the other ranks wait for rank 0 when the process group forms
        watched = prune_on_health or stop_file is not None
        result = train(cfg, run_dir, resume=ckpt is not None, quiet=quiet, on_start=install_checks if watched else None)
        record = {
            "status": result.status,
            "message": result.message,
            "step": result.step,
            "elapsed_s": result.elapsed,
            "img_per_s": result.images_per_second,
            "evaluation": result.evaluation,
            "samples": str(Path(result.samples).relative_to(run_dir)) if result.samples else None,
            "checkpoint": str(Path(result.checkpoint).relative_to(run_dir)) if result.checkpoint else None,
        }
        why = next((c.describe() for c in checks if c.describe() is not None), None)
        if result.status == "interrupted" and why is not None:  # a check stopped it, not a signal
            record.update(status="pruned", message=why.get("message") or _reason(why), pruned={**why, "step": result.step})
    except KeyboardInterrupt:
        record = {"status": "interrupted", "message": "stopped by a second Ctrl-C, without saving"}
    except Exception as exc:  # a crashing trial is recorded; the study goes on
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record = {"status": "crashed", "message": f"{type(exc).__name__}: {first}".rstrip(": ")}
    record["resumed_from"] = resumed_from
    record["wall_s"] = time.time() - started
    record["command"] = f"t2i run --config {config_path} --out {run_dir}"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "trial.json", record)
    return record


def _reason(why: dict[str, Any]) -> str:
    from ..engine.health import Verdict
    from .pruning import verdict_reason

    return verdict_reason(Verdict.from_dict(why["verdict"]))


GPU_DEVICES = ("auto", "cuda")  # a run's train.device that lets the study choose its GPU


def gpu_slots(jobs: int, nproc: int = 1) -> list[str] | None:
    """The ``CUDA_VISIBLE_DEVICES`` of each of ``jobs`` job slots: ``nproc`` GPUs each, dealt round-robin over
    the visible GPUs (``["0", "1", "2", "3"]`` for 4 jobs on 4 GPUs; ``["0,1", "2,3"]`` with ``nproc`` 2).
    ``None`` with fewer than two GPUs, or fewer GPUs than one job needs (its ranks must not share one)."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()][:count] if visible else [str(i) for i in range(count)]
    if len(ids) < 2 or nproc > len(ids):
        return None
    return [",".join(ids[(j * nproc + i) % len(ids)] for i in range(nproc)) for j in range(jobs)]


def _run_in_worker(config_path: Path, run_dir: Path, threads: int | None, nproc: int = 1,
                   gpus: str | None = None, options: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one trial in ``python -m t2i.study.worker`` (under ``torchrun --standalone`` with ``nproc`` > 1:
    a distributed job of its own), on the GPUs ``gpus`` (``CUDA_VISIBLE_DEVICES``) when given, with the
    worker's ``options`` (``--prune-on-health``, ``--stop-file PATH``); its output goes to ``runs/<run>.log``."""
    env = dict(os.environ)
    if threads and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(threads)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "trial.json").unlink(missing_ok=True)  # a stale record of an earlier attempt
    log = run_dir.parent / f"{run_dir.name}.log"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    with open(log, "w") as out:
        proc = subprocess.run([*launcher, "-m", "t2i.study.worker", str(config_path), str(run_dir), *options],
                              stdout=out, stderr=subprocess.STDOUT, env=env)
    state = trial_state(run_dir)
    if state is None:  # the worker died before it could record anything (killed, out of memory)
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        state = {"status": "crashed", "message": f"worker exited with code {proc.returncode}" + (f": {lines[-1]}" if lines else "")}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "trial.json", state)
    return state


def check_unchanged(spec: StudySpec, folder: Path) -> None:
    """Refuse to continue a study whose file changed what existing runs trained (they would be kept or
    resumed under a config they were not trained with)."""
    from ..runs import resume_config

    for run in spec.runs:
        run_dir = folder / "runs" / run.name
        if latest_checkpoint(run_dir / "checkpoints") is None:
            continue  # nothing trained yet: it starts from scratch anyway
        try:
            resume_config(run_dir, run.config.to_dict())
        except UsageError as exc:
            raise UsageError(f"{run_dir} was trained with another config than the study now asks for "
                             f"({str(exc).split(' (', 1)[0].replace(f'cannot resume {run_dir} with ', '')}); "
                             f"use another --out, or delete that run folder to train it again") from None


def prepare(spec: StudySpec, folder: Path, study_text: str | None, overrides: dict[str, Any]) -> None:
    """Write study.toml, plan.json and configs/<run>.toml into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if study_text is not None:
        note = "".join(f"# --set {k}={v!r}\n" for k, v in overrides.items())
        write_text(folder / "study.toml", (f"# run with:\n{note}\n" if note else "") + study_text)
    for run in spec.runs:
        save_toml(run.config, folder / "configs" / f"{run.name}.toml")
    plan = {
        "name": spec.name,
        "description": spec.description,
        "seeds": spec.seeds,
        "budget": spec.budget,
        "lower_is_better": spec.lower_is_better,
        "axes": spec.axes,
        "overrides": {k: v for k, v in overrides.items()},
        "trials": [{"label": t.label, "slug": t.slug, "changes": t.changes,
                    "runs": [r.name for r in spec.runs if r.trial is t]} for t in spec.trials],
        "runs": [{"name": r.name, "trial": r.trial.label, "seed": r.seed, "config": f"configs/{r.name}.toml",
                  "folder": f"runs/{r.name}"} for r in spec.runs],
    }
    write_json(folder / "plan.json", plan)


def run_planned(
    spec: StudySpec,
    folder: str | Path,
    *,
    jobs: int = 1,
    nproc: int = 1,
    quiet: bool = True,
    overrides: dict[str, Any] | None = None,
    report: bool = True,
    log: Callable[[str], None] | None = None,
) -> StudyOutcome:
    """Run (or continue) every planned run of ``spec`` (a study without ``[search]``) in ``folder``, then
    write the report. ``jobs``: runs at a time, each in its own process; ``nproc`` > 1: each run is a
    distributed job of ``nproc`` processes (torchrun, as ``t2i run --nproc``). :func:`t2i.study.run_study`
    calls this or the search (:func:`t2i.study.optimize.run_search`, which runs its trials through this
    module)."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    folder = Path(folder)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    check_unchanged(spec, folder)
    text = spec.path.read_text() if spec.path is not None else None
    prepare(spec, folder, text, dict(overrides or {}))
    records: dict[str, dict[str, Any]] = {}
    todo: list[PlannedRun] = []
    for run in spec.runs:
        state = trial_state(folder / "runs" / run.name)
        if state is not None and state.get("status") in KEPT:
            records[run.name] = state
        else:
            todo.append(run)
    if records:
        say(f"study {spec.name}: {len(records)} of {len(spec.runs)} runs already done, {len(todo)} to run")
    total, interrupted = len(spec.runs), False

    def describe(run: PlannedRun, state: dict[str, Any]) -> str:
        verdicts = read_health(folder / "runs" / run.name)
        codes = sorted({v.code for v in verdicts if v.severity != "info"})
        took = f" in {state['elapsed_s'] / 60:.1f} min" if state.get("elapsed_s") is not None else ""
        extra = f" ({state['message']})" if state.get("message") else ""
        return f"{run.trial.label} seed {run.seed}: {state['status']}{took}{extra}" + (f"; health: {', '.join(codes)}" if codes else "")

    if jobs == 1 and nproc == 1:
        for run in todo:
            say(f"[{len(records) + 1}/{total}] {run.trial.label} seed {run.seed} -> runs/{run.name}")
            state = run_trial(folder / "configs" / f"{run.name}.toml", folder / "runs" / run.name, quiet=quiet)
            records[run.name] = state
            say(f"    {describe(run, state)}")
            if state["status"] == "interrupted":
                interrupted = True
                break
    elif todo:
        threads = max(1, (os.cpu_count() or 1) // (jobs * nproc))
        say(f"study {spec.name}: {len(todo)} runs, {jobs} at a time" + (f", {nproc} processes each" if nproc > 1 else ""))
        assigned = gpu_slots(jobs, nproc) if any(r.config.train.device in GPU_DEVICES for r in todo) else None
        if assigned is not None:
            say(f"study {spec.name}: each job on GPUs of its own, round-robin (CUDA_VISIBLE_DEVICES): "
                + " | ".join(assigned))
        slots: queue.Queue[str | None] = queue.Queue()
        for slot in assigned or [None] * jobs:
            slots.put(slot)

        def run_in_slot(run: PlannedRun) -> dict[str, Any]:
            slot = slots.get()  # at most `jobs` runs at a time: a slot is always free here
            try:
                gpus = slot if run.config.train.device in GPU_DEVICES else None
                if gpus is not None:
                    say(f"    {run.trial.label} seed {run.seed} -> runs/{run.name} on GPU {gpus}")
                return _run_in_worker(folder / "configs" / f"{run.name}.toml", folder / "runs" / run.name,
                                      threads, nproc, gpus)
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_in_slot, r): r for r in todo}
            try:
                for future, run in futures.items():
                    state = future.result()
                    records[run.name] = state
                    say(f"    {describe(run, state)}")
                    interrupted = interrupted or state["status"] == "interrupted"
            except KeyboardInterrupt:  # the workers got the Ctrl-C too: they save and stop
                interrupted = True
                pool.shutdown(wait=True, cancel_futures=True)
    report_path = None
    if report:
        from .report import write_report

        report_path = write_report(folder)
        say(f"report: {report_path}")
    return StudyOutcome(folder, records, interrupted, report_path)
