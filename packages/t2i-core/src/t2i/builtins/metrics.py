"""The core's metrics, registered through the same hook as any plugin's."""

from __future__ import annotations

from t2i.hookspecs import hookimpl
from t2i.metrics.diversity import Diversity, DiversityConfig
from t2i.metrics.shapes_accuracy import ShapesAccuracy, ShapesAccuracyConfig


@hookimpl
def t2i_register_metrics(register):
    register(
        "shapes_accuracy",
        ShapesAccuracy,
        config=ShapesAccuracyConfig,
        help="Attributes read back from generated Shapes images vs. their captions (seen, held-out, real)",
    )
    register(
        "diversity",
        Diversity,
        config=DiversityConfig,
        help="Pixel distance within and between captions; collapse_score near 0 means mode collapse",
    )
