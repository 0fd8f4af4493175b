"""The core's logger, TensorBoard, registered through the same hook as any plugin's logger
(``t2i-mlflow`` and ``t2i-wandb`` add theirs). See :mod:`t2i.loggers`."""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_loggers(register):
    register("tensorboard", "t2i.loggers.tensorboard:TensorBoardLogger",
             help="TensorBoard event files in <run>/tensorboard: scalars, sample grids, summary, verdicts, hparams")
