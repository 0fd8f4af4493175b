"""Test helpers: the options that shrink a GALIP recipe to the tiny CLIP ViT shipped with the package.

:func:`tiny_recipe_sets` writes the tiny CLIP's random weights (``random:0``) to a file, since the core's
``clip`` text encoder loads weights from a file only, and returns ``--set`` assignments that point the text
encoder, ``galip``, ``clipd`` and the ``clip_sim`` term at it (``tests/test_recipes.py`` uses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .plugin import TINY_CLIP_CONFIG
from .vit import load_vit

__all__ = ["tiny_clip_weights", "tiny_recipe_sets"]


def tiny_clip_weights(folder: str | Path) -> Path:
    """The tiny CLIP's ``random:0`` weights written to ``folder/tiny-clip-vit.pt`` (its path)."""
    path = Path(folder) / "tiny-clip-vit.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_vit(TINY_CLIP_CONFIG, weights="random:0").model.state_dict(), path)
    return path


def tiny_recipe_sets(folder: str | Path, recipe: Mapping[str, Any]) -> dict[str, str]:
    """``--set`` key -> value for a GALIP ``recipe`` (its parsed TOML) on the tiny CLIP, at tiny widths (weights
    written into ``folder``): the clip text encoder, clipd, the clip_sim term and the galip generator, where used."""
    weights = str(tiny_clip_weights(folder))
    clip = {"model": TINY_CLIP_CONFIG, "weights": weights}
    sets: dict[str, str] = {}
    if recipe["text_encoder"]["name"] == "clip":
        sets |= {f"text_encoder.options.{k}": v for k, v in clip.items()}
    if recipe["discriminator"]["name"] == "clipd":
        sets |= {f"discriminator.options.{k}": v for k, v in clip.items()}
        sets |= {"discriminator.options.layers": "[0, 1, 2]", "discriminator.options.head_width": "16",
                 "discriminator.options.joint_width": "8"}
    if "clip_sim" in recipe.get("loss", {}).get("terms", {}):
        sets |= {f"loss.term_options.clip_sim.{k}": v for k, v in clip.items()}
    if recipe["generator"]["name"] == "galip":
        sets |= {f"generator.options.{k}": v for k, v in clip.items()}
        sets |= {"generator.options.nf": "2", "generator.options.code_ch": "8", "generator.options.mid_ch": "4",
                 "generator.options.map_blocks": "1", "generator.options.prompt_layers": "[1, 2]"}
    return sets
