"""Run a study's ``[search]`` (:mod:`t2i.study.search`) with Optuna: ask, train, prune, tell.

Each trial Optuna's sampler proposes is planned like any study trial (its config in ``configs/``, one
ordinary run folder per seed in ``runs/trial-NNNN-seedS``) and trained by :func:`t2i.study.runner.run_trial`,
in this process or, with ``--jobs N`` / ``--nproc N``, in ``python -m t2i.study.worker`` processes (torchrun
with ``nproc`` > 1), ``jobs`` trials at a time. While a trial trains:

- its training loop stops it at its first error-level health verdict (``prune_on_health``;
  :class:`t2i.study.pruning.HealthCheck`): the trial is told ``PRUNED`` with the verdict as its reason;
- a watcher thread of this process reads the first seed's ``metrics.jsonl`` as it grows, reports each
  intermediate evaluation (``eval.every``) to Optuna and, when the pruner says so, writes the run's stop file
  (``runs/<run>.stop``; :class:`t2i.study.pruning.StopFile`), which stops the run after its current step.

The storage (``search.db``, SQLite, in the study folder unless ``[search] storage`` or ``--storage`` names a
database URL) holds the whole history, so running the study again continues it: trials that finished or were
pruned stay, and a trial that was interrupted (Ctrl-C) or whose process was killed is failed and run again
with the same parameters under a new number, in the same run folders, so its runs resume from their last
checkpoints. Several processes may share one storage (``t2i study run FILE --worker``, on one machine or
many): each asks for the next trial until ``n_trials`` have ended. A trial's process is known dead when it
ran on this machine and its process is gone, or when it stopped sending heartbeats (every
:data:`HEARTBEAT_S` seconds; dead after :data:`GRACE_S`).

Each trial's Optuna user attributes say how it went: ``status`` (finished, pruned, crashed, interrupted,
killed, invalid), ``reason``, ``runs``, ``changes``, ``elapsed_s``, ``saved_s`` (training time pruning saved,
estimated from the budget), and which process ran it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ..config import save_toml
from ..engine.health import read_health
from ..errors import UsageError
from ..fileio import write_text
from .optuna_backend import GRACE_S, HEARTBEAT_S, masked_url, open_storage, optuna_module
from .pruning import error_verdict, verdict_reason
from .records import KEPT, trial_state, write_json
from .runner import GPU_DEVICES, StudyOutcome, _run_in_worker, gpu_slots, run_trial
from .search import SearchSpec
from .spec import PlannedRun, StudySpec, Trial, plan_trial

__all__ = ["run_search", "open_search", "storage_url", "sync_plan", "HEARTBEAT_S", "GRACE_S"]

RETRIED = (None, "interrupted", "killed")  # a failed trial with this status is run again
_LIVE: set[str] = set()  # owners (one per run_search call) alive in this process


def storage_url(spec: StudySpec, folder: Path, storage: str | None = None) -> str:
    """``--storage``, else ``[search] storage``, else ``sqlite:///<folder>/search.db``."""
    url = storage or spec.search.storage
    return url or f"sqlite:///{(folder / 'search.db').resolve()}"


def _sampler(search: SearchSpec, worker: bool) -> Any:
    optuna = optuna_module()
    options = dict(search.sampler_options)
    if worker and isinstance(options.get("seed"), int):  # workers with one seed would propose the same points
        options["seed"] += os.getpid()
    try:
        if search.sampler == "tpe":
            return optuna.samplers.TPESampler(**options)
        if search.sampler == "random":
            return optuna.samplers.RandomSampler(**options)
        if search.sampler == "grid":
            return optuna.samplers.GridSampler({p.key: p.grid_values() for p in search.space}, **options)
        try:
            import cmaes  # noqa: F401  (CmaEsSampler needs it)
        except ImportError:
            raise UsageError("[search] sampler cmaes needs the cmaes package: pip install cmaes") from None
        return optuna.samplers.CmaEsSampler(**options)
    except TypeError as exc:
        raise UsageError(f"[search] sampler {search.sampler}: {exc}") from None


def _pruner(search: SearchSpec) -> Any:
    optuna = optuna_module()
    try:
        if search.pruner == "median":
            return optuna.pruners.MedianPruner(**search.pruner_options)
        if search.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(**search.pruner_options)
        return optuna.pruners.NopPruner()
    except TypeError as exc:
        raise UsageError(f"[search] pruner {search.pruner}: {exc}") from None


def _distributions(search: SearchSpec) -> dict[str, Any]:
    dist = optuna_module().distributions
    out: dict[str, Any] = {}
    for p in search.space:
        if p.kind == "choice":
            out[p.key] = dist.CategoricalDistribution(p.labels)
        elif p.kind == "int":
            out[p.key] = dist.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[p.key] = dist.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def open_search(spec: StudySpec, folder: Path, storage: str | None = None, *, worker: bool = False,
                heartbeat: bool = True) -> Any:
    """The Optuna study of ``spec`` in its storage (created on first use); refuses a stored search whose
    space or objective differ from the file's."""
    optuna = optuna_module()
    url = storage_url(spec, folder, storage)
    Path(folder).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=open_storage(url, heartbeat=heartbeat), study_name=spec.name,
                                direction=spec.search.objective.direction, sampler=_sampler(spec.search, worker),
                                pruner=_pruner(spec.search), load_if_exists=True)
    fingerprint = spec.search.fingerprint()
    stored = study.user_attrs.get("t2i_search")
    if stored is None:
        study.set_user_attr("t2i_search", fingerprint)
    elif stored != fingerprint:
        raise UsageError(f"the search '{spec.name}' in {masked_url(url)} has another space or objective than "
                         f"{spec.path or 'the study file'}; use another --out (or --storage), or restore the file")
    return study


def _state(name: str) -> Any:
    return getattr(optuna_module().trial.TrialState, name)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study: Any, say: Callable[[str], None]) -> None:
    """Fail the running trials whose process is gone (this machine: the process no longer exists, or is this
    one from an earlier call; elsewhere: no heartbeat for :data:`GRACE_S`), then run every trial that was
    interrupted or killed again, once, with its parameters and run folders."""
    optuna, host = optuna_module(), socket.gethostname()
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
        attrs = t.user_attrs
        mine = attrs.get("pid") == os.getpid() and attrs.get("owner") not in _LIVE
        if attrs.get("host") == host and (mine or not _alive(attrs.get("pid"))):
            storage.set_trial_user_attr(t._trial_id, "status", "killed")
            storage.set_trial_user_attr(t._trial_id, "reason", "its process was killed")
            storage.set_trial_state_values(t._trial_id, _state("FAIL"))
            say(f"search {study.study_name}: trial {t.number} was killed; it runs again")
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        optuna.storages.fail_stale_trials(study)
    retried = set(study.user_attrs.get("t2i_retried", []))
    again = [t for t in study.get_trials(deepcopy=False, states=(_state("FAIL"),))
             if t.user_attrs.get("status") in RETRIED and t.number not in retried]
    for t in again:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "slug": _slug(t)})
        retried.add(t.number)
    if again:
        study.set_user_attr("t2i_retried", sorted(retried))


def _slug(t: Any) -> str:
    return t.user_attrs.get("slug") or f"trial-{t.number:04d}"


class _Interrupted(Exception):
    """A trial's run was interrupted (Ctrl-C, SIGTERM): the search stops."""


class _Watcher(threading.Thread):
    """While a run trains: heartbeats, and its intermediate evaluations reported to Optuna; writes the run's
    stop file when the pruner prunes it."""

    def __init__(self, trial: Any, run_dir: Path, stop_file: Path, search: SearchSpec, *, report: bool,
                 poll: float):
        super().__init__(daemon=True)
        self.trial, self.run_dir, self.stop_file, self.search = trial, run_dir, stop_file, search
        self.report, self.poll = report, poll
        self.done = threading.Event()
        self.pruned_at: int | None = None
        self._offset, self._partial, self._reported = 0, "", -1
        self._beat = 0.0

    def run(self) -> None:
        while not self.done.wait(self.poll):
            try:
                self.check()
            except Exception as exc:  # the storage went away for a moment: training goes on
                print(f"t2i: warning: search watcher: {type(exc).__name__}: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def check(self) -> None:
        storage = self.trial.study._storage
        if getattr(storage, "get_heartbeat_interval", lambda: None)() and time.time() - self._beat > HEARTBEAT_S / 2:
            storage.record_heartbeat(self.trial._trial_id)
            self._beat = time.time()
        if not self.report or self.pruned_at is not None:
            return
        for step, values in self._new_evaluations():
            score = self.search.objective.score(values)
            if score is None or step <= self._reported:
                continue
            self.trial.report(score, step)
            self._reported = step
            if self.trial.should_prune():
                self.pruned_at = step
                write_text(self.stop_file, f"pruned by the {self.search.pruner} pruner at step {step}: objective "
                                           f"{score:.4g}, worse than the other trials at that step\n")
                return

    def _new_evaluations(self) -> list[tuple[int, dict[str, Any]]]:
        path = self.run_dir / "metrics.jsonl"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:  # rewritten (a resumed run forgets what followed its checkpoint)
            self._offset, self._partial = 0, ""
        if size == self._offset:
            return []
        with open(path) as f:
            f.seek(self._offset)
            text = self._partial + f.read()
            self._offset = f.tell()
        lines = text.split("\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            evals = {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
            if evals:
                out.append((int(record.get("step", 0)), evals))
        return out


def sync_plan(spec: StudySpec, folder: Path, study: Any) -> None:
    """plan.json from the storage: every trial that was planned (not those run again under another number),
    as the study report reads it."""
    trials, runs = [], []
    retried = set(study.user_attrs.get("t2i_retried", []))
    for t in study.get_trials(deepcopy=False):
        names = t.user_attrs.get("runs")
        if not names or t.number in retried:
            continue
        trials.append({"label": f"trial {t.number}", "slug": _slug(t), "changes": t.user_attrs.get("changes", {}),
                       "runs": names, "number": t.number, "state": t.state.name})
        runs += [{"name": n, "trial": f"trial {t.number}", "seed": s, "config": f"configs/{n}.toml",
                  "folder": f"runs/{n}"} for n, s in zip(names, spec.seeds)]
    plan = {"name": spec.name, "description": spec.description, "seeds": spec.seeds, "budget": spec.budget,
            "lower_is_better": spec.lower_is_better, "axes": spec.axes, "overrides": spec.overrides,
            "search": spec.search.summary(), "trials": trials, "runs": runs}
    write_json(folder / "plan.json", plan)


def _planned_seconds(run: PlannedRun, record: dict[str, Any]) -> float | None:
    """How long the run would have trained to its end: its time limit, or its steps at the pace it had."""
    t = run.config.train
    if t.minutes is not None and t.steps is None and t.epochs is None:
        return t.minutes * 60
    steps, elapsed = record.get("step") or 0, record.get("elapsed_s")
    if t.steps is not None and t.epochs is None and steps and elapsed:
        return elapsed / steps * t.steps
    return None


def run_search(
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
    poll: float = 0.25,
) -> StudyOutcome:
    """Run (or continue) the search of ``spec`` in ``folder`` until ``n_trials`` trials have ended, then
    write the report (not with ``worker``: a worker only runs trials; ``t2i study report`` reports).

    ``jobs``: trials at a time, each run in its own process; ``nproc`` > 1: each run a torchrun job of
    ``nproc`` processes; ``poll``: seconds between looks at a running trial's intermediate evaluations."""
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    from filelock import FileLock

    search = spec.search
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if spec.path is not None and not worker:
        note = "".join(f"# --set {k}={v!r}\n" for k, v in (overrides or {}).items())
        write_text(folder / "study.toml", (f"# run with:\n{note}\n" if note else "") + spec.path.read_text())
    url = storage_url(spec, folder, storage)
    write_json(folder / "search.json", {"study_name": spec.name, "storage": masked_url(url),
                                        "default_storage": storage is None and search.storage is None,
                                        **search.summary()})
    owner = uuid.uuid4().hex
    _LIVE.add(owner)
    try:
        study = open_search(spec, folder, storage, worker=worker)
        with FileLock(str(folder / "search.lock")):
            recover(study, say)
        sync_plan(spec, folder, study)
        ended = _ended(study)
        say(f"search {spec.name}: {ended} of {search.n_trials} trials ended; storage {masked_url(url)}")
        if search.pruner != "none" and all(r.config.eval.every == 0 for r in
                                           plan_trial(spec, Trial("check", "check", {}, {}), seeds=spec.seeds[:1])):
            say(f"search {spec.name}: eval.every is 0, so only health verdicts prune (set eval.every for the "
                f"{search.pruner} pruner)")
        records, interrupted = _loop(spec, folder, study, owner, jobs=jobs, nproc=nproc, quiet=quiet, say=say,
                                     poll=poll)
        sync_plan(spec, folder, study)
    finally:
        _LIVE.discard(owner)
    report_path = None
    if report and not worker:
        from .report import write_report

        report_path = write_report(folder)
        say(f"report: {report_path}")
    return StudyOutcome(folder, records, interrupted, report_path)


def _ended(study: Any) -> int:
    """Trials that count towards ``n_trials``: finished, pruned, or failed for good."""
    final = (_state("COMPLETE"), _state("PRUNED"))
    return sum(t.state in final or (t.state == _state("FAIL") and t.user_attrs.get("status") not in RETRIED)
               for t in study.get_trials(deepcopy=False))


def _next_trial(study: Any, search: SearchSpec) -> Any | None:
    """A retry waiting to run, or a new trial while fewer than ``n_trials`` have ended or are running."""
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == _state("WAITING") for t in trials)
    running = sum(t.state == _state("RUNNING") for t in trials)
    if not waiting and _ended(study) + running >= search.n_trials:
        return None
    return study.ask(_distributions(search))


def _loop(spec: StudySpec, folder: Path, study: Any, owner: str, *, jobs: int, nproc: int, quiet: bool,
          say: Callable[[str], None], poll: float) -> tuple[dict[str, dict[str, Any]], bool]:
    records: dict[str, dict[str, Any]] = {}
    stop = threading.Event()
    lock = threading.Lock()
    in_process = jobs == 1 and nproc == 1
    threads = max(1, (os.cpu_count() or 1) // (jobs * nproc))
    probe = plan_trial(spec, Trial("check", "check", {}, {}), seeds=spec.seeds[:1])[0]
    slots = (gpu_slots(jobs, nproc) if probe.config.train.device in GPU_DEVICES else None) or [None] * jobs

    def work(slot: str | None) -> None:
        while not stop.is_set():
            with lock:
                trial = _next_trial(study, spec.search)
            if trial is None:
                return
            try:
                _run_one(spec, folder, study, trial, owner, records, say=say, quiet=quiet, poll=poll,
                         launch=None if in_process else (threads, nproc, slot))
            except _Interrupted:
                stop.set()

    if jobs == 1:
        work(slots[0])
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(work, slot) for slot in slots]
            try:
                for future in futures:
                    future.result()
            except KeyboardInterrupt:  # the workers got the Ctrl-C too: they save and stop
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
    return records, stop.is_set()


def _run_one(spec: StudySpec, folder: Path, study: Any, trial: Any, owner: str, records: dict[str, Any], *,
             say: Callable[[str], None], quiet: bool, poll: float, launch: tuple[int, int, str | None] | None) -> None:
    """Plan, train and tell one trial."""
    search = spec.search
    slug = trial.user_attrs.get("slug") or f"trial-{trial.number:04d}"
    changes = search.changes(trial.params)
    for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "owner": owner, "slug": slug,
                       "changes": changes, "started": time.time()}.items():
        trial.set_user_attr(key, value)
    label = f"trial {trial.number}"
    shown = ", ".join(f"{k}={v}" for k, v in trial.params.items())
    try:
        runs = plan_trial(spec, Trial(label, slug, changes, search.tree(trial.params)))
    except UsageError as exc:
        _tell(study, trial, "FAIL", status="invalid", reason=str(exc))
        say(f"{label} ({shown}): invalid: {exc}")
        return
    for run in runs:
        save_toml(run.config, folder / "configs" / f"{run.name}.toml")
    trial.set_user_attr("runs", [r.name for r in runs])
    sync_plan(spec, folder, study)
    retry = f", again (was trial {trial.user_attrs['retry_of']})" if "retry_of" in trial.user_attrs else ""
    say(f"{label}{retry}: {shown} -> runs/{slug}-seed*")

    scores, elapsed, planned, outcome, reason = [], 0.0, 0.0, "finished", ""
    for i, run in enumerate(runs):
        run_dir = folder / "runs" / run.name
        record = trial_state(run_dir)
        if record is None or record.get("status") not in KEPT:
            record = _train(run, folder, trial, search, report=i == 0, poll=poll, quiet=quiet, launch=launch)
        records[run.name] = record
        elapsed += record.get("elapsed_s") or 0.0
        status = record["status"]
        if status == "finished":
            planned += record.get("elapsed_s") or 0.0
            score = search.objective.score(record.get("evaluation") or {})
            if score is None:
                missing = ", ".join(search.objective.weights)
                outcome, reason = "crashed", f"{run.name}: no {missing} in its final evaluation"
                break
            scores.append(score)
            continue
        if status in ("pruned", "diverged"):
            outcome, reason = "pruned", record.get("message") or status
            if status == "diverged":
                verdict = error_verdict(read_health(run_dir))
                reason = verdict_reason(verdict) if verdict else f"non_finite: {reason}"
            full = _planned_seconds(run, record)
            rest = len(runs) - i - 1  # seeds that will not run
            planned = None if full is None or planned is None else planned + full * (1 + rest)
        elif status == "interrupted":
            _tell(study, trial, "FAIL", status="interrupted", reason=record.get("message") or "interrupted",
                  elapsed_s=elapsed)
            say(f"    {label}: interrupted; run the study again to continue it")
            raise _Interrupted
        else:
            outcome, reason = "crashed", f"{run.name}: {record.get('message') or status}"
        break
    saved = max(0.0, planned - elapsed) if outcome == "pruned" and planned is not None else None
    if outcome == "finished":
        value = sum(scores) / len(scores)
        _tell(study, trial, "COMPLETE", value=value, status="finished", elapsed_s=elapsed, scores=scores,
              step=record.get("step"))
        say(f"    {label}: {search.objective.describe().split(' ', 1)[1]} = {value:.4g} "
            f"in {elapsed / 60:.1f} min")
    elif outcome == "pruned":
        _tell(study, trial, "PRUNED", status="pruned", reason=reason, elapsed_s=elapsed, saved_s=saved,
              step=record.get("step"))
        say(f"    {label}: pruned at step {record.get('step')}: {reason}")
    else:
        _tell(study, trial, "FAIL", status="crashed", reason=reason, elapsed_s=elapsed)
        say(f"    {label}: crashed: {reason}")


def _train(run: PlannedRun, folder: Path, trial: Any, search: SearchSpec, *, report: bool, poll: float, quiet: bool,
           launch: tuple[int, int, str | None] | None) -> dict[str, Any]:
    """One run of a trial, watched: in this process (``launch`` None) or a worker process."""
    run_dir = folder / "runs" / run.name
    stop_file = folder / "runs" / f"{run.name}.stop"
    stop_file.unlink(missing_ok=True)
    watcher = _Watcher(trial, run_dir, stop_file, search, report=report and search.pruner != "none", poll=poll)
    watcher.start()
    try:
        config = folder / "configs" / f"{run.name}.toml"
        if launch is None:
            return run_trial(config, run_dir, quiet=quiet, prune_on_health=search.prune_on_health,
                             stop_file=stop_file)
        threads, nproc, slot = launch
        options = [*(["--prune-on-health"] if search.prune_on_health else []), "--stop-file", str(stop_file)]
        gpus = slot if run.config.train.device in GPU_DEVICES else None
        return _run_in_worker(config, run_dir, threads, nproc, gpus, options)
    finally:
        watcher.stop()
        stop_file.unlink(missing_ok=True)


def _tell(study: Any, trial: Any, state: str, *, value: float | None = None, **attrs: Any) -> None:
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    try:
        if state == "COMPLETE":
            study.tell(trial, value)
        else:
            study.tell(trial, state=_state(state))
    except RuntimeError as exc:  # the grid sampler's "grid done" (Study.stop) outside optimize(); already told
        if "Study.stop" not in str(exc):
            raise
