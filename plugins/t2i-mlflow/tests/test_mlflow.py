"""t2i-mlflow against MLflow's real local SQLite store: a tiny training run with ``--logger mlflow`` and the
conformance kit's fake run, both read back with ``MlflowClient``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2i.cli import main
from t2i.testing import check_logger

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

# a 4-step run of 8-channel networks at 32 px, with sample grids at steps 2 and 4 and an evaluation at the end
TINY = ["-d", "train_size=64", "-d", "test_size=32", "-G", "ngf=8", "-D", "ndf=8", "-T", "dim=16", "--batch-size", "8",
        "--steps", "4", "--log-every", "2", "--sample-every", "2", "--checkpoint-every", "0", "--device", "cpu",
        "--precision", "fp32", "--quiet", "--set", 'eval.metrics=["diversity"]',
        "--set", "eval.options.diversity.n_captions=4", "--set", "eval.options.diversity.per_caption=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One runs folder for the module: creating an MLflow SQLite store runs its migrations (seconds), once."""
    return tmp_path_factory.mktemp("mlflow") / "runs"


def only_run(uri: str, experiment_name: str = "t2i") -> tuple[MlflowClient, object]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_a_training_run_reads_back_from_the_default_sqlite_store(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = runs / "tiny"
    assert main(["run", *TINY, "--logger", "mlflow", "--out", str(run_dir)]) == 0, capsys.readouterr().err

    # the default store: one SQLite file beside the run folders, artifacts next to it
    assert (runs / "mlflow.db").is_file() and (runs / "mlartifacts").is_dir()
    client, run = only_run(f"sqlite:///{runs / 'mlflow.db'}")
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.tags["t2i.run_dir"] == str(run_dir.resolve()) and run.data.tags["t2i.status"] == "finished"
    assert run.data.params["train.batch_size"] == "8" and run.data.params["generator.options.ngf"] == "8"
    assert run.data.params["generator.name"] == "dcgan" and run.data.params["log.loggers"] == "['mlflow']"
    # metrics by step, the same numbers as metrics.jsonl
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "d/total")
    assert [(m.step, m.value) for m in history] == [(x["step"], pytest.approx(x["d/total"])) for x in lines
                                                   if "d/total" in x]
    collapse = client.get_metric_history(run.info.run_id, "eval/diversity/collapse_score")
    assert [m.step for m in collapse] == [4]
    # the verdicts (a 4-step run has none or a few) and the files
    codes = sorted({v["code"] for v in json.loads((run_dir / "health.json").read_text())})
    assert run.data.tags["t2i.health"] == (",".join(codes) or "ok")
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.md", "health.json", "eval.json", "samples", "evaluation"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/step_00000002.png",
                                                                                  "samples/step_00000004.png"]
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "evaluation/step_00000004.json",
                                                      str(tmp_path))).read_text())
    assert table["value"][table["metric"].index("diversity/collapse_score")] == pytest.approx(collapse[-1].value)
    assert "runs/mlflow.db" not in capsys.readouterr().err  # no warning: the logger worked throughout


def test_the_kit_run_with_a_given_tracking_uri_and_verdict_tags(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/ignored.db")  # the option wins over it
    runs.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{runs / 'mlflow.db'}"  # the store of the test above (if it ran): no second migration
    options = {"tracking_uri": uri, "experiment": "kit"}
    check_logger("mlflow", options, run_dir=tmp_path / "elsewhere" / "fake")  # the kit's fake run
    client, run = only_run(uri, "kit")
    assert run.info.run_name == "fake" and run.info.status == "FINISHED"
    assert run.data.tags["t2i.health"] == "d_wins"
    assert run.data.tags["t2i.health.d_wins"].startswith("[warning] d_wins (steps 2-4")
    assert run.data.params["train.betas"] == "[0.5, 0.999]" and run.data.metrics["d/total"] == 1.25
    assert not (tmp_path / "elsewhere" / "mlflow.db").exists()  # the given URI, not the default store
    (grid,) = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert Path(client.download_artifacts(run.info.run_id, grid, str(tmp_path))).is_file()
    assert run.info.artifact_uri.startswith((runs / "mlartifacts").as_uri())  # beside the store, not ./mlruns
