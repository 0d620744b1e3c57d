"""Noise schedules: the cumulative noise levels and the reference's fast-sampling alignment.

Training (the noise level of each training step) and inference (which training step each inference
step matches, and its update coefficients) both start from cumprod(1 - beta) over a schedule,
computed here once, in float64 as the reference's numpy code does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from .config import DiffWaveConfig


def cumulative_alphas(betas: Sequence[float]) -> np.ndarray:
    """cumprod(1 - beta) in float64, as the reference computes it."""
    return np.cumprod(1.0 - np.asarray(betas, np.float64))


def noise_levels(config: DiffWaveConfig) -> np.ndarray:
    """The training schedule's cumulative noise levels as the reference's learner uses them:
    float64 product, then float32."""
    return cumulative_alphas(config.noise_schedule).astype(np.float32)


Steps = Union[str, Sequence[float]]


@dataclass(frozen=True)
class Schedule:
    """An inference schedule aligned to the training schedule (reference inference.py, fast sampling).

    `steps[n]` is the (possibly fractional) training step whose noise level matches inference step
    n; c1, c2 and sigma are the per-step update coefficients, rounded to float32 as torch does.
    """

    betas: np.ndarray
    steps: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    sigma: np.ndarray

    def __len__(self) -> int:
        return len(self.betas)


def make_schedule(training_betas: Sequence[float], betas: Sequence[float]) -> Schedule:
    """Align the inference schedule `betas` to the training schedule (the reference's fast sampling)."""
    train_alpha_cum = cumulative_alphas(training_betas)
    beta = np.asarray(betas, np.float64)
    if beta.ndim != 1 or beta.size == 0 or not np.all((beta > 0) & (beta < 1)):
        raise ValueError(f"an inference schedule must be a non-empty list of betas in (0, 1), got {list(betas)}")
    alpha = 1.0 - beta
    alpha_cum = cumulative_alphas(beta)
    steps = []
    for s, level in enumerate(alpha_cum):
        for t in range(len(train_alpha_cum) - 1):
            if train_alpha_cum[t + 1] <= level <= train_alpha_cum[t]:
                twiddle = ((train_alpha_cum[t] ** 0.5 - level ** 0.5)
                           / (train_alpha_cum[t] ** 0.5 - train_alpha_cum[t + 1] ** 0.5))
                steps.append(t + twiddle)
                break
        else:
            # The reference silently drops such a step and misaligns the rest.
            raise ValueError(
                f"inference step {s} reaches noise level alpha_cum={level:.6g}, outside the training "
                f"schedule's range [{train_alpha_cum[-1]:.6g}, {train_alpha_cum[0]:.6g}]; "
                "use betas whose cumulative product stays inside it")
    sigma = np.zeros_like(beta)
    sigma[1:] = np.sqrt((1.0 - alpha_cum[:-1]) / (1.0 - alpha_cum[1:]) * beta[1:])
    return Schedule(betas=beta, steps=np.asarray(steps, np.float32),
                    c1=(1.0 / np.sqrt(alpha)).astype(np.float32),
                    c2=(beta / np.sqrt(1.0 - alpha_cum)).astype(np.float32),
                    sigma=sigma.astype(np.float32))


def resolve_schedule(config: DiffWaveConfig, steps: Steps) -> Schedule:
    """'fast' (the config's inference schedule), 'full' (the training schedule) or explicit betas."""
    if isinstance(steps, str):
        if steps == "fast":
            betas = config.inference_noise_schedule
        elif steps == "full":
            betas = config.noise_schedule
        else:
            raise ValueError(f"steps must be 'fast', 'full' or a list of betas, got {steps!r}")
    else:
        betas = [float(b) for b in steps]
    return make_schedule(config.noise_schedule, betas)


def drawable_levels(config: DiffWaveConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every noise level training can draw, as (cumulative alpha, the network's step input), float32:
    the training schedule's steps 0..N-1 (at their own step), then the inference schedule's levels at
    their aligned fractional steps, where fast sampling runs the network."""
    fast = resolve_schedule(config, "fast")
    levels = np.concatenate([noise_levels(config), cumulative_alphas(fast.betas).astype(np.float32)])
    steps = np.concatenate([np.arange(len(config.noise_schedule), dtype=np.float32), fast.steps])
    return levels, steps


__all__ = ["Schedule", "Steps", "cumulative_alphas", "noise_levels", "make_schedule", "resolve_schedule",
           "drawable_levels"]
