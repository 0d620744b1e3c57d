"""The vocoder and adapter registry: a pluggy PluginManager fed by `diffwave_vocoder` entry points.

Plugins are discovered on first use from installed distributions' metadata. This package's own
vocoder and adapters (`diffwave_vocoder.builtin`) come in through the same entry points, so a third
party is on an equal footing. Discovery imports the plugin modules only; what a factory needs
(TensorFlow, librosa) is imported when the factory is called.

One plugin's failure never costs the others. A plugin that fails to import, implements a hook that
does not exist, or whose hook raises is skipped with a `PluginLoadWarning` naming it. A name that
two plugins register is withheld with a `PluginConflictWarning`, and requesting it raises a
`PluginConflictError` naming both (silently preferring one would vocode with the wrong model);
every other name stays usable.

`DIFFWAVE_VOCODER_PLUGINS` chooses the plugins: a comma-separated list of distribution names whose
plugins load besides this package's own; set but empty, only this package's own load.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from . import hookspecs
from .hookspecs import PROJECT

if TYPE_CHECKING:
    from .features.mel import MelConvention

ENTRY_POINT_GROUP = PROJECT
SELECT_ENV = "DIFFWAVE_VOCODER_PLUGINS"
OWN_DISTRIBUTION = "diffwave-vocoder"
HOOKS = {"vocoder": "register_vocoders", "adapter": "register_adapters"}


class PluginLoadWarning(UserWarning):
    """A plugin could not be imported or registered and was skipped."""


class PluginConflictWarning(UserWarning):
    """Two plugins registered one name; that name is unusable until one of them is removed."""


class PluginConflictError(ValueError):
    """A requested vocoder or adapter name is registered by more than one plugin."""


@dataclasses.dataclass(frozen=True)
class Registration:
    """One registered vocoder or adapter and where it came from."""

    name: str
    kind: str  # "vocoder" or "adapter"
    factory: Callable[..., Any]
    description: str
    plugin: str  # entry-point name
    distribution: str  # "name version" of the distribution declaring the entry point


@dataclasses.dataclass(frozen=True)
class Conflict:
    """A vocoder or adapter name claimed by several registrations, none of which is used."""

    kind: str
    name: str
    registrations: tuple[Registration, ...]

    def __str__(self) -> str:
        claims = " and ".join(f"plugin {r.plugin!r} of {r.distribution!r}" for r in self.registrations)
        return (f"{self.kind} name {self.name!r} is registered by {claims}; uninstall one of those "
                f"distributions or choose the plugins that load with {SELECT_ENV}")


def _normalize(distribution: str) -> str:
    """PEP 503 name normalisation: `dwv_fixture_plugin` and `DWV-Fixture-Plugin` are one distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _selected_distributions() -> set[str] | None:
    """The distributions `DIFFWAVE_VOCODER_PLUGINS` names, or None when it is unset (load all)."""
    value = os.environ.get(SELECT_ENV)
    if value is None:
        return None
    return {_normalize(name.strip()) for name in value.split(",") if name.strip()}


class _Registry:
    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.excluded: set[str] = set()  # distributions DIFFWAVE_VOCODER_PLUGINS leaves out
        origins = self._load_entry_points(_selected_distributions())
        self._drop_invalid(origins)
        claims: dict[tuple[str, str], list[Registration]] = {}
        for plugin_name in sorted(origins, key=lambda n: (origins[n][1], origins[n][0])):
            for entry in self._collect(plugin_name, *origins[plugin_name]):
                claims.setdefault((entry.kind, entry.name), []).append(entry)
        self.entries: dict[str, dict[str, Registration]] = {kind: {} for kind in HOOKS}
        self.conflicts: dict[str, dict[str, Conflict]] = {kind: {} for kind in HOOKS}
        for (kind, name), found in sorted(claims.items()):
            if len(found) == 1:
                self.entries[kind][name] = found[0]
            else:
                self.conflicts[kind][name] = conflict = Conflict(kind, name, tuple(found))
                warnings.warn(str(conflict), PluginConflictWarning, stacklevel=4)

    def _load_entry_points(self, selected: set[str] | None) -> dict[str, tuple[str, str]]:
        """Import and register the chosen entry points; plugin name -> (entry-point name, distribution)."""
        origins = {}
        offered = set()
        # entry_points() yields each distribution once even if it is visible twice on sys.path.
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist_name = ep.dist.metadata["Name"] if ep.dist else "unknown distribution"
            dist = f"{dist_name} {ep.dist.version}" if ep.dist else dist_name
            offered.add(_normalize(dist_name))
            if selected is not None and _normalize(dist_name) not in selected | {OWN_DISTRIBUTION}:
                self.excluded.add(dist)
                continue
            plugin_name = f"{dist_name}:{ep.name}"
            try:
                self.manager.register(ep.load(), name=plugin_name)
            except Exception as error:  # noqa: BLE001 - any failure of one plugin must not stop the others
                _warn(ep.name, dist, f"failed to load ({ep.value}): {type(error).__name__}: {error}")
                continue
            origins[plugin_name] = (ep.name, dist)
        if selected is not None and selected - offered:
            warnings.warn(f"{SELECT_ENV} names {sorted(selected - offered)}, which declare no diffwave_vocoder "
                          f"plugins; installed plugin distributions: {sorted(offered)}", PluginLoadWarning,
                          stacklevel=5)
        return origins

    def _drop_invalid(self, origins: dict[str, tuple[str, str]]) -> None:
        """Unregister plugins implementing hooks that do not exist (typos) instead of failing."""
        while True:
            try:
                self.manager.check_pending()
                return
            except pluggy.PluginValidationError as error:
                name = self.manager.get_name(error.plugin)
                self.manager.unregister(error.plugin)
                ep_name, dist = origins.pop(name)
                _warn(ep_name, dist, str(error))

    def _collect(self, plugin_name: str, ep_name: str, dist: str) -> list[Registration]:
        """What one plugin registers, through a pluggy hook caller restricted to that plugin.

        One call of `manager.hook.<name>` would run every plugin's implementation with one `register`
        callback, which cannot tell who called it, and the first raising plugin would stop the rest.
        A subset caller per plugin keeps pluggy's calling convention and says where each name came from.
        """
        plugin = self.manager.get_plugin(plugin_name)
        others = [other for other in self.manager.get_plugins() if other is not plugin]
        found: list[Registration] = []
        for kind, hook in HOOKS.items():
            call = self.manager.subset_hook_caller(hook, remove_plugins=others)
            try:
                call(register=_registrar(kind, found, ep_name, dist))
            except Exception as error:  # noqa: BLE001 - a failing hook skips that plugin only
                _warn(ep_name, dist, f"its {hook} hook failed: {type(error).__name__}: {error}")
                return []
        return found


def _registrar(kind: str, found: list[Registration], ep_name: str, dist: str) -> Callable[..., None]:
    """The `register` callback handed to one plugin's hook."""
    def register(name: str, factory: Callable[..., Any], description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise ValueError(f"{kind} {name!r}: factory must be callable, got {factory!r}")
        found.append(Registration(name, kind, factory, description, ep_name, dist))

    return register


def _warn(ep_name: str, dist: str, what: str) -> None:
    warnings.warn(f"diffwave_vocoder plugin {ep_name!r} from distribution {dist!r} was skipped: {what}",
                  PluginLoadWarning, stacklevel=5)


_registry: _Registry | None = None


def _get() -> _Registry:
    global _registry
    if _registry is None:
        _registry = _Registry()
    return _registry


def reload_plugins() -> None:
    """Discover plugins again (after installing one into a running process, or in tests)."""
    global _registry
    _registry = None
    _get()


def list_vocoders() -> dict[str, Registration]:
    """Usable vocoders by name, with description and distribution (conflicting names are left out)."""
    return dict(sorted(_get().entries["vocoder"].items()))


def list_adapters() -> dict[str, Registration]:
    """Usable mel adapters by name, with description and distribution (conflicting names are left out)."""
    return dict(sorted(_get().entries["adapter"].items()))


def list_conflicts() -> list[Conflict]:
    """Names registered by more than one plugin, which stay unusable until one plugin is removed."""
    return [conflict for table in _get().conflicts.values() for conflict in table.values()]


def list_excluded() -> list[str]:
    """Distributions ("name version") whose plugins DIFFWAVE_VOCODER_PLUGINS leaves out."""
    return sorted(_get().excluded)


def _lookup(kind: str, name: str, not_found: str | None = None) -> Registration:
    """The registration of `name`; `not_found` replaces the start of the unknown-name error."""
    registry = _get()
    if name in registry.conflicts[kind]:
        raise PluginConflictError(str(registry.conflicts[kind][name]))
    table = registry.entries[kind]
    if name not in table:
        raise ValueError(f"{not_found or f'no {kind} named {name!r} is registered'}; "
                         f"registered {kind}s: {sorted(table)}")
    return table[name]


def load_vocoder(name_or_path: str | os.PathLike, **options: Any) -> Any:
    """A vocoder from a checkpoint directory (a path) or from a registered factory (a name).

    A `Path`, a string containing a path separator, or a string naming an existing file or
    directory is a checkpoint path; anything else is a registered name, called with `options`.
    """
    if isinstance(name_or_path, os.PathLike) or (
            isinstance(name_or_path, str) and (os.sep in name_or_path or "/" in name_or_path
                                               or Path(name_or_path).exists())):
        if options:
            raise ValueError(f"options {sorted(options)} apply to registered vocoder names; a checkpoint "
                             f"path ({os.fspath(name_or_path)}) takes none")
        from .vocoder import Vocoder

        return Vocoder.load(name_or_path)
    if not isinstance(name_or_path, str):
        raise ValueError(f"expected a vocoder name or a checkpoint path, got {type(name_or_path).__name__}")
    not_found = f"{name_or_path!r} is neither an existing checkpoint directory nor a registered vocoder"
    return _lookup("vocoder", name_or_path, not_found).factory(**options)


def get_adapter(name: str, target: MelConvention | None = None, **options: Any) -> Any:
    """The registered adapter `name`, converting into `target` (default: lmnt's mel convention)."""
    from .features.mel import MelConvention

    if target is None:
        target = MelConvention()
    if not isinstance(target, MelConvention):
        raise ValueError(f"target must be a MelConvention (e.g. vocoder.mel_convention), got {type(target).__name__}")
    return _lookup("adapter", name).factory(target, **options)
