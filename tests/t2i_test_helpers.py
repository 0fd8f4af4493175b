"""Helpers shared by the tests: tiny experiment configs that train in a second or two on CPU, and a CLI runner.

(A module of its own rather than conftest.py, so that tests anywhere in the repository can import it
without clashing with the repository-level conftest.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from t2i.config import ExperimentConfig, merge, resolve

# A few steps of the default recipe, shrunk: 32 px, 8-channel networks, a 256-image train split; fp32, so
# that the figures tests compare do not depend on whether this CPU has fast bf16 (precision "auto").
TINY: dict[str, Any] = {
    "data": {"resolution": 32, "options": {"train_size": 256, "test_size": 64}},
    "generator": {"options": {"ngf": 8}},
    "discriminator": {"options": {"ndf": 8}},
    "text_encoder": {"options": {"dim": 16}},
    "train": {"batch_size": 16, "steps": 6, "log_every": 2, "sample_every": 0, "checkpoint_every": 3, "device": "cpu", "ema": 0.999,
              "precision": "fp32"},
    "eval": {"metrics": []},  # tests that evaluate ask for it
}

TINY_FLAGS = [
    "-d", "train_size=256", "-d", "test_size=64", "-G", "ngf=8", "-D", "ndf=8", "-T", "dim=16",
    "--batch-size", "16", "--log-every", "2", "--sample-every", "0", "--device", "cpu", "--precision", "fp32", "--set", "eval.metrics=",
]


def tiny_config(**overrides: Any) -> ExperimentConfig:
    return resolve(merge(TINY, overrides))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m t2i ARGS`` in a subprocess (a real process: exit codes, stderr, signals)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "t2i", *args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd
    )
