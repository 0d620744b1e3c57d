"""DiffWave diffusion vocoder for TensorFlow/Keras 3, numerically identical to lmnt-com/diffwave.

Public names are imported on first use, so `import diffwave_vocoder` (and the CLI's start-up, and
plugin discovery) does not pay for importing TensorFlow until something needs it.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DiffWaveConfig": "config",
    "MelConvention": "features.mel",
    "compute_mel": "features.mel",
    "mel_spectrogram": "features.mel",
    "build_model": "model",
    "make_schedule": "schedule",
    "InferenceOptions": "sampler",
    "resolve_schedule": "schedule",
    "Vocoder": "vocoder",
    "convert_lmnt_checkpoint": "formats.lmnt",
    # load_vocoder takes a checkpoint path (read by Vocoder.load) or a registered vocoder name.
    "load_vocoder": "registry",
    "list_vocoders": "registry",
    "list_adapters": "registry",
    "get_adapter": "registry",
    "hookimpl": "hookspecs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffwave_vocoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
