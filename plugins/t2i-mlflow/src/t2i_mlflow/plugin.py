"""t2i hooks: registers the logger ``mlflow``, by reference (MLflow is imported when a run starts)."""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_loggers(register):
    register("mlflow", "t2i_mlflow.logger:MLflowLogger", config="t2i_mlflow.logger:MLflowConfig",
             help="MLflow tracking: params, metrics, grids and texts as artifacts, verdicts as tags; a SQLite store "
                  "beside the run folders by default, any tracking URI")
