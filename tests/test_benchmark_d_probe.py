"""benchmarks/d_probe.py: the supervised probe of a discriminator's image trunk (README's clipd figures)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "d_probe.py"


def load_probe():
    spec = importlib.util.spec_from_file_location("d_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def held_out(output: str) -> list[float]:
    return [float(v) for v in re.findall(r"held out ([0-9.]+)", output)]


def test_a_trunk_learns_an_easy_attribute_and_the_probe_reports_it(capsys):
    load_probe().main(["--disc", "dcgan", "-D", "ndf=8", "--attribute", "background", "--steps", "60",
                       "--every", "30", "--lr", "2e-3"])
    out = capsys.readouterr().out
    assert "background (4 values, chance 0.250)" in out and "trunk map" in out
    scores = held_out(out)
    assert len(scores) == 2 and scores[-1] > 0.6  # chance is 0.25: the trunk and the classifier really train


def test_recipe_options_are_read_and_overridden(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[discriminator]\nname = "dcgan"\noptions = { ndf = 8, spectral_norm = true }\n'
                      '[train]\nlr_d = 1e-3\nbetas = [0.5, 0.99]\n')
    load_probe().main(["--config", str(recipe), "-D", "ndf=4", "--steps", "1"])
    out = capsys.readouterr().out
    assert "'ndf': '4'" in out and "'spectral_norm': True" in out and "lr 0.001 betas (0.5, 0.99)" in out
    assert len(held_out(out)) == 1


def test_an_unknown_attribute_is_refused():
    with pytest.raises(SystemExit):
        load_probe().parse_args(["--attribute", "texture"])


@pytest.mark.parametrize("args, words", [
    (["--config", "no/such/recipe.toml"], "cannot read the recipe no/such/recipe.toml"),
    (["--disc", "no-such-disc"], "cannot build discriminator 'no-such-disc'"),
    (["--disc", "dcgan", "-D", "ndf=-3"], "cannot build discriminator 'dcgan'"),
])
def test_bad_input_is_one_line_not_a_traceback(args, words, capsys):
    with pytest.raises(SystemExit) as exc:
        load_probe().main(args + ["--steps", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and words in err and err.count("\n") == 1
