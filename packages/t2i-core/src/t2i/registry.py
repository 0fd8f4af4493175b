"""One registry per component kind, with the same small API: register, names, create, describe, owner.

Registries are filled by plugins through the hooks in :mod:`t2i.hookspecs` (see :mod:`t2i.plugins`);
nothing here knows about any particular component.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import ConfigError, DuplicateComponentError, UnknownComponentError, UsageError
from .options import build_config, config_to_dict, describe_fields

__all__ = ["Entry", "Registry", "KINDS"]

# kind -> (singular noun used in messages, hook name)
KINDS: dict[str, tuple[str, str]] = {
    "text_encoders": ("text encoder", "t2i_register_text_encoders"),
    "generators": ("generator", "t2i_register_generators"),
    "discriminators": ("discriminator", "t2i_register_discriminators"),
    "losses": ("loss", "t2i_register_losses"),
    "metrics": ("metric", "t2i_register_metrics"),
    "datasets": ("data set", "t2i_register_datasets"),
}

_NAME = re.compile(r"^[a-z][a-z0-9_\-]*$")


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Entry:
    """A registered component: its factory, config dataclass, help text and who registered it."""

    name: str
    factory: Callable[..., Any]
    config: type | None
    help: str
    plugin: str
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return f"{self.plugin} {self.version}".strip()


class Registry:
    """Named factories of one kind of component."""

    def __init__(self, kind: str):
        self.kind = kind
        self.noun = KINDS.get(kind, (kind, ""))[0]
        self._entries: dict[str, Entry] = {}

    # -- filling ---------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        config: type | None = None,
        help: str = "",
        plugin: str = "<unknown>",
        version: str = "",
        **metadata: Any,
    ) -> Entry:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.noun} name {name!r} from {plugin}: use lowercase letters, digits, '_' or '-'")
        if name in self._entries:
            other = self._entries[name]
            raise DuplicateComponentError(
                f"{self.noun} '{name}' is registered twice: by {other.owner} and by {f'{plugin} {version}'.strip()}; "
                f"uninstall one of them"
            )
        entry = Entry(name, factory, config, help or (factory.__doc__ or "").strip().split("\n")[0], plugin, version, dict(metadata))
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    # -- looking up ------------------------------------------------------------------------------------
    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, naturally sorted, optionally filtered by an fnmatch ``pattern`` (``"sa*"``)."""
        names = self._entries.keys()
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return sorted(names, key=_natural_key)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            pass
        installed = ", ".join(self.names()) or "none"
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
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
