"""t2i hook: adds ``t2i demo``. Gradio is imported when the command runs, not when plugins load, so
``t2i --help`` stays fast and the core never depends on it."""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_commands(app):
    from .cli import demo_cmd

    app.command("demo")(demo_cmd)
