"""``t2i sample`` as people script it: captions from a file, a folder of PNGs with a captions.jsonl that
``t2i eval FOLDER --captions`` reads, per-image seeds that redraw an image, batch sizes that change nothing,
truncation only where a generator declares it, interpolation GIFs, and the grid it always wrote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from t2i_test_helpers import tiny_config

from t2i.cli import main
from t2i.engine.grid import to_uint8
from t2i.errors import UsageError
from t2i.interfaces import Generator
from t2i.metrics.image_sets import folder_captions
from t2i.runs import Sampler, train

RED = "a small red circle in the center on a black background"
BLUE = "a large blue cross at the bottom of a gray picture"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample") / "run"
    assert train(tiny_config(train={"steps": 1, "checkpoint_every": 0}), folder, quiet=True, tensorboard=False).status == "finished"
    return folder


def sample(capsys, *args: str) -> tuple[int, str, list[str]]:
    """``t2i sample ARGS --device cpu`` in this process: exit code, stdout, the non-blank stderr lines."""
    code = main(["sample", *args, "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out.strip(), [x for x in captured.err.splitlines() if x.strip()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_outdir_writes_one_png_per_image_and_the_captions_jsonl_eval_reads(run, tmp_path, capsys):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"caption": RED}) + "\n\n" + json.dumps({"caption": BLUE, "id": 7}) + "\n")
    out = tmp_path / "images"
    code, stdout, _ = sample(capsys, str(run), "--captions-file", str(captions), "--outdir", str(out), "--per-caption", "3",
                             "--seed", "5", "--batch-size", "4")
    assert code == 0 and stdout == str(out)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(6)] + ["captions.jsonl"]
    records = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert [(r["image"], r["caption"], r["seed"]) for r in records] == [
        (f"{j:05d}.png", RED if j < 3 else BLUE, 5 + j) for j in range(6)]
    assert folder_captions(out, out / "captions.jsonl") == [RED] * 3 + [BLUE] * 3  # t2i eval FOLDER --captions
    # the seed recorded with an image draws it again, alone
    again = to_uint8(Sampler.load(run, device="cpu").generate([BLUE], n=1, seed=records[4]["seed"]))[0].numpy()
    assert np.array_equal(pixels(out / "00004.png"), again)
    # a text file of captions and another batch size give the same images
    text = tmp_path / "captions.txt"
    text.write_text(f"{RED}\n\n{BLUE}\n")
    code, _, _ = sample(capsys, str(run), "--captions-file", str(text), "--outdir", str(tmp_path / "b1"), "-n", "3",
                        "--seed", "5", "--batch-size", "1")
    assert code == 0
    for j in range(6):
        assert np.array_equal(pixels(out / f"{j:05d}.png"), pixels(tmp_path / "b1" / f"{j:05d}.png"))


def test_write_images_reports_each_batch(run, tmp_path):
    seen = []
    Sampler.load(run, device="cpu").write_images(tmp_path / "out", [RED, BLUE], n=3, batch_size=4,
                                                 on_batch=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 6), (6, 6)]


def test_the_grid_is_written_as_before(run, tmp_path, capsys):
    code, stdout, _ = sample(capsys, str(run), RED, "-n", "4", "-o", str(tmp_path / "grid.png"))
    assert code == 0 and stdout == str(tmp_path / "grid.png")
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width >= 2 * 64 and grid.height > 2 * 64  # 2x2 under a title band
    code, stdout, _ = sample(capsys, str(run), RED, BLUE, "-n", "2")
    assert code == 0 and Path(stdout).parent == run / "samples" and Path(stdout).name.startswith("sample-a-small-red-circle")


def test_interpolation_gifs(run, tmp_path, capsys):
    code, stdout, _ = sample(capsys, str(run), RED, BLUE, "--interpolate", "--frames", "5", "-o", str(tmp_path / "a.gif"))
    assert code == 0 and stdout == str(tmp_path / "a.gif")
    gif = Image.open(tmp_path / "a.gif")
    assert gif.format == "GIF" and gif.size == (128, 128) and gif.is_animated and gif.info["loop"] == 0
    code, stdout, _ = sample(capsys, str(run), RED, "--interpolate", "--seed", "3", "--frames", "3")
    assert code == 0 and Path(stdout).parent == run / "samples" and Path(stdout).name.startswith("interpolate-a-small-red")
    assert Path(stdout).suffix == ".gif" and Image.open(stdout).n_frames > 1
    # the ends are the images of the two noise vectors (one caption) or of the two captions (fixed noise)
    sampler = Sampler.load(run, device="cpu")
    red, blue = sampler.text_encoder.encode([RED]).float(), sampler.text_encoder.encode([BLUE]).float()
    frames = sampler.interpolate([RED], frames=4, seed=3)
    assert frames.shape == (4, 3, 32, 32)
    assert torch.allclose(frames[0], sampler.render(sampler.noise([3]), red)[0], atol=1e-5)
    assert torch.allclose(frames[-1], sampler.render(sampler.noise([4]), red)[0], atol=1e-5)
    frames = sampler.interpolate([RED, BLUE], frames=3, seed=3)
    assert torch.allclose(frames[0], sampler.render(sampler.noise([3]), red)[0], atol=1e-5)
    assert torch.allclose(frames[-1], sampler.render(sampler.noise([3]), blue)[0], atol=1e-5)


class Truncating(Generator):
    """A generator that declares a truncation trick: the loaded one, its noise scaled by psi (and psi recorded)."""

    supports_truncation = True

    def __init__(self, inner: Generator):
        super().__init__()
        self.inner, self.z_dim, self.seen = inner, inner.z_dim, []

    def forward(self, z, text, truncation=None):
        self.seen.append(truncation)
        return self.inner(z if truncation is None else z * truncation, text)


def test_truncation_only_where_the_generator_declares_it(run, capsys):
    code, _, err = sample(capsys, str(run), RED, "--truncation", "0.5")
    assert code == 2 and err == ["t2i: error: generator 'dcgan' has no truncation trick (it does not declare "
                                 "supports_truncation); sample without --truncation"]
    plain = Sampler.load(run, device="cpu")
    sampler = dataclasses.replace(plain, generator=Truncating(plain.generator).eval())
    assert torch.equal(sampler.generate([RED], n=2), plain.generate([RED], n=2))
    assert torch.equal(sampler.generate([RED], n=2, truncation=0.5),
                       plain.render(plain.noise([0, 1]) * 0.5, plain.text_encoder.encode([RED, RED])))
    assert sampler.generator.seen == [None, 0.5]
    with pytest.raises(UsageError, match=r"--truncation must be in \(0, 1\], got 1.5"):
        sampler.generate([RED], truncation=1.5)


@pytest.mark.parametrize("args, message", [
    (["--captions-file", "nowhere.txt"], "captions file nowhere.txt does not exist"),
    (["--captions-file", "{bad}"], 'bad.jsonl line 2: expected {"caption": TEXT} with a non-empty caption'),
    ([], "give captions after SOURCE or --captions-file FILE"),
    ([RED, "-o", "x.png", "--outdir", "d"], "-o writes a grid and --outdir a folder of images; give one of them"),
    ([RED, "--interpolate", "-n", "2"], "--interpolate writes one GIF; it does not take --outdir or -n"),
    ([RED, "--interpolate", "-o", "x.png"], "the interpolation is written as GIF; use a .gif file name"),
    ([RED, BLUE, RED, "--interpolate"], "--interpolate goes between two captions, or two noise vectors of one caption"),
    ([RED, "--frames", "8"], "--frames goes with --interpolate"),
    ([RED, "--outdir", "{full}"], "already exists and is not empty; write the images to a new folder"),
    ([RED, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_mistakes_are_one_line(run, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"caption": RED}) + "\n" + json.dumps({"text": ""}) + "\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.png").write_bytes(b"")
    args = [a.replace("{bad}", "bad.jsonl").replace("{full}", "full") for a in args]
    code, _, err = sample(capsys, str(run), *args)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "full"]  # nothing half-written
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.png"]
