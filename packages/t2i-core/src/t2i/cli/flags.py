"""``t2i run``'s dedicated config flags, generated from the config dataclasses.

A field of a section of :class:`t2i.config.ExperimentConfig` becomes a flag when its metadata names one::

    lr_g: float = field(default=2e-4, metadata={"help": "generator learning rate", "flag": "--lr-g"})
    batch_size: int = field(default=64, metadata={"help": "...", "flag": ("--batch-size", "-b")})
    log_every: int = field(default=100, metadata={"help": "...", "flag": "--log-every", "panel": "output"})

so a new setting is written once, in :mod:`t2i.config`: its type, default, check, help and flag. The flag's
value is ``None`` unless given (the config file's value or the default then stands), and goes into the raw
config tree as ``section.field``. ``panel`` picks the ``--help`` group (``components``, ``training``,
``output``); by default the ``data`` section's flags are shown with the components, the others with training.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional, get_args, get_origin, get_type_hints

import typer

from ..config import ExperimentConfig

__all__ = ["PANELS", "ConfigFlag", "config_flags", "with_config_flags", "given_config_values"]

PANELS = {"components": "Components", "training": "Training", "output": "Run folder and output"}
_SECTION_PANEL = {"data": "components"}


@dataclass(frozen=True)
class ConfigFlag:
    """One generated option: the config key it sets and how ``--help`` shows it."""

    key: str  # "train.lr_g"
    names: tuple[str, ...]  # ("--lr-g",)
    type: type  # int, float, str or bool
    help: str
    panel: str  # a title from PANELS

    @property
    def param(self) -> str:
        """The Python name of the option's parameter (``train__lr_g``)."""
        return self.key.replace(".", "__")


def _option_type(tp: Any, key: str) -> type:
    """The type the flag parses: the field's, without ``None``; a ``Literal`` of strings parses as ``str``."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else tp
    if get_origin(tp) is Literal:
        tp = type(get_args(tp)[0])
    if tp in (int, float, str, bool):
        return tp
    raise TypeError(f"config field {key} has a flag but type {tp!r}; flags take int, float, str, bool or a Literal")


def _choices(tp: Any) -> str:
    """`` (constant, cosine_restarts, linear)`` for a ``Literal`` field, else nothing."""
    return f" ({', '.join(map(str, get_args(tp)))})" if get_origin(tp) is Literal else ""


def config_flags(root: type = ExperimentConfig) -> list[ConfigFlag]:
    """Every field of ``root``'s dataclass sections whose metadata names a ``flag``, in declaration order."""
    flags = []
    for section in dataclasses.fields(root):
        section_type = get_type_hints(root)[section.name]
        if not dataclasses.is_dataclass(section_type):
            continue
        hints = get_type_hints(section_type)
        for f in dataclasses.fields(section_type):
            names = f.metadata.get("flag")
            if not names:
                continue
            key = f"{section.name}.{f.name}"
            panel = f.metadata.get("panel", _SECTION_PANEL.get(section.name, "training"))
            help_text = f.metadata.get("help", "") + _choices(hints[f.name])
            flags.append(ConfigFlag(key, (names,) if isinstance(names, str) else tuple(names),
                                    _option_type(hints[f.name], key), help_text, PANELS[panel]))
    return flags


def with_config_flags(command: Callable[..., Any], root: type = ExperimentConfig) -> Callable[..., Any]:
    """Give ``command`` (whose last parameter is ``**config_values``) one option per :func:`config_flags`
    entry of ``root``, by rewriting the signature Typer reads; the values arrive in ``config_values``."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for flag in config_flags(root):
        if flag.type is bool:
            names = tuple(f"{n}/--no-{n[2:]}" if n.startswith("--") else n for n in flag.names)
        else:
            names = flag.names
        option = typer.Option(*names, help=flag.help, rich_help_panel=flag.panel, show_default=False)
        annotation = Annotated[Optional[flag.type], option]
        params.append(inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    command.__signature__ = signature.replace(parameters=params)
    return command


def given_config_values(config_values: dict[str, Any]) -> dict[str, Any]:
    """The generated options that were given, as dotted config keys: ``{"train.lr_g": 0.001}``."""
    return {param.replace("__", "."): value for param, value in config_values.items() if value is not None}
