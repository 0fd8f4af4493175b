"""One registry per component kind, with the same small API: register, names, create, describe, owner.

Registries are filled by plugins through the hooks in :mod:`t2i.hookspecs` (see :mod:`t2i.plugins`);
nothing here knows about any particular component.

A factory or config class may be registered by reference, ``"package.module:Name"``: it is imported when a
component is first built or described, not when ``t2i --help`` or ``t2i list`` fills the registries, so a
plugin's networks (and torch, timm, open_clip ...) load only when they are used::

    register("sagan", "t2i_sagan.models:SAGANGenerator", config="t2i_sagan.models:SAGANGeneratorConfig",
             help="Self-attention generator")
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import ConfigError, DuplicateComponentError, RegistrationError, UnknownComponentError, UsageError
from .options import build_config, check_config_class, config_to_dict, describe_fields

__all__ = ["Entry", "Registry", "KINDS", "load_reference"]

# kind -> (singular noun used in messages, hook name)
KINDS: dict[str, tuple[str, str]] = {
    "text_encoders": ("text encoder", "t2i_register_text_encoders"),
    "generators": ("generator", "t2i_register_generators"),
    "discriminators": ("discriminator", "t2i_register_discriminators"),
    "losses": ("loss", "t2i_register_losses"),
    "metrics": ("metric", "t2i_register_metrics"),
    "datasets": ("data set", "t2i_register_datasets"),
    "loggers": ("logger", "t2i_register_loggers"),
}

ENV_LOAD = "T2I_LOAD_PLUGINS"  # read by t2i.plugins; named in the duplicate-name message
_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_reference(reference: str) -> Any:
    """``"package.module:Name"`` -> the object ``Name`` of that module (importing it)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Entry:
    """A registered component: its factory, config dataclass, help text and who registered it.

    ``target`` and ``config_target`` are what the plugin registered: the objects, or ``"module:Name"``
    references that :attr:`factory` and :attr:`config` import on first use.
    """

    name: str
    target: Callable[..., Any] | str
    config_target: type | str | None
    help: str
    plugin: str
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    noun: str = "component"  # the kind, as messages name it: "generator"
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def owner(self) -> str:
        return f"{self.plugin} {self.version}".strip()

    @property
    def factory(self) -> Callable[..., Any]:
        """The callable that builds the component (imported now if it was registered by reference)."""
        return self._load("factory", self.target)

    @property
    def config(self) -> type | None:
        """The component's config dataclass, or ``None`` when it takes no options."""
        return self._load("config", self.config_target)

    def _load(self, what: str, target: Any) -> Any:
        if not isinstance(target, str):
            return target
        if what not in self._loaded:
            try:
                loaded = load_reference(target)
            except (ImportError, AttributeError) as exc:
                raise UsageError(f"{self.noun} '{self.name}' ({self.owner}): its {what} {target} cannot be loaded: "
                                 f"{exc}") from None
            problem = _factory_problem(loaded) if what == "factory" else _config_problem(loaded)
            if problem:  # the same refusal as for an object registered directly
                raise RegistrationError(f"{self.noun} '{self.name}' from {self.owner}: {problem}")
            self._loaded[what] = loaded
        return self._loaded[what]


def _factory_problem(factory: Any) -> str | None:
    """Why ``factory`` cannot build components (``None`` when it can): a class, a function or a partial can."""
    if isinstance(factory, type) or inspect.isroutine(factory) or isinstance(factory, functools.partial):
        return None
    kind = type(factory).__name__
    return (f"factory is an instance of {kind}, not a class or function; register the class ({kind}) or a "
            f"function that builds one, so that each run gets a fresh component")


def _config_problem(config: Any) -> str | None:
    """Why ``config`` cannot be a component's config (``None`` when it can)."""
    if config is None:
        return None
    try:
        check_config_class(config)
    except TypeError as exc:
        return str(exc)
    return None


class Registry:
    """Named factories of one kind of component."""

    def __init__(self, kind: str):
        self.kind = kind
        self.noun = KINDS.get(kind, (kind, ""))[0]
        self._entries: dict[str, Entry] = {}
        self.conflicts: dict[str, list[str]] = {}  # name -> owners, when plugins disagree (add_conflict)

    # -- filling ---------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        config: type | str | None = None,
        help: str = "",
        plugin: str = "<unknown>",
        version: str = "",
        **metadata: Any,
    ) -> Entry:
        who = f"{plugin} {version}".strip()
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistrationError(f"{self.noun} name {name!r} from {who}: use lowercase letters, digits, '_' or '-', "
                                    f"starting with a letter")
        if name in self._entries:
            raise DuplicateComponentError(self._duplicate_message(name, self._entries[name].owner, who))
        for what, target in (("factory", factory), ("config", config)):
            if isinstance(target, str):
                if not _REFERENCE.match(target):
                    raise RegistrationError(f"{self.noun} '{name}' from {who}: {target!r} is not a "
                                            f"'package.module:Name' reference")
                continue  # checked when it is imported (Entry._load)
            problem = _factory_problem(target) if what == "factory" else _config_problem(target)
            if problem:
                raise RegistrationError(f"{self.noun} '{name}' from {who}: {problem}")
        entry = Entry(name, factory, config, help, plugin, version, dict(metadata), noun=self.noun)
        if not help:  # the factory's docstring: imports a factory given by reference
            entry = dataclasses.replace(entry, help=(entry.factory.__doc__ or "").strip().split("\n")[0])
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self.conflicts.pop(name, None)

    def add_conflict(self, name: str, owner: str) -> None:
        """Record that ``owner`` registered ``name`` too (the first registrant keeps the entry). Listing still
        works; :meth:`check` and every lookup of ``name`` refuse it until one of them is gone."""
        self.conflicts.setdefault(name, [self._entries[name].owner]).append(owner)

    def _duplicate_message(self, name: str, first: str, *others: str) -> str:
        by = " and by ".join((first, *others))
        return (f"{self.noun} '{name}' is registered twice: by {by}; uninstall one of them, or load only some "
                f"plugins with {ENV_LOAD}=DIST,DIST (the distributions to keep, from t2i plugins)")

    def problems(self) -> list[str]:
        """One line per name registered by more than one plugin."""
        return [self._duplicate_message(name, *owners) for name, owners in sorted(self.conflicts.items())]

    def check(self) -> Registry:
        """This registry, when no name in it is registered twice (else :class:`DuplicateComponentError`)."""
        if self.conflicts:
            raise DuplicateComponentError(self.problems()[0])
        return self

    # -- looking up ------------------------------------------------------------------------------------
    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, naturally sorted, optionally filtered by an fnmatch ``pattern`` (``"sa*"``)."""
        names = self._entries.keys()
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return sorted(names, key=_natural_key)

    def entries(self, pattern: str | None = None) -> list[Entry]:
        """The entries of :meth:`names`, including names two plugins registered (which :meth:`get` refuses)."""
        return [self._entries[name] for name in self.names(pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry:
        if name in self.conflicts:
            raise DuplicateComponentError(self._duplicate_message(name, *self.conflicts[name]))
        try:
            return self._entries[name]
        except KeyError:
            pass
        installed = ", ".join(self.names()) or "none"
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        raise UnknownComponentError(f"unknown {self.noun} '{name}'{hint} installed: {installed}")

    def owner(self, name: str) -> str:
        """``"<distribution> <version>"`` of the plugin that registered ``name``."""
        return self.get(name).owner

    def make_config(self, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """Validate ``options`` against the component's config dataclass (``None`` values are dropped)."""
        entry = self.get(name)
        options = {k: v for k, v in (options or {}).items() if v is not None}
        if entry.config is None:
            if options:
                raise ConfigError(f"{self.noun} '{name}' takes no options, got: {', '.join(sorted(options))}")
            return None
        try:
            return build_config(entry.config, options)
        except ConfigError as exc:
            raise ConfigError(f"{self.noun} '{name}': {exc}") from None

    def create(self, name: str, options: Mapping[str, Any] | Any = None, **context: Any) -> Any:
        """Build component ``name`` from ``options`` (a dict, or an already-built config) and ``context``."""
        entry = self.get(name)
        if entry.config is not None and isinstance(options, entry.config):
            cfg = options
        else:
            cfg = self.make_config(name, options)
        return entry.factory(**context) if cfg is None else entry.factory(cfg, **context)

    def build(self, name: str, options: Mapping[str, Any] | None = None, **context: Any) -> tuple[Any, dict[str, Any]]:
        """Build ``name`` for a run: return it with its complete options (defaults filled in, for the saved
        config). A component that refuses its settings (``ValueError``/``TypeError`` from its config or
        constructor) becomes a one-line :class:`UsageError` naming it; unknown options stay ConfigErrors."""
        cfg = self.make_config(name, options)
        try:
            obj = self.get(name).factory(**context) if cfg is None else self.get(name).factory(cfg, **context)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{self.noun} '{name}' cannot be built with these settings: {exc}") from None
        return obj, (config_to_dict(cfg) if cfg is not None and dataclasses.is_dataclass(cfg) else {})

    def describe(self, name: str) -> dict[str, Any]:
        """Name, owner, help and the config fields (name, type, default, help) of ``name``."""
        entry = self.get(name)
        return {
            "kind": self.noun,
            "name": entry.name,
            "owner": entry.owner,
            "help": entry.help,
            "fields": describe_fields(entry.config),
            "metadata": entry.metadata,
        }
