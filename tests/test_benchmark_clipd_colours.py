"""benchmarks/clipd_colours.py: the distances between Shapes' flat backgrounds in a frozen ViT (clipd README)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("t2i_clipd", reason="the probe reads clipd's tapped ViT")

from t2i.data.shapes import BACKGROUNDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "clipd_colours.py"


def load_script():
    spec = importlib.util.spec_from_file_location("clipd_colours", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flat_images_are_the_spec_backgrounds_in_minus_one_to_one():
    images = load_script().flat_images(8)
    assert images.shape == (len(BACKGROUNDS), 3, 8, 8)
    for image, rgb in zip(images, BACKGROUNDS.values()):
        assert torch.allclose(image, (torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1)[:, None, None].expand(3, 8, 8))


def test_the_recipes_random_vit_puts_the_collapsed_pairs_nearest(capsys, monkeypatch):
    """The README's finding, from the shipped config: black-brown and white-gray are the two nearest pairs
    (the backgrounds the MA-GP recipe swapped), each grid at distance 0 from itself."""
    monkeypatch.chdir(ROOT)
    script = load_script()
    from t2i_clipd.vit import TappedViT, load_vit

    vit = TappedViT(load_vit("plugins/t2i-clipd/recipes/tiny-vit.json", weights="random:0"), (0, 1))
    for dist in script.grid_distances(vit, script.flat_images(32)):
        assert torch.allclose(dist, dist.T) and torch.all(dist.diagonal() < 1e-3)
    script.main([])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("after block")]
    assert len(lines) == 2
    for line in lines:
        pairs = re.findall(r"(\w+-\w+) ([0-9]+)", line)
        assert [name for name, _ in pairs[:2]] == ["black-brown", "white-gray"] and len(pairs) == 6
        assert int(pairs[1][1]) * 1.5 < int(pairs[2][1])  # well apart from the other four


@pytest.mark.parametrize("args, says", [(["--layers", "0,x"], "invalid literal"), (["--layers", "0,9"], "layers [0, 9]"),
                                        (["--weights", "nowhere.pt"], "nowhere.pt")])
def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch, args, says):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        load_script().main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and err.count("\n") == 1 and err.startswith("clipd_colours: ")
