"""The ``t2i`` command line. Plugins are loaded before arguments are parsed (so ``--help`` lists what is
installed), then the Typer app runs. A :class:`t2i.errors.UsageError` anywhere becomes one line on stderr
and exit code 2."""

from __future__ import annotations

import sys

from ..errors import UsageError

__all__ = ["main", "build_app"]


def _fail(message: str) -> int:
    print(f"t2i: error: {message}", file=sys.stderr)
    return 2


def build_app():
    """The Typer app with the core's commands and every plugin's (``t2i_register_commands``)."""
    from ..plugins import add_commands, registry
    from ..registry import KINDS
    from .app import app

    for kind in KINDS:  # fills the registries before parsing; a name registered twice is refused when used
        registry(kind, check=False)
    add_commands(app)
    return app


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        from ..plugins import plugins

        app = build_app()
        for info in plugins():
            if info.error:
                print(f"t2i: warning: plugin {info.name} ({info.distribution}) not loaded: {info.error}", file=sys.stderr)
            for line in info.warnings:
                print(f"t2i: warning: plugin {info.name} ({info.distribution}): {line}", file=sys.stderr)
        import typer.main

        # standalone mode: Typer reports its own parsing errors (exit 2) and exits via SystemExit
        typer.main.get_command(app).main(args=args, prog_name="t2i", standalone_mode=True)
    except UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _fail(str(exc.code)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
