"""t2i-wandb in offline mode, read back from the run's own ``.wandb`` file: a tiny training run with
``--logger wandb`` and the conformance kit's fake run.

wandb offers no public reader of offline runs (its Python DataStore moved into the Go core), so
:func:`records` reads the file's documented framing: a 7-byte header (``:W&B``, magic, version), then
LevelDB-log blocks of 32 KiB whose records (7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST) carry
``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

import pytest

from t2i.cli import main
from t2i.testing import check_logger

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

TINY = ["-d", "train_size=64", "-d", "test_size=32", "-G", "ngf=8", "-D", "ndf=8", "-T", "dim=16", "--batch-size", "8",
        "--steps", "4", "--log-every", "2", "--sample-every", "2", "--checkpoint-every", "0", "--device", "cpu",
        "--precision", "fp32", "--quiet", "--set", 'eval.metrics=["diversity"]',
        "--set", "eval.options.diversity.n_captions=4", "--set", "eval.options.diversity.per_caption=2"]

_BLOCK, _HEADER = 32768, 7


def records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    pos, chunk = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0:
            break
        chunk += data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def read_run(folder: Path) -> dict[str, Any]:
    """The config, history rows (by step) and summary of the one offline run under ``folder``."""
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    config: dict[str, Any] = {}
    history: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] = {}

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {key(i): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(int(row["_step"]), {}).update(row)
        elif kind == "summary":
            summary.update({key(i): json.loads(i.value_json) for i in record.summary.update if key(i)})
    config = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in config.items()}
    return {"config": config, "history": history, "summary": summary, "files": path.parent / "files"}


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "wandb-dir"


@pytest.mark.slow
def test_a_training_run_reads_back_from_the_offline_run_file(offline, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "tiny"
    assert main(["run", *TINY, "--logger", "wandb", "--logger", "tensorboard", "--out", str(run_dir)]) == 0, \
        capsys.readouterr().err
    got = read_run(offline)  # WANDB_DIR is honoured
    assert got["config"]["train.batch_size"] == 8 and got["config"]["generator.name"] == "dcgan"
    assert got["config"]["log.loggers"] == "['wandb', 'tensorboard']"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {s: r["d/total"] for s, r in got["history"].items() if "d/total" in r} == \
        {x["step"]: pytest.approx(x["d/total"]) for x in lines if "d/total" in x}
    assert sorted(s for s, r in got["history"].items() if r.get("samples/_type") == "image-file") == [2, 4]
    assert got["history"][4]["evaluation/_type"] == "table-file" and got["history"][4]["evaluation/nrows"] >= 4
    collapse = next(x["eval/diversity/collapse_score"] for x in lines if "eval/diversity/collapse_score" in x)
    assert got["history"][4]["eval/diversity/collapse_score"] == pytest.approx(collapse)
    codes = sorted({v["code"] for v in json.loads((run_dir / "health.json").read_text())})
    assert got["summary"]["health"] == (",".join(codes) or "ok") and got["summary"]["status"] == "finished"
    assert got["summary"]["final/eval/diversity/collapse_score"] == pytest.approx(collapse)
    assert (got["files"] / "summary.md").read_text() == (run_dir / "summary.md").read_text()
    assert (run_dir / "wandb-run-id").read_text().strip() in str(got["files"])
    assert list((run_dir / "tensorboard").iterdir())  # both loggers


def test_the_kit_run_offline_with_verdicts(offline, tmp_path):
    check_logger("wandb", {"project": "kit"}, run_dir=tmp_path / "runs" / "fake")
    got = read_run(offline)
    assert got["summary"]["health"] == "d_wins"
    assert got["summary"]["health/d_wins"].startswith("[warning] d_wins (steps 2-4")
    assert got["summary"]["health_verdicts"]["_type"] == "table-file"
    assert got["history"][4]["d/total"] == 1.25 and got["config"]["train.betas"] == "[0.5, 0.999]"
    assert json.loads((got["files"] / "eval.json").read_text()) == {"4": {"diversity/collapse_score": 0.25}}
