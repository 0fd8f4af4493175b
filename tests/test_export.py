"""Sharing a model: ``t2i export`` writes a self-contained folder with a model card, ``Sampler.from_pretrained``
loads it from that folder and from a Hugging Face cache with HF_HUB_OFFLINE=1, ``t2i push`` hands it to
huggingface_hub (its HfApi stubbed: no network here), and a missing plugin is one line naming what to install."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from t2i_test_helpers import tiny_config

from t2i import plugins
from t2i.cli import main
from t2i.config import load_toml
from t2i.errors import UsageError
from t2i.hub import export_model
from t2i.runs import Sampler, train

CAPTION = "a small red circle in the center on a black background"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-step tiny run that kept an EMA and evaluated the cheap pixel-diversity metric at the end."""
    folder = tmp_path_factory.mktemp("export") / "run"
    cfg = tiny_config(train={"steps": 2, "checkpoint_every": 0},
                      eval={"metrics": ["diversity"], "options": {"diversity": {"n_captions": 4, "per_caption": 2}}})
    assert train(cfg, folder, quiet=True, tensorboard=False).status == "finished"
    return folder


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    return export_model(run, tmp_path_factory.mktemp("export") / "model", repo_id="org/tiny")


def lay_out_in_hf_cache(folder: Path, cache: Path, repo_id: str) -> Path:
    """What huggingface_hub's download leaves in its cache: blobs named by their hash, a snapshot folder of
    links to them, and refs/main naming the snapshot's commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def error_line(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_export_is_a_self_contained_model_folder(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md", "config.toml", "eval.json", "generator_ema.safetensors", "health.json", "meta.json", "samples.png",
        "text_encoder.safetensors"]  # no discriminator, no optimiser state
    ckpt = run / "checkpoints" / "step_00000002"
    for name in ("generator_ema", "text_encoder"):
        saved, shipped = load_file(str(ckpt / f"{name}.safetensors")), load_file(str(exported / f"{name}.safetensors"))
        assert saved.keys() == shipped.keys() and all(torch.equal(saved[k], shipped[k]) for k in saved)
    assert (exported / "samples.png").read_bytes() == (run / "samples" / "step_00000002.png").read_bytes()
    assert load_toml(exported / "config.toml") == load_toml(run / "config.toml")
    export = json.loads((exported / "meta.json").read_text())["export"]
    assert export["weights"] == "generator_ema" and export["license"] == "other" and export["training_seconds"] > 0
    assert export["components"]["generator"] == {"name": "dcgan", "distribution": "t2i-dcgan", "version": "0.1.0"}
    assert export["components"]["text_encoder"]["distribution"] == "t2i-core"


def test_model_card_has_hub_metadata_and_says_what_the_model_is(exported):
    card = (exported / "README.md").read_text()
    metadata, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert card.startswith("---\n")
    for line in ("license: other", "library_name: t2i", "pipeline_tag: text-to-image", '- "t2i-generator-dcgan"'):
        assert line in metadata.splitlines()
    for text in (
        "pip install t2i-core==0.1.0 t2i-dcgan==0.1.0",  # what loading needs
        't2i sample hf://org/tiny "your caption"', 'Sampler.from_pretrained("org/tiny")',
        "| generator | dcgan | t2i-dcgan==0.1.0 |", "| text encoder | bow | t2i-core==0.1.0 |",
        "| discriminator | dcgan | t2i-dcgan==0.1.0 |", "| loss term (weight 1) | matching_aware | t2i-core==0.1.0 |",
        "data: `shapes`", "2 generator steps, batch 16", "t2i run --config config.toml",
        "![samples at step 2](samples.png)", "No licence was chosen",
        "- [error] mode_collapse (step 2, still holds at the end)",  # health.json: 2 steps make one image
        "| metric | value |\n|---|---|\n", "| diversity/collapse_score | 0.0",
        "- **diversity**\n  - n_captions: 4\n  - per_caption: 2\n",  # each metric's protocol
        "  - reference: size=64, name=shapes, split=test, seed=0\n",
    ):
        assert text in body, text


def test_from_pretrained_loads_a_local_export_like_the_run(run, exported):
    ours = Sampler.load(run, device="cpu")
    shared = Sampler.from_pretrained(exported, device="cpu")
    assert shared.weights == "generator_ema" and shared.run_dir is None
    assert torch.equal(shared.generate([CAPTION], n=3, seed=4), ours.generate([CAPTION], n=3, seed=4))


def test_from_pretrained_reads_a_snapshot_in_the_hf_cache_offline(run, exported, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    lay_out_in_hf_cache(exported, cache, "org/tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = Sampler.load(run, device="cpu").generate([CAPTION], n=2)
    for name in ("org/tiny", "hf://org/tiny"):
        sampler = Sampler.from_pretrained(name, device="cpu", cache_dir=cache)
        assert torch.equal(sampler.generate([CAPTION], n=2), expected)
    with pytest.raises(UsageError, match="org/absent is not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        Sampler.from_pretrained("org/absent", device="cpu", cache_dir=cache)
    with pytest.raises(UsageError, match="neither a folder nor a Hugging Face Hub repo id"):
        Sampler.from_pretrained("not/a/repo", cache_dir=cache)


def test_t2i_sample_hf_reads_the_hf_cache_offline(exported, tmp_path, monkeypatch, capsys):
    """``t2i sample hf://ORG/NAME`` with the cache where HF_HUB_CACHE points (huggingface_hub reads it when it is
    imported, so its constant is pointed there too) and HF_HUB_OFFLINE=1 (t2i reads it at each call)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    lay_out_in_hf_cache(exported, cache, "org/tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "images"
    assert main(["sample", "hf://org/tiny", CAPTION, "--outdir", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == str(out) and (out / "00000.png").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["models--org--tiny"]  # nothing else fetched or written


def test_a_missing_plugin_is_one_line_naming_its_distribution(exported, monkeypatch, capsys):
    monkeypatch.setenv("T2I_LOAD_PLUGINS", "")  # only the core's built-ins: t2i-dcgan is "not installed"
    plugins.reset()
    assert main(["sample", str(exported), CAPTION, "--device", "cpu"]) == 2
    line = error_line(capsys)
    assert line.startswith("t2i: error: this model's generator 'dcgan' comes from t2i-dcgan 0.1.0, which is not installed")
    assert line.endswith("pip install t2i-dcgan")


def test_export_without_ema_and_what_each_export_refuses(run, exported, tmp_path):
    raw = export_model(run, tmp_path / "raw", ema=False, license="mit")
    assert (raw / "generator.safetensors").is_file() and not (raw / "generator_ema.safetensors").exists()
    assert "license: mit" in (raw / "README.md").read_text()
    assert Sampler.load(raw, device="cpu").weights == "generator"
    with pytest.raises(UsageError, match="holds generator_ema, not generator; sample without --no-ema"):
        Sampler.load(exported, device="cpu", ema=False)
    with pytest.raises(UsageError, match="already exists and is not empty; write the model to a new folder"):
        export_model(run, raw)
    assert export_model(run, raw, replace=True) == raw and (raw / "generator_ema.safetensors").is_file()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not an exported t2i model; --overwrite only replaces a previous export"):
        export_model(run, tmp_path / "notes", replace=True)
    with pytest.raises(UsageError, match="Hub licence id"):
        export_model(run, tmp_path / "x", license="MIT License")
    with pytest.raises(UsageError, match="already an exported model folder"):
        export_model(exported, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_failed_export_leaves_no_folder(run, tmp_path, monkeypatch):
    import t2i.hub

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(t2i.hub, "model_card", broken)
    with pytest.raises(RuntimeError):
        export_model(run, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary


class StubHub:
    """huggingface_hub.HfApi's two calls that push uses, recorded instead of sent."""

    def __init__(self, monkeypatch, fail: Exception | None = None):
        from huggingface_hub import HfApi

        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            if fail is not None:
                raise fail
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(api, **kwargs):
            hub.calls.append(("upload_folder", kwargs))
            hub.uploaded = {p.name: p.read_bytes() for p in Path(kwargs["folder_path"]).iterdir()}

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_exports_then_uploads_with_huggingface_hub(run, exported, monkeypatch, capsys):
    hub = StubHub(monkeypatch)
    assert main(["push", str(run), "org/tiny", "--private"]) == 0
    assert capsys.readouterr().out.strip() == "https://huggingface.co/org/tiny"
    (create, created), (upload, uploaded) = hub.calls
    assert create == "create_repo" and created == {"repo_id": "org/tiny", "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload == "upload_folder" and uploaded["repo_id"] == "org/tiny" and uploaded["repo_type"] == "model"
    assert "generator_ema.safetensors" in hub.uploaded and 't2i sample hf://org/tiny' in hub.uploaded["README.md"].decode()
    assert not Path(uploaded["folder_path"]).exists()  # the temporary export is gone
    # an exported folder goes up as it is
    hub = StubHub(monkeypatch)
    assert main(["push", str(exported), "org/tiny"]) == 0
    assert hub.calls[1][1]["folder_path"] == str(exported) and hub.calls[0][1]["private"] is False


def test_push_failures_are_one_line(run, monkeypatch, capsys):
    from huggingface_hub.errors import LocalTokenNotFoundError

    StubHub(monkeypatch, fail=LocalTokenNotFoundError("no token"))
    assert main(["push", str(run), "org/tiny"]) == 2
    assert error_line(capsys) == "t2i: error: pushing to the Hub needs a token: set HF_TOKEN or run `hf auth login`"
    assert main(["push", str(run), "not a repo"]) == 2
    assert "is not a Hub repo id; expected ORG/NAME" in error_line(capsys)


def test_push_of_an_export_refuses_export_options(exported, monkeypatch, capsys):
    StubHub(monkeypatch)
    assert main(["push", str(exported), "org/tiny", "--license", "mit"]) == 2
    assert error_line(capsys).endswith("is already exported; --license and --no-ema apply when exporting a run")
