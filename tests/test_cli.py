"""The CLI end to end, in real subprocesses: run, resume, config round trip, sample, errors, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from t2i_test_helpers import TINY_FLAGS, run_cli

pytestmark = pytest.mark.slow


def final_weights(run_dir):
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"))
    return load_file(str(ckpts[-1] / "generator.safetensors")), ckpts[-1].name


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("run", *TINY_FLAGS, "--steps", "4", "--checkpoint-every", "2", "--out", str(run), "--quiet",
                   "--set", 'eval.metrics=["diversity"]', "--set", "eval.options.diversity.n_captions=4")
    assert proc.returncode == 0, proc.stderr
    return run, proc


def test_run_ends_with_evaluation_health_run_folder_and_sample_grid(trained_run):
    run, proc = trained_run
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "evaluation at step 4 (protocol in eval.json):"
    assert lines[1].startswith("| metric | value |") and "| diversity/collapse_score | " in proc.stdout
    at = lines.index(f"run folder: {run}")
    assert lines[at - 1] in ("health: no problems detected", ) or lines[at - 1].startswith("health: 1 verdict")
    assert lines[at + 1] == f"sample grid: {run / 'samples' / 'step_00000004.png'}"
    grid = Image.open(run / "samples" / "step_00000004.png")
    assert grid.width >= 8 * 64  # 8 noise columns, 32-px samples shown at >= 64 px
    assert "step 4/4" in proc.stderr  # --quiet: log lines, no progress bar


def test_health_line_names_each_verdict(tmp_path):
    from t2i.cli.app import health_line

    path = tmp_path / "health.json"
    assert health_line(path) == "health: not recorded"
    path.write_text("[]")
    assert health_line(path) == "health: no problems detected"
    path.write_text('[{"code": "d_wins", "severity": "warning", "cleared_at": null},'
                    ' {"code": "mode_collapse", "severity": "error", "cleared_at": 300}]')
    assert health_line(path) == "health: 2 verdicts: d_wins (warning), mode_collapse (error, cleared) (see summary.md)"


def test_saved_config_reproduces_the_run(trained_run, tmp_path):
    run, _ = trained_run
    proc = run_cli("run", "--config", str(run / "config.toml"), "--out", str(tmp_path / "again"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    a, _ = final_weights(run)
    b, _ = final_weights(tmp_path / "again")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_and_refuses_changed_parameters(trained_run, tmp_path):
    run, _ = trained_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    changed = run_cli("run", "--resume", str(copy), "--lr-g", "0.1")
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith(f"t2i: error: cannot resume {copy} with a different train.lr_g")
    more = run_cli("run", "--resume", str(copy), "--steps", "6", "--quiet")
    assert more.returncode == 0, more.stderr
    _, name = final_weights(copy)
    assert name == "step_00000006"


def test_sample_from_run_and_checkpoint(trained_run, tmp_path):
    run, _ = trained_run
    out = tmp_path / "grid.png"
    proc = run_cli("sample", str(run), "a small red circle in the center on a black background", "-n", "4", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    image = Image.open(out)
    assert image.width >= 2 * 64 and image.height > 2 * 64  # 2x2 grid under a title band
    ckpt = sorted((run / "checkpoints").glob("step_*"))[0]
    proc = run_cli("sample", str(ckpt), "a caption", "another caption", "-n", "2", "--no-ema")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("samples/sample-a-caption.png")


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--generator", "dcgn"], "unknown generator 'dcgn'; did you mean 'dcgan'? installed: attngan, dcgan"),
        (["run", "--generator", "noep"], "unknown generator 'noep'; installed: attngan, dcgan"),
        (["run", "-G", "ngf=wide"], "generator 'dcgan': ngf: expected int, got 'wide'"),
        (["run", "-G", "ngff=3"], "generator 'dcgan': unknown key 'ngff'; did you mean 'ngf'?"),
        (["run", "--set", "trian.steps=3"], "unknown key 'trian'; did you mean 'train'?"),
        (["run", "--set", "train.lr_g=fast"], "train.lr_g: expected float, got 'fast'"),
        (["run", "--config", "missing.toml"], "config file not found: missing.toml"),
        (["run", "--resume", "not-a-run"], "not-a-run is not a t2i run folder"),
        (["run", "--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
        (["run", "-r", "48"], "supports resolutions 32, 64, 128, not 48"),
        (["sample", "nowhere", "a caption"], "nowhere does not exist"),
        (["describe", "generator", "sagn"], "unknown generator 'sagn'"),
        (["list", "gizmos"], "unknown component kind 'gizmos'"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_bad_toml_value_names_the_key(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text("[train]\nbatch_size = 'big'\n")
    proc = run_cli("run", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2 and "train.batch_size: expected int, got 'big'" in proc.stderr


def test_help_lists_installed_components_in_panels():
    proc = run_cli("run", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    assert "Components" in proc.stdout and "Training" in proc.stdout
    import re

    for kind, name in (("generator", "dcgan"), ("text encoder", "bow"), ("data set", "shapes")):
        installed = re.search(rf"{kind}[^(]*\(installed: ([^)]*)\)", " ".join(proc.stdout.split()))
        assert installed and name in installed.group(1).replace(" ", "").split(","), kind
    described = run_cli("describe", "discriminator", "dcgan", env={"COLUMNS": "200"})
    assert described.returncode == 0 and "spectral_norm" in described.stdout and "bool" in described.stdout


def test_run_flags_are_generated_from_the_config_dataclasses():
    from t2i.cli.flags import config_flags

    flags = {flag.names[0]: flag for flag in config_flags()}
    assert {"--resolution", "--batch-size", "--lr-g", "--lr-d", "--d-steps", "--grad-clip", "--schedule", "--precision",
            "--ema", "--ema-kimg", "--seed", "--device", "--steps", "--epochs", "--minutes", "--log-every", "--sample-every",
            "--checkpoint-every", "--channels-last", "--micro-batch"} == set(flags)
    assert flags["--lr-g"].key == "train.lr_g" and flags["--resolution"].names == ("--resolution", "-r")
    assert "cosine_restarts" in flags["--schedule"].help  # a Literal's choices are listed
    shown = run_cli("run", "--help", env={"COLUMNS": "250"})
    text = " ".join(shown.stdout.split())
    for name, flag in flags.items():
        assert name in text and " ".join(flag.help.split()[:3]) in text, name


@dataclass
class Schedule:
    warmup: int = field(default=0, metadata={"help": "warm-up steps", "flag": ("--warmup", "-w")})
    fast: bool = field(default=False, metadata={"help": "go fast", "flag": "--fast"})
    hidden: int = field(default=0, metadata={"help": "no flag: set it with --set"})


@dataclass
class Root:
    schedule: Schedule = field(default_factory=Schedule)


def test_a_config_field_with_a_flag_becomes_a_run_option():
    import typer
    from typer.testing import CliRunner

    from t2i.cli.flags import given_config_values, with_config_flags

    seen = {}

    def command(**config_values):
        seen.update(given_config_values(config_values))

    app = typer.Typer()
    app.command()(with_config_flags(command, root=Root))
    result = CliRunner().invoke(app, ["-w", "5", "--fast"])
    assert result.exit_code == 0, result.output
    assert seen == {"schedule.warmup": 5, "schedule.fast": True}
    assert CliRunner().invoke(app, ["--hidden", "1"]).exit_code == 2


def test_a_component_picked_on_the_command_line_drops_the_config_files_options_for_the_old_one(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text("[generator.options]\nngf = 8\n")  # options for the default generator, dcgan
    out = tmp_path / "run"
    tiny = ["-d", "train_size=64", "-d", "test_size=16", "-D", "ndf=8", "-T", "dim=16", "--batch-size", "8",
            "--device", "cpu", "--sample-every", "0", "--checkpoint-every", "0", "--set", "eval.metrics="]
    proc = run_cli("run", "--config", str(cfg), *tiny, "--generator", "sagan", "-G", "ch=8", "--steps", "1",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "ngf" not in (out / "config.toml").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "t2i", "run", *TINY_FLAGS, "--steps", "100000", "--checkpoint-every", "0",
           "--log-every", "1", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "checkpoint saved" in stderr
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1
    step = int(ckpts[0].name.split("_")[1])
    assert step >= 3
    resumed = run_cli("run", "--resume", str(run), "--steps", str(step + 2), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted((run / "checkpoints").glob("step_*"))[-1].name == f"step_{step + 2:08d}"
