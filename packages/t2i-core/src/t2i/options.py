"""Typed component options: ``-G ngf=64 -G attn_res=16,32`` validated against a config dataclass.

Values come either from the CLI (strings) or from TOML (already typed). Both go through :func:`coerce`,
so a string ``"64"`` and a TOML ``64`` give the same ``int``, and ``"sixty"`` fails naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Mapping, get_args, get_origin, get_type_hints

from .errors import ConfigError

__all__ = [
    "coerce", "build_config", "parse_assignments", "parse_option_string", "describe_fields", "config_to_dict", "require_positive",
    "require_non_negative", "require_choices", "check_config_class",
]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}{', ...' if Ellipsis in get_args(tp) else ''}]"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a CLI string or a TOML value) to type ``tp``; raise :class:`ConfigError` naming ``key``."""
    origin = get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", ""))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    if origin in (tuple, list):
        args = get_args(tp)
        if isinstance(value, str):  # "16,32", "[16, 32]", "" and "[]" all work from the CLI
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            value = [v.strip().strip("'\"") for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values ({_type_name(tp)}), got {value!r}")
            return tuple(coerce(key, v, a) for v, a in zip(value, args))
        elem = args[0] if args else Any
        items = [coerce(key, v, elem) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise bad
        args = get_args(tp)
        if len(args) == 2:
            return {k: coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise bad from None
                if f.is_integer():
                    return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return build_config(tp, value, prefix=f"{key}.")
        raise bad
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad


def build_config(cls: type, values: Mapping[str, Any] | None = None, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys and wrong types raise :class:`ConfigError`."""
    values = dict(values or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        raise ConfigError(f"unknown key '{prefix}{key}'{hint} valid keys: {', '.join(sorted(fields))}")
    kwargs = {name: coerce(f"{prefix}{name}", value, hints[name]) for name, value in values.items()}
    try:
        cfg = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        label = prefix.rstrip(". ") or cls.__name__
        message = str(exc) if str(exc).startswith(prefix) else f"{label}: {exc}"
        raise ConfigError(message) from None
    return cfg


def parse_assignments(items: list[str] | tuple[str, ...] | None, flag: str = "-o") -> dict[str, str]:
    """``["ngf=64", "attn_res=16,32"]`` -> ``{"ngf": "64", "attn_res": "16,32"}``."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def parse_option_string(text: str, name: str = "base_options") -> dict[str, str]:
    """``"ndf=32,attn_res=16,32"`` -> ``{"ndf": "32", "attn_res": "16,32"}``: a wrapped component's options given
    as one command-line value (``-D base_options=...``). A piece without ``=`` continues the previous value, so
    list values need no quoting; ``name`` is the option named in the error."""
    out: dict[str, str] = {}
    key = None
    for piece in text.split(","):
        option, sep, value = piece.partition("=")
        if sep and option.strip():
            key = option.strip()
            out[key] = value.strip()
        elif key is not None and not sep:
            out[key] += "," + piece.strip()
        elif piece.strip():
            raise ValueError(f"{name}: expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass -> plain TOML-friendly dict (tuples become lists, ``None`` values are dropped)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if getattr(v, f.name) is not None}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items() if x is not None}
        return v

    return plain(cfg)


def describe_fields(cls: type | None) -> list[tuple[str, str, str, str]]:
    """Rows of (name, type, default, help) for ``t2i describe``. Help comes from ``field(metadata={"help": ...})``."""
    if cls is None:
        return []
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def check_config_class(cls: Any) -> None:
    """Refuse a config that cannot work: not a dataclass class, unresolvable annotations, or a default that
    contradicts its annotation (``ngf: int = 16.0``, a ``Literal`` default outside its choices).

    Raises ``TypeError`` with one line naming the field; :class:`t2i.registry.Registry` adds the plugin and
    the component."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        what = f"an instance of {type(cls).__name__}" if dataclasses.is_dataclass(cls) else repr(cls)
        raise TypeError(f"config must be a dataclass class, got {what}")
    try:
        hints = get_type_hints(cls)
    except Exception as exc:  # a NameError from a forward reference, usually
        raise TypeError(f"config {cls.__name__}: its annotations cannot be resolved ({exc})") from None
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            continue
        if not _matches(default, hints[f.name]):
            raise TypeError(f"config {cls.__name__}, field '{f.name}': default {default!r} is not "
                            f"{_type_name(hints[f.name])}")


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` already is a ``tp`` (no conversion: ``16.0`` is not an ``int``)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is None or tp is type(None):
        return value is None
    if origin is Literal:
        return any(value == c and type(value) is type(c) for c in args)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, Mapping) and (len(args) != 2 or all(_matches(v, args[1]) for v in value.values()))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # an int is a fine float (PEP 484's numeric tower)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this check does not understand: trust it


def require_positive(cfg: object, *names: str) -> None:
    """For a config's ``__post_init__``: each named field is an integer >= 1 (``ValueError`` naming it)."""
    _require_int(cfg, names, 1, "a positive integer")


def require_non_negative(cfg: object, *names: str) -> None:
    """For a config's ``__post_init__``: each named field is an integer >= 0."""
    _require_int(cfg, names, 0, "a non-negative integer")


def _require_int(cfg: object, names: tuple[str, ...], minimum: int, what: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be {what}, got {value!r}")


def require_choices(cfg: object, *names: str) -> None:
    """For a config's ``__post_init__``: each ``Literal[...]`` field holds one of its values, each ``bool``
    field is ``True`` or ``False`` (``ValueError`` naming the field).

    The choices are read from the field's annotation, so they are written once::

        conditioning: Literal["concat", "projection"] = field(default="concat", metadata={"help": ...})
        spectral_norm: bool = field(default=False, metadata={"help": ...})

        def __post_init__(self) -> None:
            require_choices(self)            # every Literal and bool field; or name some: (self, "norm")

    Values that come through the registry (``-D conditioning=projection``, TOML) are converted and checked
    by :func:`build_config` already; this also catches a config built directly in Python.
    """
    declared = _choice_fields(type(cfg))
    for name in names or tuple(declared):
        if name not in declared:
            raise TypeError(f"{type(cfg).__name__}.{name} is not declared as a Literal[...] or bool field")
        choices, value = declared[name], getattr(cfg, name)
        if choices is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        elif not any(value == c and type(value) is type(c) for c in choices):  # True is not Literal[1]
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@functools.cache
def _choice_fields(cls: type) -> dict[str, Any]:
    """The fields of dataclass ``cls`` declared ``bool`` (-> ``bool``) or ``Literal[...]`` (-> its values)."""
    hints = get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp is bool:
            out[f.name] = bool
        elif get_origin(tp) is Literal:
            out[f.name] = get_args(tp)
    return out
