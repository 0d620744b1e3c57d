"""Hook specifications: how a package adds vocoders and mel adapters to diffwave_vocoder.

A plugin is a module (or object) listed under the `diffwave_vocoder` entry-point group of its
distribution, e.g. in its pyproject.toml::

    [project.entry-points.diffwave_vocoder]
    myvoc = "myvoc_pkg.plugin"

and implements one or both hooks with `diffwave_vocoder.hookimpl`. Registration must be cheap:
register factories, and load weights or build models only when the factory is called. This
package registers its own DiffWave vocoder and adapters (`diffwave_vocoder.builtin`) the same way.
"""
from __future__ import annotations

import pluggy

PROJECT = "diffwave_vocoder"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_vocoders(register) -> None:
    """Call `register(name, factory, description="")` once per vocoder.

    `factory(**options)` returns an object with `vocode(mel, steps=..., seed=..., layout=...,
    adapter=...)`, `sample_rate`, `hop_length` and `n_mels` (a `diffwave_vocoder.Vocoder` has them);
    `load_vocoder(name, **options)` calls it.
    """


@hookspec
def register_adapters(register) -> None:
    """Call `register(name, factory, description="")` once per mel adapter.

    `factory(target, **options)` returns a callable `adapter(mel, layout="tf")` that converts mels
    in the plugin's source convention to the `target` MelConvention (a vocoder's own), returning
    the same structure in (frames, n_mels) layout; `diffwave_vocoder.adapters.MelAdapter` is one.
    `get_adapter(name, target=..., **options)` calls it.
    """
