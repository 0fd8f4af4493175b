"""MkDocs hook: replace ``<!-- t2i-cli-reference -->`` in a page with the reference of the ``t2i`` command
line, generated from the Typer app itself (every command and sub-command, its usage line, its help and its
options), so the page cannot drift from the code."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- t2i-cli-reference -->"


def _command_markdown(command: Any, path: list[str], depth: int) -> list[str]:
    # Typer ships its own copy of click, so the command's own context class is used, not click's
    ctx = command.context_class(command, info_name=" ".join(path))
    lines = [f"{'#' * min(depth, 6)} `{' '.join(path)}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    lines += ["```text", command.get_usage(ctx).strip(), "```", ""]
    rows = [param.get_help_record(ctx) for param in command.get_params(ctx)]
    rows = [r for r in rows if r is not None]
    if rows:
        lines += ["| option | help |", "|---|---|"]
        for names, text in rows:
            cell = text.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{names}` | {cell} |")
        lines.append("")
    if hasattr(command, "list_commands"):  # a group: its sub-commands follow
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                lines += _command_markdown(sub, [*path, name], depth + 1)
    return lines


def cli_reference() -> str:
    """Markdown for every ``t2i`` command, plugins' commands included (those installed when the docs build)."""
    import typer.main

    from t2i.cli import build_app

    return "\n".join(_command_markdown(typer.main.get_command(build_app()), ["t2i"], 2))


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - MkDocs' hook signature
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
