"""The core's command groups beyond run/sample/eval (``t2i study``, ``t2i data``, ``t2i evaluator``),
registered through the same hook a plugin uses to add its own commands."""

from __future__ import annotations

import importlib

from t2i.hookspecs import hookimpl

# (module, Typer attribute, command group name)
COMMAND_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("t2i.cli.evaluator", "evaluator_app", "evaluator"),
    ("t2i.cli.study", "study_app", "study"),
    ("t2i.cli.data", "data_app", "data"),
)


@hookimpl
def t2i_register_commands(app):
    for module, attribute, name in COMMAND_GROUPS:
        group = getattr(importlib.import_module(module), attribute)
        app.add_typer(group, name=name)
