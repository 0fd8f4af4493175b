"""Loggers (issue 16): the hook and registry kind, choosing them (--logger, [log]), the built-in TensorBoard
logger read back from its event file, and what the engine sends every logger during a real run."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

import t2i
from t2i import plugins
from t2i.cli import main
from t2i.config import resolve
from t2i.engine.trainer import Trainer
from t2i.errors import UsageError
from t2i.loggers import Logger, check_loggers, run_params
from t2i.runs import resume_config
from t2i.testing import check_logger

from t2i_test_helpers import tiny_config


# --------------------------------------------------------------------------------------------------
# The kind, and choosing loggers


def test_loggers_are_a_kind_listed_and_described(capsys):
    assert "tensorboard" in t2i.registry("loggers").names()
    assert t2i.registry("loggers").owner("tensorboard").startswith("t2i-core")
    assert main(["list", "loggers"]) == 0
    listed = capsys.readouterr().out
    assert "tensorboard" in listed and "t2i-core" in listed
    assert main(["describe", "logger", "tensorboard"]) == 0
    assert "no options" in capsys.readouterr().out


def test_the_default_is_tensorboard_and_none_means_none():
    assert resolve().log.loggers == ["tensorboard"]
    assert check_loggers(["none"]) == [] and check_loggers([]) == []
    with pytest.raises(UsageError, match="'none' means no logger; it cannot go with tensorboard"):
        check_loggers(["none", "tensorboard"])
    with pytest.raises(UsageError, match="named twice"):
        check_loggers(["tensorboard", "tensorboard"])
    with pytest.raises(UsageError, match="options given for logger 'mlflow', which is not among the loggers used"):
        check_loggers(["tensorboard"], {"mlflow": {"experiment": "x"}})
    with pytest.raises(UsageError, match="logger 'tensorboard' takes no options"):
        check_loggers(["tensorboard"], {"tensorboard": {"x": 1}})


@pytest.mark.parametrize("args, expected", [
    (["--logger", "tensorbord"], "unknown logger 'tensorbord'; did you mean 'tensorboard'? installed: "),
    (["--logger", "none", "--logger", "tensorboard"], "'none' means no logger"),
    (["--set", "log.options.tensorboard.flush=1"], "logger 'tensorboard' takes no options"),
])
def test_a_bad_logger_is_one_line_and_exit_2_before_anything_is_written(args, expected, tmp_path, capsys):
    assert main(["run", *args, "--steps", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_run_params_flatten_the_config_into_numbers_and_text():
    params = run_params(resolve().to_dict())
    assert params["train.lr_g"] == 2e-4 and params["generator.name"] == "dcgan" and params["generator.options.ngf"] == 32
    assert params["log.loggers"] == "['tensorboard']" and params["train.betas"] == str(list(resolve().train.betas))
    assert all(isinstance(v, (bool, int, float, str)) for v in params.values())


# --------------------------------------------------------------------------------------------------
# TensorBoard, read back


def test_tensorboard_writes_scalars_grids_texts_and_the_hparams_view(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    check_logger("tensorboard", run_dir=tmp_path / "run")  # the kit's fake run of 4 steps
    (events,) = (tmp_path / "run" / "tensorboard").iterdir()  # one event file: hparams go into it too
    acc = EventAccumulator(str(events.parent), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("d/total")] == [(2, 1.5), (4, 1.25)]
    assert [e.step for e in acc.Images("samples")] == [2]
    texts = acc.Tags()["tensors"]
    assert "summary/text_summary" in texts and "health/text_summary" in texts
    health = acc.Tensors("health/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "d_wins (steps 2-4" in health
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
    assert start.hparams["train.lr_g"].number_value == pytest.approx(2e-4)
    assert start.hparams["generator.name"].string_value == "dcgan"
    assert start.hparams["status"].string_value == "finished"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"d/total", "eval/diversity/collapse_score",
                                                             "eval/diversity/within_caption"}


# --------------------------------------------------------------------------------------------------
# What the engine sends every logger


class Recorder(Logger):
    """Keeps every call it gets."""

    calls: list[tuple[str, Any]] = []

    def start(self, run_dir, params, name, *, resumed=False):
        Recorder.calls.append(("start", (Path(run_dir), dict(params), name, resumed)))

    def log_scalars(self, step, values):
        Recorder.calls.append(("log_scalars", (step, dict(values))))

    def log_image(self, step, name, path):
        Recorder.calls.append(("log_image", (step, name, Path(path))))

    def log_text(self, name, text):
        Recorder.calls.append(("log_text", (name, text)))

    def log_evaluation(self, step, values):
        Recorder.calls.append(("log_evaluation", (step, dict(values))))

    def log_verdicts(self, step, verdicts):
        Recorder.calls.append(("log_verdicts", (step, list(verdicts))))

    def finish(self, status, final):
        Recorder.calls.append(("finish", (status, dict(final))))


class Broken(Logger):
    def start(self, run_dir, params, name, *, resumed=False):
        pass

    def log_scalars(self, step, values):
        raise ConnectionError("tracking server unreachable")


@pytest.fixture
def recording_plugin():
    plugin = types.ModuleType("recording_loggers")

    def t2i_register_loggers(register):
        register("recorder", Recorder, help="keeps every call")
        register("broken", Broken, help="fails at the first record")

    plugin.t2i_register_loggers = t2i.hookimpl(t2i_register_loggers)
    plugins.register_plugin(plugin, name="recording-loggers")
    Recorder.calls = []
    try:
        yield Recorder.calls
    finally:
        plugins.unregister_plugin("recording-loggers")


def test_every_logger_gets_records_grids_evaluations_texts_verdicts_and_the_end(recording_plugin, tmp_path, capsys):
    calls = recording_plugin
    cfg = tiny_config(train={"steps": 2, "log_every": 2, "sample_every": 2, "checkpoint_every": 0},
                      eval={"metrics": ["diversity"], "options": {"diversity": {"n_captions": 4, "per_caption": 2}}},
                      log={"loggers": ["broken", "recorder", "tensorboard"]})
    run = tmp_path / "run"
    result = Trainer(cfg, run, quiet=True, tensorboard=False).fit()  # tensorboard=False: the old flag drops it
    assert result.status == "finished"
    assert not (run / "tensorboard").exists()
    # the broken logger is switched off with one warning; the run went on
    assert capsys.readouterr().err.count("t2i: warning: logger 'broken' failed in log_scalars (ConnectionError") == 1

    kinds = [kind for kind, _ in calls]
    assert kinds[0] == "start" and kinds[-1] == "finish" and kinds.count("log_verdicts") == 1
    run_dir, params, name, resumed = calls[0][1]
    assert (run_dir, name, resumed) == (run, "run", False) and params["train.steps"] == 2
    scalars = [args for kind, args in calls if kind == "log_scalars"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert scalars[0] == (2, {k: pytest.approx(v) for k, v in record.items()
                              if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})
    (image,) = [args for kind, args in calls if kind == "log_image"]
    assert image == (2, "samples", run / "samples" / "step_00000002.png")
    (evaluation,) = [args for kind, args in calls if kind == "log_evaluation"]
    assert evaluation[0] == 2 and "diversity/collapse_score" in evaluation[1]
    texts = {args[0]: args[1] for kind, args in calls if kind == "log_text"}
    assert set(texts) == {"eval.json", "health.json", "summary.md"}
    assert texts["summary.md"] == (run / "summary.md").read_text()
    (verdicts,) = [args for kind, args in calls if kind == "log_verdicts"]
    assert [v.code for v in verdicts[1]] == [v["code"] for v in json.loads((run / "health.json").read_text())]
    status, final = calls[-1][1]
    assert status == "finished"
    assert final["eval/diversity/collapse_score"] == evaluation[1]["diversity/collapse_score"]
    assert final["d/total"] == pytest.approx(record["d/total"])

    # loggers may change when the run is resumed (they do not change what is trained)
    assert resume_config(run, {"log": {"loggers": ["recorder"]}}).log.loggers == ["recorder"]
