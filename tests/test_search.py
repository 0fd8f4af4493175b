"""Hyperparameter search (``[search]`` in a study file, Optuna): the file is checked in one line, a tiny search
on Shapes runs and reports, a trial whose D is stuck is pruned at its health verdict with the verdict as the
reason, the pruner stops a run through its stop file, ``--jobs`` runs trials in worker processes, and two
worker processes share one SQLite storage while one of them is killed: the search resumes with the same
trial history and runs the killed trial again from its checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from t2i.engine.health import HealthMonitor  # noqa: E402
from t2i.errors import UsageError  # noqa: E402
from t2i.study import load_study, run_study, runner  # noqa: E402
from t2i.study.optimize import _Watcher, open_search  # noqa: E402
from t2i.study.pruning import HealthCheck, StopFile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

TINY = """
metrics = ["diversity"]
[base]
"data.resolution" = 32
"data.options" = { train_size = 64, test_size = 32 }
"generator.options.ngf" = 8
"discriminator.options.ndf" = 8
"text_encoder.options.dim" = 16
"eval.options.diversity" = { n_captions = 4, per_caption = 2 }
train = { batch_size = 16, log_every = 1, sample_every = 0, checkpoint_every = 2, device = "cpu", precision = "fp32" }
"""


def search_file(tmp_path: Path, search: str, *, name: str = "s", steps: int = 12) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + textwrap.dedent(TINY) + f"[budget]\nsteps = {steps}\n" + textwrap.dedent(search))
    return path


def test_the_search_section_is_read_and_checked(tmp_path):
    spec = load_study(search_file(tmp_path, """
        [search]
        n_trials = 5
        objective = "diversity/collapse_score"
        sampler = { name = "tpe", seed = 3 }
        [search.space]
        train.lr_g = { low = 1e-5, high = 1e-3, log = true }
        "train.d_steps" = { low = 1, high = 3 }
        "loss.terms.feature_matching" = { low = 0.0, high = 0.1, step = 0.05 }
        "generator" = [{ name = "dcgan" }, { name = "sagan", options = { ch = 8 } }]
    """))
    search = spec.search
    assert [(p.key, p.kind) for p in search.space] == [("train.lr_g", "float"), ("train.d_steps", "int"),
                                                        ("loss.terms.feature_matching", "float"), ("generator", "choice")]
    # diversity declares collapse_score best at 1: the search minimises the distance to 1
    assert search.objective.direction == "minimize" and search.objective.score({"diversity/collapse_score": 0.75}) == 0.25
    assert search.changes({"generator": "name=sagan, options.ch=8"}) == {"generator.name": "sagan", "generator.options.ch": 8}
    assert search.param("loss.terms.feature_matching").grid_values() == [0.0, 0.05, 0.1]
    assert len(search.corner_points()) == 1 + 1 + 1 + 1 + 1  # every choice and both ends checked as configs
    assert spec.runs == [] and spec.axes == search.keys


@pytest.mark.parametrize("search, message", [
    ('[search]\nobjective = "diversity/collapse_score"\nn_trail = 3\n[search.space]\n"train.lr_g" = [1e-4]',
     r"\[search\] unknown key 'n_trail'; did you mean 'n_trials'"),
    ('[search]\nn_trials = 2\nobjective = "diversity/collapse_score"\nsampler = "cmaes"\n[search.space]\n"train.schedule" = ["constant", "linear"]',
     "sampler cmaes searches float and int ranges only; 'train.schedule' is a list of choices"),
    ('[search]\nobjective = "diversity/collapse_score"\nsampler = "grid"\n[search.space]\n"train.lr_g" = { low = 1e-5, high = 1e-3 }',
     "sampler grid needs a finite set of values; give 'train.lr_g' a step"),
    ('[search]\nn_trials = 2\nobjective = "shapes_accuracy/mean"\n[search.space]\n"train.lr_g" = [1e-4, 2e-4]',
     r"objective 'shapes_accuracy/mean' needs metric 'shapes_accuracy', which the trials do not compute"),
    ('[search]\nn_trials = 2\nobjective = "diversity/collapse_score"\n[search.space]\n"train.lr_g" = { low = 0.0, high = 1e-3, log = true }',
     "a log-scale range needs low > 0"),
    ('[search]\nn_trials = 2\nobjective = "diversity/collapse_score"\n[search.space]\n"generator.options.ngff" = [8, 16]',
     r"trial 'generator.options.ngff=8' \(seed 0\): generator 'dcgan': unknown key 'ngff'; did you mean 'ngf'"),
    ('[grid]\n"train.lr_d" = [1e-4]\n[search]\nn_trials = 2\nobjective = "diversity/collapse_score"\n[search.space]\n"train.lr_g" = [1e-4]',
     r"\[search\] does not mix with \[grid\]"),
])
def test_invalid_search_sections_fail_in_one_line(tmp_path, search, message):
    with pytest.raises(UsageError, match=message):
        load_study(search_file(tmp_path, search))


def test_the_health_check_stops_at_the_first_error_verdict_and_the_stop_file_at_its_reason(tmp_path):
    monitor = HealthMonitor(window=3)
    check = HealthCheck(monitor)
    for step in (1, 2):  # D's loss stuck at the seed's 1.0064, not yet for a whole window
        monitor.observe(step, {"d/total": 1.0064, "g/total": 3.0 + step, "lr/d": 1e-4})
        assert check() is None
    monitor.observe(3, {"d/total": 1.0064, "g/total": 6.0, "lr/d": 1e-4})
    assert check().startswith("d_loss_stuck (steps 1-3): ") and check.describe()["verdict"]["code"] == "d_loss_stuck"
    monitor.observe(4, {"d/total": 1.5, "g/total": 2.0, "lr/d": 1e-4})  # cleared: the run would go on
    assert check() is None

    stop = StopFile(tmp_path / "run.stop")
    assert stop() is None
    (tmp_path / "run.stop").write_text("pruned by the median pruner at step 40\n")
    assert stop() == "pruned by the median pruner at step 40" and stop.describe()["by"] == "pruner"


def test_the_pruner_judges_intermediate_evaluations_and_writes_the_stop_file(tmp_path):
    spec = load_study(search_file(tmp_path, """
        [search]
        n_trials = 4
        objective = "diversity/collapse_score"
        pruner = { name = "median", n_startup_trials = 1 }
        [search.space]
        "train.lr_g" = { low = 1e-5, high = 1e-3, log = true }
    """))
    study = open_search(spec, tmp_path / "out")
    good = study.ask()  # a finished trial whose evaluations were close to 1
    for step, value in ((10, 0.9), (20, 0.95)):
        good.report(abs(value - 1), step)
    study.tell(good, 0.05)
    bad = study.ask()
    run_dir = tmp_path / "out" / "runs" / "bad-seed0"
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:  # as the trainer logs: training records and evaluations
        f.write(json.dumps({"step": 10, "d/total": 1.0}) + "\n")
        f.write(json.dumps({"step": 10, "eval/diversity/collapse_score": 0.1}) + "\n")
    watcher = _Watcher(bad, run_dir, tmp_path / "bad.stop", spec.search, report=True, poll=0.01)
    watcher.check()
    assert bad.study.trials[1].intermediate_values == {10: pytest.approx(0.9)}
    assert watcher.pruned_at == 10
    assert (tmp_path / "bad.stop").read_text().startswith("pruned by the median pruner at step 10: objective 0.9")


def test_a_tiny_search_prunes_a_stuck_discriminator_at_its_verdict_and_reports(tmp_path):
    path = search_file(tmp_path, """
        [search]
        objective = "diversity/collapse_score"
        sampler = "grid"
        [search.space]
        "train.lr_d" = [2e-4, 1e-30]
    """, name="stuck", steps=10)
    lines: list[str] = []
    outcome = run_study(load_study(path), tmp_path / "out", log=lines.append)
    out = outcome.folder
    trials = optuna.load_study(study_name="stuck", storage=f"sqlite:///{out / 'search.db'}").trials
    by_lr = {t.params["train.lr_d"]: t for t in trials}
    stuck, fine = by_lr[1e-30], by_lr[2e-4]
    assert fine.state.name == "COMPLETE" and fine.value is not None and fine.user_attrs["step"] == 10
    assert stuck.state.name == "PRUNED" and stuck.user_attrs["reason"].startswith("d_not_learning (steps ")
    # stopped within a log window (log_every = 1) of the verdict, which is the recorded reason
    run = out / "runs" / stuck.user_attrs["runs"][0]
    record = json.loads((run / "trial.json").read_text())
    verdict = record["pruned"]["verdict"]
    assert record["status"] == "pruned" and verdict["code"] == "d_not_learning"
    assert record["step"] - verdict["first_step"] <= 6 + 2 and record["step"] < 10  # its window of 6 records
    assert (run / "checkpoints").is_dir() and (run / "summary.md").is_file()  # the pruned run's folder stays
    assert stuck.user_attrs["saved_s"] > 0
    report = (out / "report.md").read_text()
    assert "## Search" in report and "1 complete, 1 pruned" in report and "| pruned |" in report
    assert "d_not_learning (steps" in report and "### Compute saved by pruning" in report
    assert "1 trial(s) pruned; **" in report and (out / "plots" / "search_history.png").is_file()
    best = out / "best.toml"
    assert best.is_file() and "lr_d = 0.0002" in best.read_text() and f"t2i run --config {best}" in report
    assert any(line.startswith("    trial ") and "pruned at step" in line for line in lines)


def test_jobs_run_search_trials_in_worker_processes_with_their_stop_checks(tmp_path, monkeypatch):
    seen: list[list[str]] = []

    def fake_worker(cmd, *, env, **kwargs):  # what a worker process would be asked, and a finished run
        seen.append(cmd)
        time.sleep(0.2)
        run_dir = Path(cmd[cmd.index("t2i.study.worker") + 2])
        run_dir.mkdir(parents=True, exist_ok=True)
        value = 0.5 if "seed0" in run_dir.name else 0.7
        (run_dir / "trial.json").write_text(json.dumps({"status": "finished", "step": 2, "elapsed_s": 1.0,
                                                        "evaluation": {"diversity/collapse_score": value}}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_worker)
    path = search_file(tmp_path, """
        [search]
        n_trials = 3
        objective = "diversity/collapse_score"
        sampler = { name = "random", seed = 0 }
        [search.space]
        "train.lr_g" = { low = 1e-5, high = 1e-3, log = true }
    """, name="par")
    path.write_text("seeds = [0, 1]\n" + path.read_text())  # two runs per trial
    outcome = run_study(load_study(path), tmp_path / "out", jobs=2, report=False, log=lambda line: None)
    assert len(seen) == 6 and all("--prune-on-health" in c and "--stop-file" in c for c in seen)
    trials = optuna.load_study(study_name="par", storage=f"sqlite:///{tmp_path / 'out' / 'search.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.value == pytest.approx(0.4) for t in trials)  # mean over the seeds of |value - 1|
    assert len(outcome.records) == 6


def test_the_seed_search_example_validates(capsys):
    from t2i.cli import main as cli_main

    assert cli_main(["study", "run", str(REPO / "examples" / "studies" / "seed-search.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "objective: maximize shapes_accuracy/mean; sampler tpe, pruner median + health verdicts" in out
    assert "text_encoder: name=bow" in out and "| name=minilm" in out and "16 trials x 1 seeds" in out
    # its committed result: the report t2i wrote, readable again from the committed storage
    report = (REPO / "examples" / "studies" / "seed-search" / "report.md").read_text()
    assert "### Best trial" in report and "### Compute saved by pruning" in report



def test_workers_opening_a_new_storage_together_all_get_it(tmp_path):
    # optuna alone fails here: all but one of them lose the race to create the tables
    import threading

    from t2i.study.optuna_backend import open_storage

    url, errors = f"sqlite:///{tmp_path / 'new.db'}", []

    def open_it() -> None:
        try:
            open_storage(url, heartbeat=False)
        except Exception as exc:  # noqa: BLE001 - collected and shown
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

def _ended(storage: str) -> list:
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).trials
    except Exception:  # not created yet, or locked for a moment
        return []
    return trials


def _kill_a_worker_mid_trial(out: Path, storage: str, pids: dict) -> object:
    """Kill one worker in the middle of a trial that has a checkpoint, once both workers have taken a trial
    and some trial has ended. Workers are frozen (SIGSTOP) the moment a new checkpoint appears, so a trial of
    a few tenths of a second cannot slip past the poll however loaded the machine is."""
    seen: set[Path] = set()
    deadline = time.time() + 300
    while time.time() < deadline:
        if any(w.poll() is not None for w in pids.values()):
            break
        fresh = set((out / "runs").glob("*/checkpoints/step_*")) - seen
        if not fresh:
            time.sleep(0.02)
            continue
        seen |= fresh
        for pid in pids:
            os.killpg(pid, signal.SIGSTOP)
        try:
            trials = _ended(storage)
            takers = {t.user_attrs.get("pid") for t in trials}
            running = [t for t in trials if t.state.name == "RUNNING" and t.user_attrs.get("pid") in pids
                       and t.user_attrs.get("runs")
                       and any((out / "runs" / t.user_attrs["runs"][0] / "checkpoints").glob("step_*"))]
            if running and set(pids) <= takers and any(t.state.name == "COMPLETE" for t in trials):
                os.killpg(running[0].user_attrs["pid"], signal.SIGKILL)
                return running[0]
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)
    raise AssertionError("no worker was caught mid-trial: " + " | ".join(
        (w.stderr.read() or "")[-500:] for w in pids.values() if w.poll() is not None))


def test_two_workers_share_one_storage_and_a_killed_search_resumes_with_its_history(tmp_path):
    path = search_file(tmp_path, """
        [search]
        n_trials = 4
        objective = "diversity/collapse_score"
        sampler = { name = "random", seed = 0 }
        pruner = "none"
        [search.space]
        "train.lr_g" = { low = 1e-5, high = 1e-3, log = true }
    """, name="shared", steps=8)
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'search.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "t2i", "study", "run", str(path), "--out", str(out), "--worker", "-q"]
    workers = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True) for _ in range(2)]
    pids = {w.pid: w for w in workers}
    try:
        killed = _kill_a_worker_mid_trial(out, storage, pids)
        survivor = next(w for pid, w in pids.items() if pid != killed.user_attrs["pid"])
        assert survivor.wait(timeout=180) == 0, survivor.stderr.read()
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    before = {t.number: (t.state.name, t.params, t.value) for t in _ended(storage) if t.state.name == "COMPLETE"}
    assert len({t.user_attrs["pid"] for t in _ended(storage) if "pid" in t.user_attrs}) == 2  # both worked on it

    lines: list[str] = []
    run_study(load_study(path), out, log=lines.append, report=False)
    trials = _ended(storage)
    assert {t.number: (t.state.name, t.params, t.value) for t in trials if t.number in before} == before
    dead = trials[killed.number]
    assert dead.state.name == "FAIL" and dead.user_attrs["status"] == "killed"
    again = next(t for t in trials if t.user_attrs.get("retry_of") == killed.number)
    assert again.state.name == "COMPLETE" and again.params == dead.params
    record = json.loads((out / "runs" / again.user_attrs["runs"][0] / "trial.json").read_text())
    assert record["resumed_from"] and record["step"] == 8  # the same run folder, from its checkpoint
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    assert any(f"trial {killed.number} was killed; it runs again" in line for line in lines)


def test_report_names_the_default_storage_by_its_place_in_the_folder():
    """A study folder can move (examples/studies/seed-search was run elsewhere): its default storage is
    "search.db in this folder", never the absolute path it was created at; any other URL is shown as given."""
    from t2i.study.search_report import _storage_text

    moved = {"storage": "sqlite:////tmp/elsewhere/search.db", "default_storage": True}
    assert _storage_text(moved) == "`search.db` in this folder"
    shared = {"storage": "postgresql://user@host/db", "default_storage": False}
    assert _storage_text(shared) == "`postgresql://user@host/db`"
