"""PriorGrad's data-dependent prior (Lee et al., arXiv 2106.06406), an option beside the reference's N(0, I).

Why: with the standard prior the network must turn unit-variance noise into speech whose loudness
changes by orders of magnitude between frames. With `DiffWaveConfig.prior = "energy"` the diffusion's
noise is N(0, diag(s^2)) instead, s a per-frame std that follows the mel frame's energy, so quiet
frames start quiet and the network only has to model what the mel does not already say; PriorGrad
reports faster convergence and better quality at the same step. Training draws its noise as s * eps
and weights the loss by 1 / s (the prior's Mahalanobis distance); sampling starts from s * z and
adds s-scaled noise at every step. s depends only on a sample's own mel frame, so batching,
padding, chunking and streaming give the same audio as with the standard prior.

A frame's energy is sqrt(sum of its linear mel magnitudes) (PriorGrad's), s = its position in
`prior_energy_range` (0 at the low end, 1 at the high end), floored at `prior_std_min`. The same
functions build graph ops when given `xp = tensorflow.experimental.numpy` and a tensor, so an
exported model computes s from its input mel.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .config import DiffWaveConfig
from .features.mel import MelConvention, decompress


def frame_energy(mel, convention: MelConvention, xp=np):
    """Energy of each frame of a compressed mel (..., frames, n_mels): shape (..., frames)."""
    return xp.sqrt(xp.sum(decompress(mel, convention, xp), axis=-1))


def energy_range(mels: Iterable[np.ndarray], convention: MelConvention) -> tuple[float, float]:
    """(lowest, highest) frame energy over mels (frames, n_mels): the range a model's prior maps onto [0, 1]."""
    low, high = np.inf, -np.inf
    for mel in mels:
        if len(mel):
            energy = frame_energy(mel, convention)
            low, high = min(low, float(energy.min())), max(high, float(energy.max()))
    if not np.isfinite(low) or high <= low:
        raise ValueError(f"cannot measure the prior's energy range: frame energies span [{low}, {high}]")
    return low, high


def uses_prior(config: DiffWaveConfig) -> bool:
    return config.prior != "standard"


def prior_std(mel, config: DiffWaveConfig, xp=np):
    """The prior's std per frame (..., frames) as float32 for a compressed mel (..., frames, n_mels);
    ones for the standard prior. With xp = tensorflow.experimental.numpy, a tensor (graph-ready)."""
    if not uses_prior(config):
        return xp.ones_like(xp.asarray(mel, xp.float32)[..., 0])
    if config.prior_energy_range is None:
        raise ValueError("this vocoder's config has prior 'energy' but no prior_energy_range; a trained model "
                         "records the range its trainer measured")
    low, high = config.prior_energy_range
    std = (frame_energy(mel, config.mel, xp) - low) / (high - low)
    return xp.asarray(xp.maximum(std, config.prior_std_min), xp.float32)


def sample_std(frame_std, hop_length: int, xp=np):
    """The prior's std per sample (..., frames * hop_length) from its std per frame: a frame's
    std holds for each of its hop_length samples, as the mel frame conditions them."""
    return xp.repeat(frame_std, hop_length, axis=-1)


__all__ = ["frame_energy", "energy_range", "prior_std", "sample_std", "uses_prior"]
