"""The recipes in examples/recipes: each names the paper it follows, the number it should reach and the protocol
that number was measured with, and builds and trains a few steps, at tiny widths, on a miniature data set in its
real layout (CUB's or COCO's, written by the tests)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from data_fixtures import make_coco, make_cub
from t2i.cli import main as cli_main
from t2i.metrics.protocols import get_protocol

RECIPES = Path(__file__).resolve().parents[1] / "examples" / "recipes"
ALL = sorted(p.name for p in RECIPES.glob("*.toml"))
# what a recipe's widths shrink to here (the architecture and the objective stay the recipe's)
TINY = {"dfgan": {"generator.options.nf": 2, "discriminator.options.nf": 2},
        "attngan": {"generator.options.ngf": 2, "generator.options.z_dim": 8, "generator.options.condition_dim": 4,
                    "discriminator.options.ndf": 2},
        "stylegan": {"generator.options.channel_base": 1024, "generator.options.channel_max": 4,
                     "generator.options.z_dim": 8, "generator.options.w_dim": 8, "generator.options.mapping_layers": 1,
                     "discriminator.options.channel_base": 1024, "discriminator.options.channel_max": 4,
                     "discriminator.options.cmap_layers": 1}}
TINY_TEXT = {"gru": {"text_encoder.options.dim": 16}}
# recipes whose paper publishes no figure on their data set (StyleGAN-T: zero-shot COCO only), so no preset to match
NO_OWN_PROTOCOL = {"cub-stylegan-t-256.toml"}


def damsm_pair(data: str, root: Path, resolution: int, out: Path, term: bool) -> dict[str, str]:
    """The DAMSM pair an AttnGAN recipe needs (a DF-GAN recipe: the text encoder only, ``term`` false), pretrained
    for two steps by ``t2i damsm pretrain`` (small trunk) on the same miniature data; the recipe's paths pointed at it."""
    code = cli_main(["damsm", "pretrain", "--data", f"{data}:{root}", "-d", "quiet=true", "--resolution", str(resolution),
                     "--trunk", "small", "--steps", "2", "--batch-size", "4", "--nef", "8", "--out", str(out)])
    assert code == 0
    return {"text_encoder.options.text_encoder": str(out / "text_encoder.pth"),
            "text_encoder.options.captions": str(out / "captions.pickle"),
            **({"loss.term_options.damsm.image_encoder": str(out / "image_encoder.pth")} if term else {})}


def read(name: str) -> tuple[dict, str]:
    text = (RECIPES / name).read_text()
    return tomllib.loads(text), text


def test_there_are_recipes_for_each_data_set_and_size():
    assert {"cub-dfgan-256.toml", "cub-dfgan-64.toml", "coco-dfgan-256.toml", "coco-dfgan-64.toml",
            "cub-attngan-256.toml", "cub-attngan-64.toml"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_a_recipe_says_what_it_reproduces_and_how_to_run_it(name):
    recipe, text = read(name)
    size = int(re.search(r"-(\d+)\.toml$", name).group(1))
    assert recipe["data"]["resolution"] == size and recipe["data"]["name"] == name.split("-")[0]
    assert f"t2i run --config examples/recipes/{name}" in text
    protocols = re.findall(r"--protocol ([\w-]+)", text)
    assert protocols, "the command to evaluate it"
    for protocol in protocols:
        get_protocol(protocol)  # a preset that exists
    if size == 256 and name not in NO_OWN_PROTOCOL:  # the published figure and its protocol
        assert re.search(r"(FID|IS) \d+\.\d+", text) and protocols[0] == "-".join(name.split("-")[1::-1])


@pytest.mark.parametrize("name", ALL)
def test_a_recipe_trains_on_a_miniature_data_set_in_its_layout(name, tmp_path):
    recipe, _ = read(name)
    data = recipe["data"]["name"]
    root = make_cub(tmp_path, embeddings=False) if data == "cub" else make_coco(tmp_path, n_train=6, n_test=2)
    tiny = TINY.get(recipe["generator"]["name"], {}) | TINY_TEXT.get(recipe["text_encoder"]["name"], {})
    if recipe["text_encoder"]["name"] == "damsm":
        tiny |= damsm_pair(data, root, recipe["data"]["resolution"], tmp_path / "damsm", "damsm" in recipe["loss"].get("terms", {}))
    if recipe["discriminator"]["name"] == "clipd":  # GALIP: a tiny CLIP ViT (t2i-clipd's) for text, D and clip_sim
        from t2i_clipd.testing import tiny_recipe_sets
        tiny = {k: v for k, v in tiny.items() if not k.startswith("discriminator.")} | tiny_recipe_sets(tmp_path / "clip", recipe)
    if recipe["text_encoder"]["name"] == "clip" and recipe["discriminator"]["name"] != "clipd":  # a tiny CLIP text tower
        from t2i_clipd.plugin import TINY_CLIP_CONFIG
        from t2i_clipd.testing import tiny_clip_weights
        tiny |= {"text_encoder.options.model": TINY_CLIP_CONFIG, "text_encoder.options.quick_gelu": "false",
                 "text_encoder.options.weights": str(tiny_clip_weights(tmp_path / "clip"))}
    sets = [f"{k}={v}" for k, v in tiny.items()] + ["train.batch_size=4", "eval.metrics=[]", "data.options.quiet=true"]
    out = tmp_path / "run"
    args = ["run", "--config", str(RECIPES / name), "--data", f"{data}:{root}", "--steps", "2", "--out", str(out), "-q"]
    for s in sets:
        args += ["--set", s]
    assert cli_main(args) == 0
    config = tomllib.loads((out / "config.toml").read_text())
    # the recipe's own settings reached the run: objective, optimiser, augmentation, sizes
    assert config["loss"]["adversarial"] == recipe["loss"]["adversarial"]
    assert config["loss"]["terms"] == recipe["loss"]["terms"]
    assert (config["train"]["lr_g"], config["train"]["lr_d"]) == (recipe["train"]["lr_g"], recipe["train"]["lr_d"])
    assert config["data"]["resolution"] == recipe["data"]["resolution"]
    assert config["data"]["random_crop"] == recipe["data"].get("random_crop", False)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert lines and lines[-1]["step"] == 2
