"""Raw config trees (t2i.config_tree, t2i.config.layer): addressing, merging, and the rule that switching a
component drops the options given to the old one, the same for ``t2i run`` and ``t2i study``."""

from __future__ import annotations

import pytest

from t2i.config import layer, resolve
from t2i.config_tree import flatten, merge, overlay, set_path, slug, unflatten, value_text
from t2i.errors import ConfigError


def test_set_path_creates_tables_and_refuses_to_go_through_a_value():
    tree: dict = {}
    set_path(tree, "generator.options.ngf", 16)
    assert tree == {"generator": {"options": {"ngf": 16}}}
    with pytest.raises(ConfigError, match="'generator.options.ngf' is a value, not a table"):
        set_path(tree, "generator.options.ngf.x", 1)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        set_path(tree, "train..lr_g", 1)


def test_merge_merges_tables_and_replaces_values_without_touching_its_inputs():
    base = {"train": {"lr_g": 1e-4, "betas": [0.0, 0.9]}, "eval": {"metrics": ["fid"]}}
    out = merge(base, {"train": {"lr_g": 2e-4}, "eval": {"metrics": ["kid"]}})
    assert out == {"train": {"lr_g": 2e-4, "betas": [0.0, 0.9]}, "eval": {"metrics": ["kid"]}}
    assert base["train"]["lr_g"] == 1e-4 and out["train"]["betas"] is not base["train"]["betas"]


def test_flatten_and_unflatten_are_inverse():
    tree = {"train": {"lr_d": 1e-4, "betas": [0.5, 0.9]}, "generator": {"name": "dcgan", "options": {}}}
    dotted = flatten(tree)
    assert dotted == {"train.lr_d": 1e-4, "train.betas": [0.5, 0.9], "generator.name": "dcgan", "generator.options": {}}
    assert unflatten(dotted) == tree
    assert "generator.options" not in flatten(tree, empty_tables=False)


def test_switching_a_component_drops_the_options_below():
    lower = {"generator": {"name": "dcgan", "options": {"ngf": 8}}, "loss": {"adversarial": "bce", "options": {"smooth": 0.1}}}
    assert overlay(lower, {"generator": {"name": "sagan"}}) == {
        "generator": {"name": "sagan"}, "loss": {"adversarial": "bce", "options": {"smooth": 0.1}}}
    assert overlay(lower, {"loss": {"adversarial": "hinge"}})["loss"] == {"adversarial": "hinge"}
    # naming the same component again, or setting only options, keeps them
    assert overlay(lower, {"generator": {"name": "dcgan", "options": {"z_dim": 4}}})["generator"]["options"] == \
        {"ngf": 8, "z_dim": 4}


def test_layer_counts_the_default_component_as_the_lower_layers_choice():
    file_without_a_name = {"generator": {"options": {"ngf": 16}}}  # options for the default generator, dcgan
    assert layer(file_without_a_name, {"generator": {"name": "sagan"}}) == {"generator": {"name": "sagan"}}
    assert layer(file_without_a_name, {"generator": {"name": "dcgan"}})["generator"]["options"] == {"ngf": 16}
    cfg = resolve(layer(file_without_a_name, {"generator": {"name": "sagan", "options": {"ch": 8}}}))
    assert cfg.generator.options == {"ch": 8}


def test_resolve_drops_the_default_recipes_options_of_a_replaced_component():
    cfg = resolve({"generator": {"name": "sagan"}, "data": {"name": "folder", "options": {"root": "x"}}})
    assert cfg.generator.options == {} and cfg.data.options == {"root": "x"}
    assert "shapes_accuracy" not in cfg.eval.metrics  # attribute accuracy only means something on Shapes
    assert resolve({}).generator.options == {"ngf": 32, "conditioning": "cbn"}


def test_slug_and_value_text():
    assert slug("Model 2a, train.lr_d=0.0001") == "model-2a-train-lr-d-0-0001"
    assert slug("!!!") == "trial" and slug("", fallback="sample") == "sample"
    assert slug("a" * 10 + " b", limit=11) == "a" * 10  # no dash left at the cut
    assert value_text(2e-5) == "2e-05" and value_text(1.0) == "1" and value_text(True) == "true"
    assert value_text([0.5, 0.999]) == "0.5,0.999" and value_text("cbn") == "cbn"
