"""The core's metrics, registered through the same hook as any plugin's."""

from __future__ import annotations

from t2i.hookspecs import hookimpl
from t2i.metrics.diversity import Diversity, DiversityConfig
from t2i.metrics.inception_metrics import FID, KID, InceptionMetricConfig, InceptionScore, ISConfig, KIDConfig
from t2i.metrics.shapes_accuracy import ShapesAccuracy, ShapesAccuracyConfig
from t2i.metrics.prc import PrecisionRecall, PrecisionRecallConfig
from t2i.metrics.fd_dinov2 import FrechetDino, FrechetDinoConfig
from t2i.metrics.clip_score import ClipScore, ClipScoreConfig
from t2i.metrics.r_precision import RPrecision, RPrecisionConfig


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
    register(
        "fid",
        FID,
        config=InceptionMetricConfig,
        help="Frechet Inception Distance (TF-compatible Inception of torch-fidelity; lower is better)",
    )
    register(
        "kid",
        KID,
        config=KIDConfig,
        help="Kernel Inception Distance: unbiased MMD^2, cubic kernel, 100 seeded subsets (lower is better)",
    )
    register(
        "is",
        InceptionScore,
        config=ISConfig,
        help="Inception Score: 10 splits, seeded shuffle, checked to lie in [1, 1008] (higher is better)",
    )
    register(
        "prc",
        PrecisionRecall,
        config=PrecisionRecallConfig,
        help="Improved precision (realism) and recall (coverage), k = 3 (Kynkaanniemi et al. 2019)",
    )
    register(
        "fd_dinov2",
        FrechetDino,
        config=FrechetDinoConfig,
        help="Frechet distance in DINOv2 ViT-L/14 features, or any timm model's (lower is better)",
    )
    register(
        "clip_score",
        ClipScore,
        config=ClipScoreConfig,
        help="CLIP score: mean of 100 * max(cos(image, caption), 0) (open-clip; real-image figure too)",
    )
    register(
        "r_precision",
        RPrecision,
        config=RPrecisionConfig,
        help="Caption retrieval among 1 + 99 (evaluator trained by t2i, or CLIP); real-image ceiling too",
    )
