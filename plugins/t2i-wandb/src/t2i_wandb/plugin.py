"""t2i hooks: registers the logger ``wandb``, by reference (wandb is imported when a run starts)."""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_loggers(register):
    register("wandb", "t2i_wandb.logger:WandbLogger", config="t2i_wandb.logger:WandbConfig",
             help="Weights & Biases: config, metrics, sample grids, verdicts and evaluation tables; offline files "
                  "in the run folder when no API key is set")
