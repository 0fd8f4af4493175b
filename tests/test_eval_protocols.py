"""Evaluation presets (``t2i eval --protocol NAME``): every registered preset is complete and in the README's
table, explicit flags that contradict a preset are refused in one line, required files are named, and the
JSON block a preset writes is the same on every run with the same inputs.

FID runs end to end through the CLI on six 32 px Shapes renders, with a stand-in for the Inception network (a
fixed random projection of the pixels, :class:`FakeInception`): the preset, the statistics file and the JSON are
what is tested here; the network and its resize modes are tested against their reference implementations in
test_metrics_inception.py and test_metrics_modes.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.cli import main
from t2i.errors import UsageError
from t2i.metrics.protocols import (
    PRESETS, Needs, Protocol, apply_protocol, get_protocol, markdown_table, protocol_names,
)  # fmt: skip
from t2i.plugins import registry

ROOT = Path(__file__).resolve().parents[1]
DIM = 64  # features of FakeInception


class FakeInception:
    """What FID needs from an extractor, in microseconds: 64 "pool3" features (not 2,048: the Frechet distance of
    2,048-d Gaussians alone takes seconds) from a seeded projection of 8x8 average-pooled pixels."""

    name = "fake-inception"
    weights_sha256 = "0" * 64

    def __init__(self, mode: str = "legacy_tensorflow", **_: object):
        self.mode = mode
        self.dims = {"pool3": DIM}
        self.projection = torch.randn(3 * 8 * 8, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.nn.functional.adaptive_avg_pool2d(images.permute(0, 3, 1, 2).double() / 255, 8)
        return {"pool3": (x.flatten(1) @ self.projection).float()}

    def protocol(self) -> dict[str, object]:
        return {"extractor": self.name, "weights_sha256": self.weights_sha256, "mode": self.mode, "resize": "8x8 average"}

    def cache_key(self) -> dict[str, object]:
        return {"name": self.name, "mode": self.mode}


@pytest.fixture
def fake_inception(monkeypatch, tmp_path):
    """FID's network replaced by :class:`FakeInception`; the library versions it records then do not include
    torch-fidelity's (importing it alone takes seconds, and the stand-in is not torch-fidelity's network)."""
    import t2i.metrics.compare as compare
    import t2i.metrics.inception_metrics as im

    monkeypatch.setattr(im, "make_extractor", lambda name, **opts: FakeInception(**opts))
    monkeypatch.setattr(im, "_versions", lambda: {"torch": torch.__version__})
    monkeypatch.setattr(compare, "_library_versions", lambda: {"torch": torch.__version__})
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six Shapes renders (PNG, 32 px) and a foreign pytorch-fid-style statistics file (mu, sigma only) of
    :class:`FakeInception`'s size."""
    reg = registry("datasets")
    data = reg.create("shapes", reg.make_config("shapes", {"train_size": 16, "test_size": 6})).load("test", 32)
    root = tmp_path_factory.mktemp("samples")
    for i, im in enumerate(data.images):
        Image.fromarray(im.numpy()).save(root / f"{i:03d}.png")
    stats = root.parent / "bird_val256_FIDK0.npz"
    rng = np.random.default_rng(0)
    np.savez(stats, mu=rng.normal(size=DIM), sigma=np.eye(DIM))
    return root, stats


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the registry ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", protocol_names())
def test_every_preset_says_what_it_reproduces_and_maps_to_installed_metrics(name):
    preset = get_protocol(name)
    for text in (preset.paper, preset.reproduces, preset.images_rule, preset.statistics, preset.extractor, preset.resize):
        assert text.strip(), name
    assert "/" in preset.source and ("." in preset.source), "source cites the authors' files"
    metrics = registry("metrics")
    for metric in preset.metrics:
        assert metric in metrics
    json.dumps(preset.describe())  # JSON-able
    options = preset.options(generator=True)
    assert set(options) <= set(preset.metrics) and all(isinstance(v, str) for o in options.values() for v in o.values())
    assert preset.options(generator=False).keys() <= options.keys()


@pytest.mark.parametrize("name", protocol_names())
@pytest.mark.parametrize("generator", [True, False], ids=["generator", "folder"])
def test_every_preset_applies_to_the_installed_metrics_once_its_files_are_given(name, generator, tmp_path):
    """Every setting is an option of the installed metric, of the right type, and the configs build: a preset that
    names an option a metric renamed or dropped fails here, not in a user's evaluation."""
    preset = get_protocol(name)
    options: dict[str, dict[str, str]] = {}
    for i, need in enumerate(preset.needs):
        (tmp_path / f"file{i}").write_bytes(b"")
        options.setdefault(need.metric, {})[need.key] = str(tmp_path / f"file{i}")
    applied = apply_protocol(preset, options=options, generator=generator)
    assert applied.metrics == list(preset.metrics) and set(applied.supplied) == {n.option for n in preset.needs}
    for metric, settings in preset.options(generator=generator).items():
        assert settings.items() <= applied.options[metric].items()
    json.dumps(applied.block())


def test_the_readme_metrics_section_holds_the_generated_preset_table():
    readme = (ROOT / "README.md").read_text()
    table = markdown_table()
    assert table in readme, "README.md's preset table is stale: paste t2i.metrics.protocols.markdown_table()"
    for name in protocol_names():
        assert f"| `{name}` |" in readme


def test_dfgan_cub_is_pytorch_fid_resize_29330_images_and_the_released_statistics():
    preset = get_protocol("dfgan-cub")
    assert preset.options(generator=True) == {"fid": {"mode": "legacy_pytorch", "n_generated": "29330"}}
    assert preset.options(generator=False) == {"fid": {"mode": "legacy_pytorch"}}
    assert [n.option for n in preset.needs] == ["fid.reference_stats"] and "bird_val256_FIDK0.npz" in preset.needs[0].what
    assert "code/cfg/bird.yml" in preset.source and "sample_times: 10" in preset.source


def test_an_unknown_preset_is_one_line_with_did_you_mean(capsys, folder):
    with pytest.raises(UsageError, match=r"unknown protocol 'dfgan-cb'; did you mean 'dfgan-cub'\? presets: "):
        get_protocol("dfgan-cb")
    code, _, err = _cli(capsys, "eval", str(folder[0]), "--protocol", "atngan-cub")
    assert code == 2 and "did you mean 'attngan-cub'?" in err and len(err.strip().splitlines()) == 1


def test_list_protocols_prints_every_preset_with_what_it_needs(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = _cli(capsys, "eval", "--list-protocols")
    assert code == 0
    for name in protocol_names():
        assert name in out
    assert "statistics" in out and "extractor" in out and "you supply -M fid.reference_stats=FILE" in out


# -- applying a preset -------------------------------------------------------------------------------
def test_explicit_flags_that_contradict_a_preset_are_refused_and_agreeing_ones_accepted(tmp_path):
    preset = get_protocol("dfgan-cub")
    stats = tmp_path / "s.npz"
    stats.write_bytes(b"x")
    given = {"fid": {"reference_stats": str(stats)}}
    with pytest.raises(UsageError, match=r"-M fid.mode=clean conflicts with protocol dfgan-cub \(fid.mode=legacy_pytorch\)"):
        apply_protocol(preset, options={"fid": {**given["fid"], "mode": "clean"}})
    with pytest.raises(UsageError, match="protocol dfgan-cub computes fid, not kid"):
        apply_protocol(preset, metrics=["kid"], options=given)
    with pytest.raises(UsageError, match="--split train conflicts with protocol dfgan-cub"):
        apply_protocol(preset, options=given, split="train")
    same = apply_protocol(preset, options={"fid": {**given["fid"], "n_generated": "29_330", "device": "cpu"}})
    assert same.options["fid"] == {"reference_stats": str(stats), "n_generated": "29330", "device": "cpu", "mode": "legacy_pytorch"}
    assert same.split == "test" and same.metrics == ["fid"]


def test_a_required_file_is_named_when_missing(tmp_path):
    preset = get_protocol("dfgan-cub")
    with pytest.raises(UsageError, match=r"needs DF-GAN's CUB statistics bird_val256_FIDK0.npz .*: pass -M fid.reference_stats=FILE"):
        apply_protocol(preset)
    with pytest.raises(UsageError, match="is not a file"):
        apply_protocol(preset, options={"fid": {"reference_stats": str(tmp_path / "absent.npz")}})


def test_a_setting_the_installed_metric_cannot_take_is_refused(monkeypatch):
    future = Protocol(name="future", paper="Someone (2030)", reproduces="x", images=10, images_rule="x", statistics="x",
                      extractor="x", resize="x", metrics=("fid",), settings=(("fid.mode", "legacy_pytorch"),),
                      needs=(Needs("fid.classifier_file", "their classifier"),), source="a/b: c.py")  # fmt: skip
    monkeypatch.setitem(PRESETS, "future", future)
    with pytest.raises(UsageError, match=r"protocol future needs fid.classifier_file, which this t2i's 'fid' metric does not have yet"):
        apply_protocol(get_protocol("future"))
    bad = Protocol(name="bad", paper="p", reproduces="x", images=10, images_rule="x", statistics="x", extractor="x",
                   resize="x", metrics=("fid",), settings=(("fid.mode", "bicubic_2030"),), source="a/b: c.py")  # fmt: skip
    with pytest.raises(UsageError, match="protocol bad: fid cannot be configured this way: unknown Inception mode 'bicubic_2030'"):
        apply_protocol(bad)
    worse = dataclasses.replace(bad, name="worse", settings=(("fid.n_generated", "many"),))
    with pytest.raises(UsageError, match=r"protocol worse sets fid.n_generated=many, which this t2i's 'fid' metric does not support yet"):
        apply_protocol(worse)


def test_the_preset_block_is_identical_on_every_run_with_the_same_inputs(capsys, folder, fake_inception):
    images, stats = folder
    reports = []
    for _ in range(2):
        code, out, err = _cli(capsys, "eval", str(images), "--protocol", "dfgan-cub", "--reference", str(stats),
                              "--device", "cpu", "-M", "fid.batch_size=6", "--json", "-")  # fmt: skip
        assert code == 0, err
        assert "note: protocol dfgan-cub scores 29,330 images" in err and "this folder has 6" in err
        reports.append(json.loads(out))
    first, second = reports
    assert first["preset"] == second["preset"] and first["values"] == second["values"]
    block = first["preset"]
    assert block["name"] == "dfgan-cub" and block["evaluated"] == "image folder" and block["images"] == 29330
    assert block["settings"] == {"fid": {"mode": "legacy_pytorch"}}  # no sample count: the folder is what it is
    assert block["supplied"]["fid.reference_stats"]["file"] == str(stats) and len(block["supplied"]["fid.reference_stats"]["sha256"]) == 64
    assert first["protocol"]["fid"]["preset"] == "dfgan-cub" and first["protocol"]["fid"]["mode"] == "legacy_pytorch"

    code, _, err = _cli(capsys, "eval", str(images), "--protocol", "dfgan-cub", "--reference", str(stats), "-M", "fid.mode=clean")
    assert code == 2 and "conflicts with protocol dfgan-cub" in err and "Traceback" not in err
