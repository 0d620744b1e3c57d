"""The vocoder and adapter registry: pluggy hooks fed by `diffwave_vocoder` entry points.

Plugins are discovered lazily on first use from installed distributions' metadata; this package's
own DiffWave vocoder and adapters come in through the same entry points (pyproject.toml), so a
third party is on an equal footing. A plugin that fails to import, or whose hook fails, is skipped
with a `PluginLoadWarning` naming it; two plugins claiming one name is a `PluginConflictError`
naming both distributions (silently preferring one would vocode with the wrong model).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import pluggy

from . import hookspecs
from .hookspecs import PROJECT, hookimpl
from .features.mel import MelConvention

ENTRY_POINT_GROUP = PROJECT
HOOKS = {"vocoder": "register_vocoders", "adapter": "register_adapters"}


class PluginLoadWarning(UserWarning):
    """A plugin could not be imported or registered and was skipped."""


class PluginConflictError(ValueError):
    """Two plugins registered the same vocoder or adapter name."""


@dataclasses.dataclass(frozen=True)
class Registration:
    """One registered vocoder or adapter and where it came from."""

    name: str
    kind: str  # "vocoder" or "adapter"
    factory: Callable[..., Any]
    description: str
    plugin: str  # entry-point name
    distribution: str  # "name version" of the distribution declaring the entry point


class _Registry:
    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.entries: dict[str, dict[str, Registration]] = {kind: {} for kind in HOOKS}
        origins = self._load_entry_points()
        self._drop_invalid(origins)
        for plugin_name in sorted(origins, key=lambda n: (origins[n][1], origins[n][0])):
            self._collect(plugin_name, *origins[plugin_name])

    def _load_entry_points(self) -> dict[str, tuple[str, str]]:
        """Import and register every entry point; plugin name -> (entry-point name, distribution)."""
        origins = {}
        # entry_points() yields each distribution once even if it is visible twice on sys.path.
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = f"{ep.dist.metadata['Name']} {ep.dist.version}" if ep.dist else "unknown distribution"
            try:
                plugin = ep.load()
                plugin_name = f"{dist.split()[0]}:{ep.name}"
                self.manager.register(plugin, name=plugin_name)
            except Exception as error:  # noqa: BLE001 - any failure of one plugin must not stop the others
                _warn(ep.name, dist, f"failed to load ({ep.value}): {type(error).__name__}: {error}")
                continue
            origins[plugin_name] = (ep.name, dist)
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

    def _collect(self, plugin_name: str, ep_name: str, dist: str) -> None:
        plugin = self.manager.get_plugin(plugin_name)
        found: list[Registration] = []
        for kind, hook in HOOKS.items():
            # Call this plugin's implementations one by one so each registration knows its origin.
            impls = [impl for impl in getattr(self.manager.hook, hook).get_hookimpls() if impl.plugin is plugin]
            try:
                for impl in impls:
                    register = _registrar(kind, found, ep_name, dist)
                    impl.function(**({"register": register} if "register" in impl.argnames else {}))
            except Exception as error:  # noqa: BLE001 - a failing hook skips that plugin only
                _warn(ep_name, dist, f"its {hook} hook failed: {type(error).__name__}: {error}")
                return
        for entry in found:
            table = self.entries[entry.kind]
            if entry.name in table:
                first = table[entry.name]
                raise PluginConflictError(
                    f"{entry.kind} name {entry.name!r} is registered twice: by plugin {first.plugin!r} of "
                    f"distribution {first.distribution!r} and by plugin {entry.plugin!r} of distribution "
                    f"{entry.distribution!r}; uninstall one of the two distributions")
            table[entry.name] = entry


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
                  PluginLoadWarning, stacklevel=4)


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


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager with every loaded plugin (for listing hooks and tracing)."""
    return _get().manager


def list_vocoders() -> dict[str, Registration]:
    """Registered vocoders by name, with description and distribution."""
    return dict(sorted(_get().entries["vocoder"].items()))


def list_adapters() -> dict[str, Registration]:
    """Registered mel adapters by name, with description and distribution."""
    return dict(sorted(_get().entries["adapter"].items()))


def _lookup(kind: str, name: str) -> Registration:
    table = _get().entries[kind]
    if name not in table:
        raise ValueError(f"no {kind} named {name!r} is registered; registered {kind}s: {sorted(table)}")
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
        from .vocoder import load_vocoder as load_checkpoint

        return load_checkpoint(name_or_path)
    if not isinstance(name_or_path, str):
        raise ValueError(f"expected a vocoder name or a checkpoint path, got {type(name_or_path).__name__}")
    if name_or_path not in _get().entries["vocoder"]:
        raise ValueError(f"{name_or_path!r} is neither an existing checkpoint directory nor a registered vocoder; "
                         f"registered vocoders: {sorted(_get().entries['vocoder'])}")
    return _lookup("vocoder", name_or_path).factory(**options)


def get_adapter(name: str, target: MelConvention | None = None, **options: Any) -> Any:
    """The registered adapter `name`, converting into `target` (default: lmnt's mel convention)."""
    if target is None:
        target = MelConvention()
    if not isinstance(target, MelConvention):
        raise ValueError(f"target must be a MelConvention (e.g. vocoder.mel_convention), got {type(target).__name__}")
    return _lookup("adapter", name).factory(target, **options)


# --- this package's own vocoder, registered through its `diffwave` entry point --------------------

def _diffwave(checkpoint: str | os.PathLike | None = None, config: Any = None, seed: int | None = None,
              preset: str | None = None) -> Any:
    """DiffWave from `checkpoint=` (a directory written by Vocoder.save), from a shipped `preset=`,
    or randomly initialised from `config=` (a DiffWaveConfig or a dict of its fields; `seed` fixes
    the weights). With none of them: the shipped default vocoder."""
    from .config import DiffWaveConfig
    from .pretrained import DEFAULT_PRESET, preset_path
    from .vocoder import Vocoder, load_vocoder as load_checkpoint

    given = [name for name, value in (("checkpoint", checkpoint), ("preset", preset)) if value is not None]
    if config is not None or seed is not None:
        given.append("config/seed")
    if len(given) > 1:
        raise ValueError(f"give one of checkpoint= (trained weights), preset= (a shipped vocoder) or "
                         f"config=/seed= (random init), got {' and '.join(given)}")
    if checkpoint is not None:
        return load_checkpoint(checkpoint)
    if config is None and seed is None:
        return load_checkpoint(preset_path(preset or DEFAULT_PRESET))
    if config is None:
        raise ValueError("seed= initialises a random model and needs config= (a DiffWaveConfig or dict)")
    if isinstance(config, dict):
        config = DiffWaveConfig.from_dict(config)
    if not isinstance(config, DiffWaveConfig):
        raise ValueError(f"config must be a DiffWaveConfig or a dict, got {type(config).__name__}")
    return Vocoder.from_config(config, seed=seed)


@hookimpl(specname="register_vocoders")
def _register_diffwave(register) -> None:
    register("diffwave", _diffwave, description="DiffWave (lmnt-com/diffwave architecture) in Keras 3; "
                                                "the shipped default vocoder unless checkpoint=, preset= or config=")
