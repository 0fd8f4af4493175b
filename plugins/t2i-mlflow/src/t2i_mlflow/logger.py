"""The ``mlflow`` logger: one MLflow run per t2i run, in any tracking store.

Where it goes: ``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI``, else a SQLite store beside the run
folders, ``<runs folder>/mlflow.db``. A new experiment of a local SQLite store keeps its artifacts in
``mlartifacts`` beside the database file (not in MLflow's ``./mlruns`` of the current folder). One store per
runs folder (not per run) because a tracker is for comparing runs: ``mlflow ui --backend-store-uri
sqlite:///runs/mlflow.db`` shows every run of ``runs/`` side by side, as ``tensorboard --logdir runs`` does,
and a study's runs share their study's store. (MLflow 3 keeps its file store in maintenance mode and refuses
it by default; SQLite is its recommended local store.)

What it records, in the MLflow run named after the run folder (tag ``t2i.run_dir``: the folder's path):

- params: the resolved config, flattened (``train.lr_g``, ``generator.name``, ``generator.options.ngf``);
- metrics: every logged record and evaluation by step (``d/total``, ``eval/diversity/collapse_score``);
- artifacts: the sample grids (``samples/``), ``summary.md``, ``health.json``, ``eval.json``, and each
  evaluation's table (``evaluation/step_XXXXXXXX.json``: ``{"metric": [...], "value": [...]}``);
- tags: ``t2i.health`` (``ok`` or the verdict codes), one ``t2i.health.<code>`` per verdict code (its lines),
  ``t2i.status``; the MLflow run ends FINISHED, KILLED (interrupted) or FAILED (diverged).

A resumed t2i run continues its MLflow run (found by the ``t2i.run_dir`` tag) in the same store.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from t2i.loggers import Logger

__all__ = ["MLflowConfig", "MLflowLogger", "default_tracking_uri", "artifact_location"]

_BATCH = 100  # params or metrics per request (MLflow accepts up to 100 params and 1000 metrics a batch)
_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "diverged": "FAILED"}


@dataclass
class MLflowConfig:
    tracking_uri: str = field(default="", metadata={
        "help": "tracking store or server ('' = $MLFLOW_TRACKING_URI, else sqlite:///<runs folder>/mlflow.db)"})
    experiment: str = field(default="t2i", metadata={"help": "MLflow experiment (created when missing)"})
    artifacts: bool = field(default=True, metadata={
        "help": "copy the sample grids, summary.md, health.json, eval.json and evaluation tables as artifacts"})


def default_tracking_uri(run_dir: Path) -> str:
    """``sqlite:///<run_dir's parent>/mlflow.db``: one store for the runs of a folder."""
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its artifacts: ``mlartifacts`` beside the database
    (MLflow's own default is ``./mlruns`` in whatever folder the process started in). ``None`` for any other
    store: a tracking server decides."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


class MLflowLogger(Logger):
    """One MLflow run per t2i run (see the module's docstring for what goes where)."""

    def __init__(self, cfg: MLflowConfig | None = None):
        self.cfg = cfg or MLflowConfig()
        self.client: Any = None
        self.run_id = ""
        self.tracking_uri = ""

    def start(self, run_dir: Path, params: Mapping[str, Any], name: str, *, resumed: bool = False) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        run_dir = Path(run_dir).resolve()
        self.tracking_uri = self.cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)
        experiment = _retry(lambda: self._experiment(MlflowClient(tracking_uri=self.tracking_uri)))
        previous = self.client.search_runs([experiment], f"tags.`t2i.run_dir` = '{run_dir}'",
                                           max_results=1) if resumed else []
        if previous:
            self.run_id = previous[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(experiment, run_name=name, tags={"t2i.run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _BATCH])

    def _experiment(self, client: Any) -> str:
        """Open the store (a new SQLite store creates its tables) and find or create the experiment."""
        self.client = client
        found = client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.cfg.experiment, artifact_location=artifact_location(self.tracking_uri))

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + _BATCH])

    def log_image(self, step: int, name: str, path: Path) -> None:
        if self.cfg.artifacts:
            self.client.log_artifact(self.run_id, str(path), name)

    def log_text(self, name: str, text: str) -> None:
        if self.cfg.artifacts:
            self.client.log_text(self.run_id, text, name)

    def log_evaluation(self, step: int, values: Mapping[str, float]) -> None:
        # the values themselves arrive as eval/... metrics (log_scalars); this is the evaluation's table
        if self.cfg.artifacts:
            table = {"metric": list(values), "value": [float(v) for v in values.values()]}
            self.client.log_text(self.run_id, json.dumps(table, indent=1), f"evaluation/step_{step:08d}.json")

    def log_verdicts(self, step: int, verdicts: Sequence[Any]) -> None:
        codes = sorted({v.code for v in verdicts})
        self.client.set_tag(self.run_id, "t2i.health", ",".join(codes) or "ok")
        for code in codes:
            lines = [v.line(status=True) for v in verdicts if v.code == code]
            self.client.set_tag(self.run_id, f"t2i.health.{code}", "\n".join(lines)[:5000])

    def finish(self, status: str, final: Mapping[str, float]) -> None:
        self.client.set_tag(self.run_id, "t2i.status", status)
        self.client.set_terminated(self.run_id, _STATUS.get(status, "FINISHED"))


def _retry(fn: Any, attempts: int = 5) -> Any:
    """``fn()``, again after a short wait when it fails: runs started together race to create the SQLite
    store's tables and the experiment (the losers see 'table exists' or a UNIQUE constraint)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - MLflow wraps the store's errors in several types
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
