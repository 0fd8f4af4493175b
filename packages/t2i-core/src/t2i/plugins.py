"""The plugin manager: finds plugins (entry-point group ``t2i``), calls their hooks, fills the registries.

- The core's own components live in :data:`BUILTIN_PLUGINS` and register through the same hooks.
- ``T2I_LOAD_PLUGINS=a,b`` loads only those distributions (empty: none besides the core's built-ins).
- A plugin that fails to import, or implements a hook that does not exist (a misspelling), is not
  loaded; the error is kept for ``t2i plugins`` and printed once as a warning.
- Tests add an in-memory plugin with :func:`register_plugin` and remove it with :func:`unregister_plugin`.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .registry import KINDS, Registry

__all__ = [
    "BUILTIN_PLUGINS",
    "PluginInfo",
    "get_plugin_manager",
    "registry",
    "plugins",
    "load_errors",
    "register_plugin",
    "unregister_plugin",
    "reset",
]

BUILTIN_PLUGINS = (
    "t2i.builtins.losses",
    "t2i.builtins.data",
    "t2i.builtins.text",
    "t2i.builtins.metrics",
    "t2i.builtins.commands",
)
CORE_DIST = "t2i-core"
ENV_LOAD = "T2I_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin module and what it registered."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


class _State:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("t2i")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.registries: dict[str, Registry] | None = None
        self.loaded = False

    # -- loading ---------------------------------------------------------------------------------------
    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        core_version = _version(CORE_DIST)
        for module_name in BUILTIN_PLUGINS:
            self._add(importlib.import_module(module_name), module_name, CORE_DIST, core_version, module_name)
        wanted = _wanted_distributions()
        for ep in sorted(metadata.entry_points(group="t2i"), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else ""
            if wanted is not None and _norm(dist) not in wanted and _norm(ep.name) not in wanted:
                continue
            if ep.name in self.infos:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the CLI down with it
                self.infos[ep.name] = PluginInfo(ep.name, dist, version, ep.value, error=f"import failed: {exc!r}")
                continue
            self._add(module, ep.name, dist, version, ep.value)

    def _add(self, module: Any, name: str, dist: str, version: str, module_name: str) -> None:
        info = PluginInfo(name, dist, version, module_name)
        self.infos[name] = info
        try:
            self.pm.register(module, name=name)
        except Exception as exc:  # pluggy.PluginValidationError: bad hook signature
            info.error = f"invalid plugin: {exc}"
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            self.pm.unregister(module)
            info.error = _misspelled_hook(module)
            return
        info.hooks = sorted(impl.name for impl in self._impls_of(module))
        self.registries = None

    def _impls_of(self, module: Any) -> list[Any]:
        return [c for c in self.pm.get_hookcallers(module) or []]

    # -- registries ------------------------------------------------------------------------------------
    def fill(self) -> dict[str, Registry]:
        self.load()
        if self.registries is not None:
            return self.registries
        registries = {kind: Registry(kind) for kind in KINDS}
        for info in self.infos.values():
            info.registered = {}
        for kind, (_, hook_name) in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            # Call each implementation ourselves so that every entry knows which plugin made it.
            for impl in hook.get_hookimpls():  # registration order: built-ins first
                info = self.infos.get(impl.plugin_name)
                dist, version = (info.distribution, info.version) if info else (impl.plugin_name, "")

                def register(name: str, factory: Any, *, _dist=dist, _version=version, _kind=kind, **kw: Any) -> None:
                    registries[_kind].register(name, factory, plugin=_dist, version=_version, **kw)
                    if info is not None:
                        info.registered.setdefault(_kind, []).append(name)

                impl.function(register)
        self.registries = registries
        return registries


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _wanted_distributions() -> set[str] | None:
    raw = os.environ.get(ENV_LOAD)
    if raw is None:
        return None
    return {_norm(x) for x in raw.split(",") if x.strip()}


def _misspelled_hook(module: Any) -> str:
    known = [n for n in dir(hookspecs) if n.startswith("t2i_")]
    bad = [n for n in dir(module) if n.startswith("t2i_") and n not in known and callable(getattr(module, n))]
    parts = []
    for name in bad:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"'{name}' is not a t2i hook" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return "; ".join(parts) or "implements an unknown hook"


_state: _State | None = None


def _get() -> _State:
    global _state
    if _state is None:
        _state = _State()
    return _state


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide pluggy manager, with built-ins and installed plugins loaded."""
    state = _get()
    state.load()
    return state.pm


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (``"generators"``, ``"losses"``, ...), filled from every loaded plugin."""
    if kind not in KINDS:
        raise KeyError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
    return _get().fill()[kind]


def plugins() -> list[PluginInfo]:
    """Every plugin t2i tried to load, built-ins first, with what each registered or why it failed."""
    state = _get()
    state.fill()
    return list(state.infos.values())


def load_errors() -> list[PluginInfo]:
    return [p for p in plugins() if p.error]


def register_plugin(plugin: Any, name: str, distribution: str | None = None, version: str = "") -> None:
    """Register an in-memory plugin object (a module or class instance with hookimpls). For tests and notebooks."""
    state = _get()
    state.load()
    state._add(plugin, name, distribution or name, version, getattr(plugin, "__name__", repr(plugin)))
    if state.infos[name].error:
        err = state.infos.pop(name).error
        raise ValueError(f"plugin {name}: {err}")


def unregister_plugin(name: str) -> None:
    state = _get()
    plugin = state.pm.get_plugin(name)
    if plugin is not None:
        state.pm.unregister(plugin)
    state.infos.pop(name, None)
    state.registries = None


def reset() -> None:
    """Forget everything loaded (the next call reloads plugins, honouring ``T2I_LOAD_PLUGINS`` again)."""
    global _state
    _state = None
