"""The core's metrics, registered through the same hook as any plugin's.

Factories and configs are named by reference (``"module:Name"``) so that listing them imports nothing heavy.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_metrics(register):
    register(
        "shapes_accuracy",
        "t2i.metrics.shapes_accuracy:ShapesAccuracy",
        config="t2i.metrics.shapes_accuracy:ShapesAccuracyConfig",
        help="Attributes read back from generated Shapes images vs. their captions (seen, held-out, real)",
    )
    register(
        "diversity",
        "t2i.metrics.diversity:Diversity",
        config="t2i.metrics.diversity:DiversityConfig",
        help="Pixel distance within and between captions; collapse_score near 0 means mode collapse",
    )
    register(
        "fid",
        "t2i.metrics.inception_metrics:FID",
        config="t2i.metrics.inception_metrics:InceptionMetricConfig",
        help="Frechet Inception Distance (TF-compatible Inception of torch-fidelity; lower is better)",
    )
    register(
        "kid",
        "t2i.metrics.inception_metrics:KID",
        config="t2i.metrics.inception_metrics:KIDConfig",
        help="Kernel Inception Distance: unbiased MMD^2, cubic kernel, 100 seeded subsets (lower is better)",
    )
    register(
        "is",
        "t2i.metrics.inception_metrics:InceptionScore",
        config="t2i.metrics.inception_metrics:ISConfig",
        help="Inception Score: 10 splits, seeded shuffle, checked to lie in [1, 1008] (higher is better)",
    )
    register(
        "prc",
        "t2i.metrics.prc:PrecisionRecall",
        config="t2i.metrics.prc:PrecisionRecallConfig",
        help="Improved precision (realism) and recall (coverage), k = 3 (Kynkaanniemi et al. 2019)",
    )
    register(
        "fd_dinov2",
        "t2i.metrics.fd_dinov2:FrechetDino",
        config="t2i.metrics.fd_dinov2:FrechetDinoConfig",
        help="Frechet distance in DINOv2 ViT-L/14 features, or any timm model's (lower is better)",
    )
    register(
        "clip_score",
        "t2i.metrics.clip_score:ClipScore",
        config="t2i.metrics.clip_score:ClipScoreConfig",
        help="CLIP score: mean of 100 * max(cos(image, caption), 0) (open-clip; real-image figure too)",
    )
    register(
        "r_precision",
        "t2i.metrics.r_precision:RPrecision",
        config="t2i.metrics.r_precision:RPrecisionConfig",
        help="Caption retrieval among 1 + 99 (evaluator trained by t2i, or CLIP); real-image ceiling too",
    )
