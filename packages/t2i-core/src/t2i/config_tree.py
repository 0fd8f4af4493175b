"""Raw config trees: the nested dicts that TOML files, CLI flags and study files give, before
:func:`t2i.config.resolve` validates them into an :class:`~t2i.config.ExperimentConfig`.

Everything that layers, addresses or names such trees lives here, so ``t2i run``, ``--resume`` and
``t2i study`` read config layers the same way::

    tree = {}
    set_path(tree, "generator.name", "sagan")           # {"generator": {"name": "sagan"}}
    flatten({"train": {"lr_d": 1e-4}})                  # {"train.lr_d": 0.0001}
    unflatten({"train.lr_d": 1e-4})                     # {"train": {"lr_d": 0.0001}}
    merge(lower, upper)                                 # tables merge, values replace
    overlay(lower, upper)                               # merge, but a switched component drops its options

The one rule beyond merging: a layer that picks another component (``generator.name = "sagan"``) or
adversarial loss (``loss.adversarial``) than the layers below drops the options those layers gave the
old one, so the new one starts from its own defaults (dcgan's ``ngf`` means nothing to sagan).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping

from .errors import ConfigError

__all__ = [
    "COMPONENT_SECTIONS",
    "set_path",
    "merge",
    "flatten",
    "unflatten",
    "picked",
    "drop_switched_options",
    "overlay",
    "slug",
    "value_text",
]

# Sections that name a registered component in ``name`` and configure it in ``options``.
COMPONENT_SECTIONS = ("data", "text_encoder", "generator", "discriminator")
# (section, key naming the component, key of its options) for every choice whose options a switch drops.
_CHOICES = tuple((section, "name", "options") for section in COMPONENT_SECTIONS) + (("loss", "adversarial", "options"),)


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"]["c"] = value`` for ``dotted = "a.b.c"``, creating tables as needed."""
    keys = [k.strip() for k in dotted.split(".")]
    if not all(keys):
        raise ConfigError(f"--set {dotted}={value}: expected section.key=value")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(keys[: i + 1])}' is a value, not a table")
        node = child
    node[keys[-1]] = value


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two trees into a new one: tables merge, values (lists included) replace."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "", *, empty_tables: bool = True) -> dict[str, Any]:
    """``{"train": {"lr_d": 1e-4}}`` -> ``{"train.lr_d": 1e-4}``: tables become dotted keys, lists stay values.

    An empty table stays a value (``{"generator.options": {}}``) unless ``empty_tables=False``, which
    leaves it out (two trees then compare equal key by key whether or not they spell out empty tables).
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and (value or not empty_tables):
            out.update(flatten(value, f"{prefix}{key}.", empty_tables=empty_tables))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unflatten(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr_d": 1e-4}`` -> ``{"train": {"lr_d": 1e-4}}`` (values are copied)."""
    tree: dict[str, Any] = {}
    for key, value in dotted.items():
        set_path(tree, key, copy.deepcopy(value))
    return tree


def picked(tree: Mapping[str, Any], section: str, key: str = "name") -> Any:
    """``tree[section][key]``, or ``None`` when the tree does not set it."""
    table = tree.get(section)
    return table.get(key) if isinstance(table, Mapping) else None


def drop_switched_options(lower: Mapping[str, Any], upper: Mapping[str, Any],
                          fallback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``lower`` without the options of every component ``upper`` switches to another one.

    ``lower``'s component is its own choice, else ``fallback``'s (t2i's defaults, when ``lower`` leaves
    the choice to them). Returns the copy; ``lower`` is not changed.
    """
    out = copy.deepcopy(dict(lower))
    for section, name_key, options_key in _CHOICES:
        new = picked(upper, section, name_key)
        old = picked(out, section, name_key)
        if old is None and fallback is not None:
            old = picked(fallback, section, name_key)
        if new is not None and new != old and isinstance(out.get(section), dict):
            out[section].pop(options_key, None)
    return out


def overlay(lower: Mapping[str, Any], upper: Mapping[str, Any], fallback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``merge(lower, upper)``, except that the options ``lower`` gave a component ``upper`` switches away
    from are dropped (see :func:`drop_switched_options`; ``fallback`` names the components ``lower`` leaves
    to the defaults)."""
    return merge(drop_switched_options(lower, upper, fallback), upper)


def slug(text: str, limit: int = 60, fallback: str = "trial") -> str:
    """A folder- or file-name stem: lowercase letters and digits joined by ``-``, at most ``limit`` long."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or fallback


def value_text(value: Any) -> str:
    """A config value as a label shows it: ``2e-05`` -> ``2e-05``, ``1.0`` -> ``1``, ``True`` -> ``true``,
    lists joined by ``,``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(value_text(v) for v in value)
    return str(value)
