"""Studies: a grid x named variants x seeds runs end to end and reports; re-running resumes; crashing and
diverging trials are recorded while the study goes on; invalid study files fail in one line; the
seed-log example study runs with tiny settings."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import textwrap
import time
import types
from pathlib import Path

import pytest

import t2i
from t2i import plugins
from t2i.cli import main as cli_main
from t2i.engine.checkpoint import list_checkpoints
from t2i.errors import UsageError
from t2i.interfaces import LossTerm, Metric
from t2i.study import load_study, run_study, runner, write_report
from t2i.study.report import best_trials, goal, load_folder, metric_keys
from t2i.study.spec import overlay
from t2i.testing.toys import ToyConfig, ToyGenerator

from t2i_test_helpers import run_cli

REPO = Path(__file__).resolve().parents[1]

TINY_BASE = """
[base]
"data.resolution" = 32
"data.options" = { train_size = 64, test_size = 32 }
"generator.options.ngf" = 8
"discriminator.options.ndf" = 8
"text_encoder.options.dim" = 16
train = { batch_size = 16, log_every = 1, sample_every = 0, checkpoint_every = 2, device = "cpu" }
"""


def study(top: str = "", base: str = "", rest: str = "") -> str:
    """A study file: top-level keys, the tiny base config (plus ``base`` lines), then the other tables."""
    return textwrap.dedent(top) + TINY_BASE + textwrap.dedent(base) + textwrap.dedent(rest)


def write(tmp_path: Path, body: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


GRID_STUDY = study(
    top="""
    name = "tiny"
    description = "grid x variants x seeds"
    seeds = [0, 1]
    metrics = ["diversity"]
    """,
    base='"eval.options.diversity" = { n_captions = 4, per_caption = 2 }\n',
    rest="""
    [budget]
    steps = 4

    [grid]
    "train.lr_d" = [1e-4, 4e-4]

    [[variants]]
    name = "hinge"

    [[variants]]
    name = "bce + fm"
    "loss.adversarial" = "bce"
    "loss.terms.feature_matching" = 0.01
    """,
)


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    """The study of the first tests, run once: 2 variants x 2 grid values x 2 seeds = 8 runs."""
    root = tmp_path_factory.mktemp("grid")
    spec = load_study(write(root, GRID_STUDY))
    lines: list[str] = []
    outcome = run_study(spec, root / "out", log=lines.append)
    return spec, outcome, lines


def test_a_grid_of_named_variants_over_seeds_runs_and_reports(grid_study):
    spec, outcome, lines = grid_study
    out = outcome.folder
    assert [t.label for t in spec.trials] == ["hinge, train.lr_d=0.0001", "hinge, train.lr_d=0.0004",
                                              "bce + fm, train.lr_d=0.0001", "bce + fm, train.lr_d=0.0004"]
    assert len(spec.runs) == 8 and not outcome.interrupted
    assert all(s["status"] == "finished" and s["step"] == 4 for s in outcome.records.values())
    for run in spec.runs:  # each an ordinary run folder, its config reproducible
        folder = out / "runs" / run.name
        assert (folder / "summary.md").is_file() and (folder / "health.json").is_file()
        saved = t2i.config.load_toml(folder / "config.toml")
        assert saved["train"]["seed"] == run.seed and saved["train"]["steps"] == 4
        assert (out / "configs" / f"{run.name}.toml").is_file()
    bce = t2i.config.load_toml(out / "runs" / "bce-fm-train-lr-d-0-0004-seed1" / "config.toml")
    assert bce["loss"]["adversarial"] == "bce" and bce["loss"]["terms"]["feature_matching"] == 0.01
    assert bce["train"]["lr_d"] == 4e-4
    assert any(line.startswith("[8/8] bce + fm, train.lr_d=0.0004 seed 1") for line in lines)


def test_the_report_has_the_trials_metrics_health_plots_and_samples(grid_study):
    _, outcome, _ = grid_study
    out = outcome.folder
    report = (out / "report.md").read_text()
    assert "| hinge, train.lr_d=0.0001 | lr_d=0.0001 | 2 finished |" in report  # where it differs from the base
    assert "| bce + fm, train.lr_d=0.0004 | loss adversarial=bce, term feature_matching=0.01, lr_d=0.0004 |" in report
    assert "train.seed" not in report.split("## Metrics")[0]  # seeds are repeats, not differences
    row = next(line for line in report.splitlines() if line.startswith("| diversity/collapse_score"))
    assert row.count("±") == 4  # mean ± std over the two seeds, for each trial
    assert "### Best trial per metric" in report and "- diversity/collapse_score: **" in report
    assert "## Health" in report and "mode_collapse" in report  # 4 steps: every caption gives the same blur
    for png in ("loss_d_total.png", "loss_g_total.png", "metric_diversity_collapse_score.png", "samples.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"plots/{png}" in report
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 8 and {r["seed"] for r in rows} == {"0", "1"}
    assert {r["train.lr_d"] for r in rows} == {"0.0001", "0.0004"}
    assert all(float(r["diversity/collapse_score"]) >= 0 and r["status"] == "finished" for r in rows)


def test_rerunning_keeps_finished_runs_and_resumes_interrupted_ones(grid_study, tmp_path):
    spec, outcome, _ = grid_study
    out = tmp_path / "out"
    shutil.copytree(outcome.folder, out)
    # "interrupted" after its checkpoint at step 2: no final checkpoint, no trial record
    cut = out / "runs" / spec.runs[3].name
    shutil.rmtree(list_checkpoints(cut / "checkpoints")[-1])
    (cut / "trial.json").unlink()
    # killed before its first checkpoint: started again from nothing
    fresh = out / "runs" / spec.runs[5].name
    shutil.rmtree(fresh / "checkpoints")
    (fresh / "trial.json").unlink()
    kept = {r.name: (out / "runs" / r.name / "trial.json").read_text() for r in spec.runs if r.name not in (cut.name, fresh.name)}

    lines: list[str] = []
    again = run_study(load_study(outcome.folder.parent / "study.toml"), out, log=lines.append)
    assert lines[0] == "study tiny: 6 of 8 runs already done, 2 to run"
    assert again.records[cut.name]["resumed_from"] == 2 and again.records[cut.name]["step"] == 4
    assert again.records[fresh.name]["resumed_from"] is None and again.records[fresh.name]["status"] == "finished"
    assert {n: (out / "runs" / n / "trial.json").read_text() for n in kept} == kept
    logged = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "d/total" in r] == [1, 2, 3, 4]  # nothing logged twice
    assert "| finished | 4 | 2 |" in (out / "report.md").read_text()  # the runs table: 4 steps, resumed from 2


class CrashingGenerator(ToyGenerator):
    def forward(self, z, text):
        if self.training and getattr(self, "_calls", 0) >= 3:
            raise RuntimeError("the test generator crashed on purpose")
        self._calls = getattr(self, "_calls", 0) + 1
        return super().forward(z, text)


class NaNTerm(LossTerm):
    def g_loss(self, out):
        return out.fake.logits.mean() * float("nan")


@pytest.fixture
def broken_parts():
    plugin = types.ModuleType("studybroken")
    plugin.t2i_register_generators = t2i.hookimpl(lambda register: register("crashing", CrashingGenerator, config=ToyConfig))
    plugin.t2i_register_losses = t2i.hookimpl(lambda register: register("nan_term", NaNTerm))
    plugins.register_plugin(plugin, name="studybroken")
    yield
    plugins.unregister_plugin("studybroken")


def test_crashing_and_diverging_trials_are_recorded_and_the_study_goes_on(tmp_path, broken_parts):
    path = write(tmp_path, study(top="metrics = []\n", rest="""
        [budget]
        steps = 3

        [[variants]]
        name = "crashes"
        "generator.name" = "crashing"
        "generator.options.width" = 4

        [[variants]]
        name = "diverges"
        "loss.terms.nan_term" = 1.0

        [[variants]]
        name = "fine"
    """))
    outcome = run_study(load_study(path), tmp_path / "out", log=lambda line: None)
    states = {name.rsplit("-seed", 1)[0]: s for name, s in outcome.records.items()}
    assert states["crashes"]["status"] == "crashed"
    assert states["crashes"]["message"] == "RuntimeError: the test generator crashed on purpose"
    assert "Traceback" in (tmp_path / "out" / "runs" / "crashes-seed0" / "error.txt").read_text()
    assert states["diverges"]["status"] == "diverged" and "g/nan_term" in states["diverges"]["message"]
    assert states["fine"]["status"] == "finished"
    report = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| crashes |"))
    assert "G=crashing" in row and "G width=4" in row and "| crashed |" in row
    assert "non_finite" in report and "term 'nan_term' of the generator loss" in report

    # a re-run retries the crash, keeps the divergence
    lines: list[str] = []
    run_study(load_study(path), tmp_path / "out", log=lines.append)
    assert lines[0] == "study study: 2 of 3 runs already done, 1 to run"

    # a study file that changed what an existing run trained is refused, naming the run and the key
    path.write_text(path.read_text().replace('name = "fine"', 'name = "fine"\n"train.lr_g" = 1e-3'))
    with pytest.raises(UsageError, match=r"fine-seed0 was trained with another config .*a different train.lr_g"):
        run_study(load_study(path), tmp_path / "out", log=lambda line: None)


@pytest.mark.parametrize("body, message", [
    ('nmae = "x"\n[grid]\n"train.lr_d" = [1e-4]', "study .*study.toml: unknown key 'nmae'; did you mean 'name'\\?"),
    ('[grid]\n"train.lr_d" = 1e-4', r"\[grid\] train.lr_d must be a non-empty list of values, got 0.0001"),
    ('[grid]\n"train.lr_dd" = [1e-4, 2e-4]', r"trial 'train.lr_dd=0.0001' \(seed 0\): unknown key 'train.lr_dd'; did you mean 'lr_d'"),
    ('[[variants]]\nname = "wide"\n"generator.options.ngff" = 9',
     r"trial 'wide' \(seed 0\): generator 'dcgan': unknown key 'ngff'; did you mean 'ngf'"),
    ('[[variants]]\nname = "typo"\n"discriminator.name" = "sagn"', r"trial 'typo' \(seed 0\): unknown discriminator 'sagn'; did you mean 'sagan'"),
    ('[[variants]]\nname = "neg"\n"train.lr_g" = -1.0', r"trial 'neg' \(seed 0\): train.lr_g must be > 0"),
    ('[budget]\nsteps = 2\nminutes = 1\n[grid]\n"train.lr_d" = [1e-4]', "budget takes exactly one of steps, epochs, minutes"),
    ('[override]\n"train.lr_d" = 1e-4\n[grid]\n"train.lr_d" = [1e-4, 2e-4]', "override sets 'train.lr_d', which the study varies"),
    ('name = "nothing"', "nothing varies"),
    ('[[variants]]\nname = "x"\nconfig = "missing.toml"', "variant 'x': config file not found: .*missing.toml"),
])
def test_invalid_study_files_fail_in_one_line(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(UsageError, match=message):
        load_study(path)


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    path = write(tmp_path, '[grid]\n"train.lr_dd" = [1e-4]')
    assert cli_main(["study", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("t2i: error: trial 'train.lr_dd=0.0001' (seed 0): unknown key") and "\n" not in err
    assert cli_main(["study", "run", str(tmp_path / "nope.toml")]) == 2
    assert "study file not found" in capsys.readouterr().err
    assert cli_main(["study", "report", str(tmp_path)]) == 2
    assert "is not a study folder" in capsys.readouterr().err


def test_variant_config_files_component_swaps_and_ofat(tmp_path):
    write(tmp_path, '[train]\nlr_g = 3e-4\nbatch_size = 512\n[generator]\nname = "dcgan"\noptions = { ngf = 16 }\n', "v.toml")
    path = write(tmp_path, study(rest="""
        [override]
        "train.batch_size" = 16     # shrinks what the variant's file sets

        [ofat]
        "train.ema" = [0.0, 0.999]
        "train.d_steps" = [2]

        [[variants]]
        name = "from file"
        config = "v.toml"

        [[variants]]
        name = "sagan"
        "generator.name" = "sagan"
        "generator.options.ch" = 8
    """))
    spec = load_study(path, overrides={"train.steps": "2"})
    labels = [t.label for t in spec.trials]
    # ofat: the base once, then each value that differs from the base alone (ema 0.0 is the base's)
    assert labels == ["from file", "from file, train.ema=0.999", "from file, train.d_steps=2",
                      "sagan", "sagan, train.ema=0.999", "sagan, train.d_steps=2"]
    by_label = {r.trial.label: r.config for r in spec.runs}
    assert by_label["from file"].train.lr_g == 3e-4 and by_label["from file"].generator.options["ngf"] == 16
    assert by_label["from file"].train.batch_size == 16
    assert by_label["sagan"].generator.options == {"ch": 8}  # dcgan's ngf = 8 from the base was dropped
    assert by_label["sagan, train.d_steps=2"].train.d_steps == 2 and by_label["sagan"].train.steps == 2
    assert overlay({"loss": {"adversarial": "bce", "options": {"smooth": 0.1}}}, {"loss": {"adversarial": "hinge"}}) == \
        {"loss": {"adversarial": "hinge"}}


def test_which_value_is_best():
    assert goal("shapes_accuracy/mean/seen") == "max"
    assert goal("fid") == "min" and goal("my_metric", ["my_*"]) == "min"
    assert goal("diversity/collapse_score") == "one" and goal("diversity/within_caption") == "none"
    # what each metric declares, whatever its name suggests
    assert goal("fd_dinov2") == "min" and goal("prc/precision") == "max" and goal("r_precision") == "max"
    assert goal("is") == "max" and goal("kid") == "min" and goal("clip_score") == "max"
    # spreads and figures of the real images are never best; nor are keys of metrics that are not installed
    assert goal("kid/std") == "none" and goal("r_precision/std") == "none" and goal("r_precision/real_std") == "none"
    assert goal("r_precision/real") == "none" and goal("shapes_accuracy/colour/real") == "none"
    assert goal("diversity/real_between_captions") == "none" and goal("not_installed/score") == "none"


class Murkiness(Metric):
    """A plugin's metric whose name says nothing about its direction: lower is better, except its sharpness."""

    higher_is_better = False
    goals = {"murkiness/sharpness": "max", "murkiness/contrast": "one"}

    def evaluate(self, generate, reference):
        return {}


@pytest.fixture
def murkiness_plugin():
    plugin = types.ModuleType("studymurk")
    plugin.t2i_register_metrics = t2i.hookimpl(lambda register: register("murkiness", Murkiness))
    plugins.register_plugin(plugin, name="studymurk")
    yield
    plugins.unregister_plugin("studymurk")


def finished_study(folder: Path, evaluations: dict[str, dict[str, float]], lower_is_better=()) -> Path:
    """A study folder as 't2i study run' leaves it, one finished run per trial with these final evaluations."""
    trials, runs = [], []
    for label, values in evaluations.items():
        run = f"{label}-seed0"
        trials.append({"label": label, "slug": label, "changes": {}, "runs": [run]})
        runs.append({"name": run, "trial": label, "seed": 0, "config": f"configs/{run}.toml", "folder": f"runs/{run}"})
        (folder / "runs" / run).mkdir(parents=True)
        (folder / "runs" / run / "trial.json").write_text(json.dumps({"status": "finished", "step": 1, "evaluation": values}))
    plan = {"name": "ranks", "seeds": [0], "budget": {}, "lower_is_better": list(lower_is_better), "trials": trials,
            "runs": runs}
    (folder / "plan.json").write_text(json.dumps(plan))
    return folder


def test_the_report_ranks_by_what_each_metric_declares(tmp_path, murkiness_plugin):
    folder = finished_study(tmp_path, {
        "a": {"fd_dinov2": 10.0, "kid": 0.2, "kid/std": 0.001, "murkiness": 5.0, "murkiness/sharpness": 3.0,
              "murkiness/contrast": 1.5, "r_precision": 0.5, "r_precision/real": 0.9},
        "b": {"fd_dinov2": 20.0, "kid": 0.1, "kid/std": 0.5, "murkiness": 2.0, "murkiness/sharpness": 1.0,
              "murkiness/contrast": 0.9, "r_precision": 0.6, "r_precision/real": 0.9},
    })
    data = load_folder(folder)
    keys = metric_keys(data)
    assert "r_precision/real" not in keys and "kid/std" in keys  # ceilings are left out; a spread is shown
    best = {key: label for key, (label, _) in best_trials(data, keys).items()}
    assert best == {"fd_dinov2": "a", "kid": "b", "murkiness": "b", "murkiness/sharpness": "a",
                    "murkiness/contrast": "b", "r_precision": "b"}
    report = write_report(folder).read_text()
    assert "- fd_dinov2: **a** (10)" in report and "- murkiness: **b** (2)" in report
    assert "| fd_dinov2 ↓ |" in report and "| murkiness/contrast →1 |" in report and "| kid/std |" in report
    assert "kid/std: **" not in report
    # the study's own lower_is_better patterns still win
    data.plan["lower_is_better"] = ["murkiness/sharp*"]
    assert best_trials(data, ["murkiness/sharpness"])["murkiness/sharpness"][0] == "b"


def test_parallel_jobs_get_gpus_round_robin(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert runner.gpu_slots(4) == ["0", "1", "2", "3"] and runner.gpu_slots(2, nproc=2) == ["0,1", "2,3"]
    assert runner.gpu_slots(3, nproc=2) == ["0,1", "2,3", "0,1"] and runner.gpu_slots(1, nproc=8) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert runner.gpu_slots(2) == ["4", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")

    seen: list[str | None] = []

    def fake_worker(cmd, *, env, **kwargs):  # what the worker process would see, and a finished trial
        seen.append(env.get("CUDA_VISIBLE_DEVICES"))
        time.sleep(0.2)
        Path(cmd[-1]).mkdir(parents=True, exist_ok=True)
        (Path(cmd[-1]) / "trial.json").write_text(json.dumps({"status": "finished", "step": 2}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_worker)
    path = write(tmp_path, study(top='name = "gpus"\nseeds = [0, 1, 2]\n', rest="[budget]\nsteps = 2\n"))
    lines: list[str] = []
    run_study(load_study(path, overrides={"train.device": "auto"}), tmp_path / "out", jobs=2, report=False,
              log=lines.append)
    assert sorted(seen[:2]) == ["0", "1"] and seen[2] in ("0", "1")  # two at a time, each on its own GPU
    assert any("round-robin (CUDA_VISIBLE_DEVICES): 0 | 1" in line for line in lines)
    assert sum(" on GPU " in line for line in lines) == 3

    seen.clear()  # a study that trains on the CPU leaves the GPUs alone
    run_study(load_study(path, overrides={"train.device": "cpu"}), tmp_path / "cpu", jobs=2, report=False,
              log=lambda line: None)
    assert seen == [None, None, None]


def test_cli_runs_trials_in_parallel_workers_and_reports(tmp_path):
    path = write(tmp_path, study(top='name = "par"\nseeds = [0, 1]\n', rest="[budget]\nsteps = 2\n"))
    result = run_cli("study", "run", str(path), "--out", str(tmp_path / "out"), "--jobs", "2", "-q",
                     "--set", "eval.metrics=", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):
        state = json.loads((tmp_path / "out" / "runs" / f"base-seed{seed}" / "trial.json").read_text())
        assert state["status"] == "finished" and state["step"] == 2
        assert (tmp_path / "out" / "runs" / f"base-seed{seed}.log").is_file()
    assert "report: " in result.stderr and (tmp_path / "out" / "report.md").is_file()
    assert "# --set eval.metrics=''" in (tmp_path / "out" / "study.toml").read_text()
    (tmp_path / "out" / "report.md").unlink()
    assert cli_main(["study", "report", str(tmp_path / "out")]) == 0
    assert "| base | – | 2 finished |" in (tmp_path / "out" / "report.md").read_text()


def test_the_seed_log_study_runs_with_tiny_settings(tmp_path):
    spec = load_study(REPO / "examples" / "studies" / "seed-log.toml", overrides={
        "train.steps": 1, "train.batch_size": 8, "train.log_every": 1, "data.options.train_size": 32,
        "data.options.test_size": 16, "eval.metrics": [],
    })
    assert [t.label.split(" (")[0] for t in spec.trials] == [
        "Model 1", "Model 2a", "Model 2b", "Model 3", "Model 4", "Model 5a", "Model 5b", "Model 5c", "Model 5d",
        "t2i default recipe"]
    outcome = run_study(spec, tmp_path / "seed-log", log=lambda line: None)
    assert {s["status"] for s in outcome.records.values()} == {"finished"}, outcome.records
    m2a = t2i.config.load_toml(tmp_path / "seed-log" / "runs" / spec.runs[1].name / "config.toml")
    assert (m2a["train"]["lr_g"], m2a["train"]["lr_d"], m2a["loss"]["terms"]["feature_matching"]) == (1e-4, 4e-4, 0.1)
    assert m2a["train"]["precision"] == "bf16" and m2a["train"]["schedule"] == "cosine_restarts"
    assert "Model 5c (2b + self-attention)" in (tmp_path / "seed-log" / "report.md").read_text()
