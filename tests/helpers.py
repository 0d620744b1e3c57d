"""Helpers shared by test modules (imported as `helpers`; fixtures stay in conftest.py)."""
from __future__ import annotations

import numpy as np

from diffwave_vocoder import DiffWaveConfig, Vocoder


def audible_vocoder(config: DiffWaveConfig, seed: int, std: float) -> Vocoder:
    """A randomly initialised vocoder whose output layer (zero-initialised, as the reference's) is
    drawn from N(0, std), so that its outputs vary with the noise and the mel."""
    vocoder = Vocoder.from_config(config, seed=seed)
    layer = vocoder.model.get_layer("output_projection")
    layer.set_weights([np.random.default_rng(seed).normal(0, std, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return vocoder
