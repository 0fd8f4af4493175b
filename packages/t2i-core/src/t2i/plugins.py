"""The plugin manager: finds plugins (entry-point group ``t2i``), calls their hooks, fills the registries.

- The core's own components live in :data:`BUILTIN_PLUGINS` and register through the same hooks.
- ``T2I_LOAD_PLUGINS=a,b`` loads only those distributions (empty: none besides the core's built-ins).
- A plugin fails alone. One that fails to import, whose hook raises, or that registers something the
  registry refuses (:class:`t2i.errors.RegistrationError`) is not loaded: whatever it registered is taken
  back, the reason is kept for ``t2i plugins`` (:func:`load_errors`) and printed once as a warning.
- A hook name that does not exist (a misspelling) or a hook with the wrong arguments is skipped with a
  warning (:attr:`PluginInfo.warnings`); the plugin's valid hooks load. With no valid hook left the
  plugin is not loaded.
- A name registered by two plugins is kept once and listed by ``t2i list`` and ``t2i plugins``, but
  building it, or asking for its kind's registry, fails with a message that says how to choose
  (:meth:`t2i.registry.Registry.check`).
- :func:`without_entry_point` lists installed distributions that look like t2i plugins but declare no
  entry point, the usual reason a plugin is invisible.
- Tests add an in-memory plugin with :func:`register_plugin` and remove it with :func:`unregister_plugin`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import re
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import DuplicateComponentError, RegistrationError
from .registry import ENV_LOAD, KINDS, Registry

__all__ = [
    "BUILTIN_PLUGINS",
    "PluginInfo",
    "get_plugin_manager",
    "registry",
    "plugins",
    "load_errors",
    "conflicts",
    "without_entry_point",
    "add_commands",
    "register_plugin",
    "unregister_plugin",
    "reset",
]

BUILTIN_PLUGINS = (
    "t2i.builtins.losses",
    "t2i.builtins.data",
    "t2i.builtins.text",
    "t2i.builtins.metrics",
    "t2i.builtins.loggers",
    "t2i.builtins.commands",
)
CORE_DIST = "t2i-core"
GROUP = "t2i"  # the entry-point group
NO_ENTRY_POINT = (f"no '{GROUP}' entry point, so t2i cannot find it: add a [project.entry-points.{GROUP}] table to "
                  f"its pyproject.toml, then reinstall it")

# the hooks a plugin may implement, and the arguments each is called with
_HOOKS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(fn).parameters)
    for name, fn in vars(hookspecs).items()
    if name.startswith("t2i_") and callable(fn)
}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin module and what it registered."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None  # why it is not loaded
    warnings: list[str] = field(default_factory=list)  # what was skipped although it loaded


class _Manager(pluggy.PluginManager):
    """A pluggy manager that skips (and remembers) hook implementations it cannot call, instead of
    refusing the whole plugin: a misspelled hook name, or arguments the hook is not called with."""

    def __init__(self) -> None:
        super().__init__("t2i")
        self.skipped: list[str] = []

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None:
            return None
        hook = opts.get("specname") or name
        if hook not in _HOOKS:
            close = difflib.get_close_matches(hook, list(_HOOKS), n=1)
            self.skipped.append(f"'{hook}' is not a t2i hook" + (f" (did you mean '{close[0]}'?)" if close else ""))
            return None
        try:
            params = inspect.signature(getattr(plugin, name)).parameters.values()
        except (TypeError, ValueError):
            return opts  # pluggy decides
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = [a for a in required if a not in _HOOKS[hook]]
        if unknown:
            self.skipped.append(f"'{hook}' takes ({', '.join(required)}), but t2i calls it with "
                                f"({', '.join(_HOOKS[hook])})")
            return None
        return opts


class _State:
    def __init__(self) -> None:
        self.pm = _Manager()
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
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
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
        self.pm.skipped = []
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()
        except Exception as exc:  # pluggy.PluginValidationError: a hook pluggy refuses; ValueError: a second copy
            if self.pm.get_plugin(name) is module:
                self.pm.unregister(module)
            info.error = f"invalid plugin: {exc}"
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(module) or [])
        if self.pm.skipped and not info.hooks:
            self.pm.unregister(module)
            info.error = "; ".join(self.pm.skipped)
        elif self.pm.skipped:
            info.warnings = [f"{why}; skipped, its other hooks are loaded" for why in self.pm.skipped]
        self.registries = None

    def fail(self, name: str, reason: str) -> None:
        """Unload plugin ``name`` (its hooks are not called again) and keep ``reason`` for ``t2i plugins``."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        info = self.infos.setdefault(name, PluginInfo(name, name, "", getattr(plugin, "__name__", repr(plugin))))
        info.error, info.registered = reason, {}

    # -- registries ------------------------------------------------------------------------------------
    def fill(self) -> dict[str, Registry]:
        self.load()
        if self.registries is not None:
            return self.registries
        registries = {kind: Registry(kind) for kind in KINDS}
        for info in self.infos.values():
            info.registered = {}
        for name, plugin in self.pm.list_name_plugin():  # registration order: built-ins first
            if plugin is not None:
                self._fill_from(name, plugin, registries)
        self.registries = registries
        return registries

    def _fill_from(self, name: str, plugin: Any, registries: dict[str, Registry]) -> None:
        """Call every registration hook of one plugin; when one fails, take back all it registered."""
        info = self.infos.get(name)
        dist, version = (info.distribution, info.version) if info else (name, "")
        owner = f"{dist} {version}".strip()
        added: list[tuple[str, str]] = []
        conflicted: list[tuple[str, str]] = []

        def register(component: str, factory: Any, *, _kind: str = "", **kw: Any) -> None:
            registry = registries[_kind]
            try:
                registry.register(component, factory, plugin=dist, version=version, **kw)
            except DuplicateComponentError:  # kept once; refused when used (Registry.check)
                registry.add_conflict(component, owner)
                conflicted.append((_kind, component))
                return
            added.append((_kind, component))
            if info is not None:
                info.registered.setdefault(_kind, []).append(component)

        hook_name = ""
        try:
            for kind, (_, hook_name) in KINDS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(functools.partial(register, _kind=kind))
        except Exception as exc:  # the plugin's own code, or a registration the registry refused
            for kind, component in added:
                registries[kind].unregister(component)
            for kind, component in conflicted:
                _drop_conflict(registries[kind], component, owner)
            reason = str(exc) if isinstance(exc, RegistrationError) else f"{hook_name} raised {_describe(exc)}"
            self.fail(name, reason)


def _drop_conflict(registry: Registry, name: str, owner: str) -> None:
    owners = registry.conflicts.get(name, [])
    if owner in owners:
        owners.remove(owner)
    if len(owners) < 2:
        registry.conflicts.pop(name, None)


def _describe(exc: BaseException) -> str:
    """``ValueError: bad width (at plugin.py:12)``: the exception and the line of plugin code that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _norm(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``T2I_Fancy.GANs`` -> ``t2i-fancy-gans``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


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


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def without_entry_point() -> list[PluginInfo]:
    """Installed distributions that look like t2i plugins (the name starts with ``t2i-``/``t2i_``, or they
    depend on ``t2i-core``) but declare no entry point in group ``t2i``, each with what to do in ``error``."""
    found: dict[str, PluginInfo] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        key = _norm(name)
        if not key or key == CORE_DIST or key in found:
            continue
        requires = [r for r in dist.requires or [] if "extra" not in r.partition(";")[2]]  # not optional ones
        depends = any((m := _REQUIREMENT.match(r)) and _norm(m.group(1)) == CORE_DIST for r in requires)
        if not (key.startswith("t2i-") or depends):
            continue
        if any(ep.group == GROUP for ep in dist.entry_points):
            continue
        found[key] = PluginInfo("-", name, dist.version, "", error=NO_ENTRY_POINT)
    return sorted(found.values(), key=lambda info: _norm(info.distribution))


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


def registry(kind: str, *, check: bool = True) -> Registry:
    """The registry of ``kind`` (``"generators"``, ``"losses"``, ...), filled from every loaded plugin.

    A name registered by two plugins makes it raise :class:`t2i.errors.DuplicateComponentError` saying how
    to choose; ``check=False`` returns it anyway, for listing (``t2i list``, ``t2i plugins``, ``--help``)."""
    if kind not in KINDS:
        raise KeyError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
    reg = _get().fill()[kind]
    return reg.check() if check else reg


def plugins() -> list[PluginInfo]:
    """Every plugin t2i tried to load, built-ins first, with what each registered or why it failed."""
    state = _get()
    state.fill()
    return list(state.infos.values())


def load_errors() -> list[PluginInfo]:
    """The plugins that are not loaded, each with the reason in ``error``."""
    return [p for p in plugins() if p.error]


def conflicts() -> list[str]:
    """One message per component name that two plugins registered (it cannot be used until one goes)."""
    return [line for kind in KINDS for line in _get().fill()[kind].problems()]


def add_commands(app: Any) -> None:
    """Call every plugin's ``t2i_register_commands(app)``; a plugin whose hook raises is unloaded like any
    failed plugin, and the commands it added before raising are removed again."""
    state = _get()
    state.fill()
    for impl in state.pm.hook.t2i_register_commands.get_hookimpls():
        commands, groups = list(app.registered_commands), list(app.registered_groups)
        try:
            impl.function(app=app)
        except Exception as exc:
            app.registered_commands[:], app.registered_groups[:] = commands, groups
            state.fail(impl.plugin_name, f"t2i_register_commands raised {_describe(exc)}")
            state.registries = None  # its components go too


def register_plugin(plugin: Any, name: str, distribution: str | None = None, version: str = "") -> None:
    """Register an in-memory plugin object (a module or class instance with hookimpls). For tests and notebooks.

    A plugin that cannot load raises ``ValueError``; hooks that were skipped are Python warnings. Whether
    its hooks ran cleanly shows in :func:`load_errors` once the registries are filled."""
    state = _get()
    state.load()
    if state.pm.get_plugin(name) is not None:
        raise ValueError(f"plugin {name} is already registered; unregister_plugin({name!r}) first")
    state._add(plugin, name, distribution or name, version, getattr(plugin, "__name__", repr(plugin)))
    info = state.infos[name]
    if info.error:
        del state.infos[name]
        raise ValueError(f"plugin {name}: {info.error}")
    for line in info.warnings:
        warnings.warn(f"plugin {name}: {line}", stacklevel=2)


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
