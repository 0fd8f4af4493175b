"""A tiny trained run (with sample grids, an evaluation and health verdicts) and its export, made once for the
demo's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from t2i_test_helpers import tiny_config  # noqa: E402  (the repository's tiny experiment configs)


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """4 steps at 32 px: grids at steps 2 and 4, the cheap pixel-diversity metric at the end."""
    from t2i.runs import train

    folder = tmp_path_factory.mktemp("demo") / "run"
    cfg = tiny_config(train={"steps": 4, "checkpoint_every": 0, "sample_every": 2},
                      eval={"metrics": ["diversity"], "options": {"diversity": {"n_captions": 4, "per_caption": 2}}})
    assert train(cfg, folder, quiet=True, tensorboard=False).status == "finished"
    return folder


@pytest.fixture(scope="session")
def exported(run, tmp_path_factory) -> Path:
    from t2i.hub import export_model

    return export_model(run, tmp_path_factory.mktemp("demo") / "model", repo_id="org/tiny")
