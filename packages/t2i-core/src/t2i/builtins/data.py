"""The core's built-in data sets, registered through the same hook as any plugin's."""

from __future__ import annotations

from t2i.data.shapes import Shapes, ShapesConfig
from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_datasets(register):
    register("shapes", Shapes, config=ShapesConfig, help="Coloured shapes with exact captions, from a seed")
