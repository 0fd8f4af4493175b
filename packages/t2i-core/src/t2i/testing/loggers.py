"""The conformance check of loggers: a logger takes a whole (fake) run's calls, in the engine's order."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ..loggers import Logger, run_params
from ._common import Report, _build, _config, _start

__all__ = ["check_logger", "fake_run"]


def fake_run(logger: Logger, run_dir: Path) -> None:
    """Every call the engine makes on a logger during a run of 4 steps, with realistic values: two records,
    a sample grid, an evaluation, the run folder's texts, one health verdict, and ``finish``."""
    from ..engine.verdicts import Verdict

    run_dir.mkdir(parents=True, exist_ok=True)
    grid = run_dir / "samples" / "step_00000002.png"
    grid.parent.mkdir(exist_ok=True)
    Image.new("RGB", (34, 34), (200, 30, 30)).save(grid)
    params = run_params({"generator": {"name": "dcgan", "options": {"ngf": 8}}, "train": {"lr_g": 2e-4, "steps": 4,
                         "betas": [0.5, 0.999], "ema": None}, "eval": {"metrics": ["diversity"], "options": {}}})
    evaluation = {"diversity/collapse_score": 0.25, "diversity/within_caption": 0.5}
    verdict = Verdict("d_wins", "warning", 2, 4, "D separates real from fake too easily", {"d/real_logit": 3.0},
                      "lower lr_d", key="d/real_logit")
    logger.start(run_dir, params, run_dir.name, resumed=False)
    logger.log_scalars(2, {"d/total": 1.5, "g/total": 0.75, "lr/g": 2e-4})
    logger.log_image(2, "samples", grid)
    logger.log_scalars(4, {"d/total": 1.25, "g/total": 0.5, "lr/g": 2e-4})
    logger.log_scalars(4, {f"eval/{k}": v for k, v in evaluation.items()})
    logger.log_evaluation(4, evaluation)
    logger.log_text("eval.json", '{"4": {"diversity/collapse_score": 0.25}}\n')
    logger.log_text("health.json", "[]\n")
    logger.log_verdicts(4, [verdict])
    logger.log_text("summary.md", "# run\n\n| metric | value |\n|---|---|\n| d/total | 1.25 |\n")
    logger.finish("finished", {"d/total": 1.25, **{f"eval/{k}": v for k, v in evaluation.items()}})


def check_logger(name: str, options: Mapping[str, Any] | None = None, *, run_dir: str | Path | None = None) -> Report:
    """Check registered logger ``name``: it builds from its (test) options into a :class:`~t2i.loggers.Logger`
    and takes a whole run's calls (:func:`fake_run`) in ``run_dir`` (default: a temporary folder) without
    raising. Read back what the tracker stored in your own test: only the logger's author knows how."""
    report = _start("loggers", name)
    cfg = _config("loggers", name, options)
    logger: Logger | None = None
    with report.check("builds"):
        logger = _build("loggers", name, cfg, 0, Logger)
    if logger is not None:
        with report.check("takes a whole run's calls"), tempfile.TemporaryDirectory() as tmp:
            fake_run(logger, Path(run_dir) if run_dir is not None else Path(tmp) / "run")
    report.raise_for_failures()
    return report
