"""Tables for the CLI that fit the terminal without splitting a name: ``t2i.builtins.losses`` stays on one
line at 80 columns instead of becoming ``t2i.builtins.loss`` / ``es``."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

__all__ = ["table"]


class _Table(Table):
    """A rich table whose name columns are always at least as wide as their longest word."""

    whole: tuple[int, ...] = ()  # indexes of the columns whose words must not be split

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*renderables, **kwargs)
        for index in self.whole:
            if index >= len(renderables) or renderables[index] is None:
                continue
            cell = renderables[index]
            plain = Text.from_markup(cell).plain if isinstance(cell, str) else getattr(cell, "plain", "")
            longest = max((cell_len(word) for word in plain.split()), default=0)
            column = self.columns[index]
            column.min_width = max(column.min_width or 0, longest)


def table(*columns: str, names: int = 1, lists: tuple[str, ...] = ()) -> Table:
    """A table for the terminal's width.

    - The first ``names`` columns hold one identifier per cell (a component, plugin or distribution name):
      they never wrap and are as wide as their longest cell.
    - Columns named in ``lists`` hold identifiers separated by spaces (``losses: bce, hinge``): they wrap
      between words, never inside one.
    - The other columns are prose: they wrap at spaces and fold only a word longer than the whole column.

    A terminal too narrow for the names gets a table wider than itself rather than split names.
    """
    out = _Table()
    for index, column in enumerate(columns):
        if index < names:
            out.add_column(column, no_wrap=True, overflow="ignore", min_width=cell_len(column))
        else:
            out.add_column(column, overflow="fold")
    out.whole = tuple(i for i, column in enumerate(columns) if i < names or column in lists)
    return out
