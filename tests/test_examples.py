"""Every shipped example config loads and trains (shrunk to a few tiny steps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i.engine.trainer import Trainer
from t2i.runs import configure

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("*.toml"))
SHRINK = {
    "data": {"resolution": 32, "options": {"train_size": 128, "test_size": 32}},
    "train": {"batch_size": 16, "steps": 2, "epochs": None, "minutes": None, "checkpoint_every": 0, "sample_every": 0, "device": "cpu"},
    "eval": {"metrics": []},
}


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_config_trains(path, tmp_path):
    cfg = configure(path, SHRINK)
    for section in ("generator", "discriminator"):
        options = getattr(cfg, section).options
        for key in ("ngf", "ndf"):
            if key in options:
                options[key] = 8
    result = Trainer(cfg, tmp_path / "run", quiet=True, tensorboard=False).fit()
    assert result.status == "finished" and result.step == 2
