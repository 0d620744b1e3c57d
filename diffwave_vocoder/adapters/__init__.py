"""Mel adapters: convert mels from other acoustic models to a checkpoint's convention.

`MelAdapter(source, target)` does the conversion; `conventions` holds the recipes of the
toolkits a pipeline is likely to use. Each recipe is registered as an adapter by name in
`diffwave_vocoder.builtin` (see `diffwave_vocoder.registry.get_adapter`).
"""
from .conventions import CONVENTIONS, load_stats
from .mel_adapter import MelAdapter

__all__ = ["CONVENTIONS", "MelAdapter", "load_stats"]
