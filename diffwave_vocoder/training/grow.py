"""Deepen a trained vocoder without changing what it computes, so training can go on with more capacity.

Residual layers are appended after the last one (their dilations continue the config's cycle). Each
new layer's output projection starts at zero: it adds nothing to the skip sum, and the residual
stream it passes on is never read by the old layers. The network divides the skip sum by
sqrt(residual_layers), so the skip projection's kernel is scaled by sqrt(new / old) to keep the
output equal. The new layers' other weights take the reference's initialisation; they begin to
learn once their output projections move away from zero.
"""
from __future__ import annotations

import math

import numpy as np

from ..vocoder import Vocoder


def grow(vocoder: Vocoder, residual_layers: int, seed: int = 0) -> Vocoder:
    """A vocoder with `residual_layers` layers whose output equals `vocoder`'s (up to float rounding).

    `seed` draws the new layers' initial weights. The metadata keeps the source's provenance (so
    total training steps still count it) and records the growth under "grown_from".
    """
    old = vocoder.config.residual_layers
    if residual_layers <= old:
        raise ValueError(f"cannot grow to {residual_layers} residual layers: the checkpoint already has {old}; "
                         "expected more")
    config = vocoder.config.replace(residual_layers=residual_layers)
    grown = Vocoder.from_config(config, seed=seed)
    source = {weight.path: weight for weight in vocoder.model.weights}
    for weight in grown.model.weights:
        if weight.path in source:
            value = source[weight.path].numpy()
            if weight.path == "skip_projection/kernel":
                value = value * np.float32(math.sqrt(residual_layers / old))
            weight.assign(value)
        elif "/output_projection/" in weight.path:
            weight.assign(np.zeros(weight.shape, weight.dtype))
    grown.metadata = {**vocoder.metadata, "grown_from": {"residual_layers": old, "seed": seed}}
    return grown
