"""Tables for the CLI that fit the terminal without splitting a name: ``t2i.builtins.losses`` stays on one
line at 80 columns instead of becoming ``t2i.builtins.loss`` / ``es``."""

from __future__ import annotations

from typing import Any, Iterable

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["table", "keep_whole", "print_table"]

PROSE_WIDTH = 16  # the narrowest a column of text may get before the table outgrows the terminal


def table(*columns: str, names: int = 1) -> Table:
    """A table for the terminal's width.

    - The first ``names`` columns hold one identifier per cell (a component, plugin or distribution name):
      they never wrap, and :func:`print_table` makes them as wide as their longest cell.
    - The other columns wrap at spaces; a word longer than the whole column is folded, unless the caller
      declared it with :func:`keep_whole` (names listed in a cell: ``losses: bce, hinge``).
    """
    out = Table()
    for index, column in enumerate(columns):
        if index < names:
            out.add_column(column, no_wrap=True, overflow="ignore")
        else:
            out.add_column(column, overflow="fold")
    return out


def keep_whole(table: Table, column: str, words: Iterable[str]) -> None:
    """Make ``column`` at least as wide as the longest of ``words``, so that none of them is ever split."""
    col = next(c for c in table.columns if c.header == column)
    col.min_width = max([col.min_width or 0, *(cell_len(w) for w in words)])


def print_table(console: Console, table: Table) -> None:
    """Print ``table``; when the terminal is too narrow for its names (and :data:`PROSE_WIDTH` columns of
    text beside them), print it wider than the terminal, which wraps it, rather than cut or split them."""
    for column in table.columns:
        if column.no_wrap:
            widths = [cell_len(str(column.header))]
            widths += [Text.from_markup(cell).cell_len for cell in column._cells if isinstance(cell, str)]
            column.min_width = max(widths)
    needed = len(table.columns) + 1 + sum(
        2 + (column.min_width if column.no_wrap else max(column.min_width or 0, PROSE_WIDTH)) for column in table.columns
    )
    if needed <= console.width:
        console.print(table)
    else:
        for column in table.columns:
            if not column.no_wrap:
                column.min_width = max(column.min_width or 0, PROSE_WIDTH)
        console.print(table, width=needed, crop=False)
