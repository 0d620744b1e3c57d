"""DiffWave hyperparameters: model sizes, mel convention and noise schedules in one config.

Field names mirror lmnt-com/diffwave's `params.py` (with `hop_length` for its `hop_samples`), so a
reference `params` dict converts field for field. The config is stored as JSON inside every
checkpoint: whoever loads a vocoder knows exactly which mel it expects.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .features.mel import MelConvention

# The reference's training and fast-inference schedules (params.py, 0.1.7 and master).
REFERENCE_NOISE_SCHEDULE: tuple[float, ...] = tuple(np.linspace(1e-4, 0.05, 50).tolist())
REFERENCE_FAST_SCHEDULE: tuple[float, ...] = (0.0001, 0.001, 0.01, 0.05, 0.2, 0.5)


def _default_upsample_factors(hop_length: int) -> tuple[int, int]:
    """Split the hop into two upsampler strides, as close to each other as possible (256 -> 16x16)."""
    best = (1, hop_length)
    for a in range(1, int(math.isqrt(hop_length)) + 1):
        if hop_length % a == 0:
            best = (a, hop_length // a)
    return best[1], best[0]


@dataclass(frozen=True)
class DiffWaveConfig:
    """Everything needed to rebuild a DiffWave vocoder; the defaults are the reference's."""

    residual_channels: int = 64
    residual_layers: int = 30
    dilation_cycle_length: int = 10
    unconditional: bool = False
    # Mel convention (the conditioner's input).
    n_mels: int = 80
    hop_length: int = 256
    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    fmin: float = 20.0
    fmax: float | None = None  # None: sample_rate / 2
    mel_scale: str = "htk"
    mel_norm: str | None = None
    mel_compression: str = "lmnt"
    # The upsampler's two transposed-convolution strides; their product must equal hop_length.
    upsample_factors: tuple[int, int] | None = None
    # Diffusion.
    noise_schedule: tuple[float, ...] = REFERENCE_NOISE_SCHEDULE
    inference_noise_schedule: tuple[float, ...] = REFERENCE_FAST_SCHEDULE
    # Length of generated audio for the unconditional model (reference: 5 s at 22.05 kHz).
    audio_len: int = 22050 * 5

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("noise_schedule", tuple(float(b) for b in self.noise_schedule))
        set_("inference_noise_schedule", tuple(float(b) for b in self.inference_noise_schedule))
        if self.upsample_factors is None:
            set_("upsample_factors", _default_upsample_factors(self.hop_length))
        set_("upsample_factors", tuple(int(f) for f in self.upsample_factors))
        for name in ("residual_channels", "residual_layers", "dilation_cycle_length", "n_mels",
                     "hop_length", "sample_rate", "n_fft", "win_length", "audio_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(self.upsample_factors) != 2 or math.prod(self.upsample_factors) != self.hop_length:
            raise ValueError(
                f"upsample_factors must be two strides whose product is hop_length={self.hop_length}, "
                f"got {self.upsample_factors}")
        for name in ("noise_schedule", "inference_noise_schedule"):
            betas = getattr(self, name)
            if not betas or not all(0.0 < b < 1.0 for b in betas):
                raise ValueError(f"{name} must be a non-empty list of betas in (0, 1), got {list(betas)}")
        self.mel_convention()  # validates the mel fields

    @property
    def max_steps(self) -> int:
        """Number of training diffusion steps (rows of the step-embedding table)."""
        return len(self.noise_schedule)

    @property
    def dilations(self) -> tuple[int, ...]:
        """Each residual layer's dilation: doubling within a cycle, as the reference's."""
        return tuple(2 ** (i % self.dilation_cycle_length) for i in range(self.residual_layers))

    @property
    def receptive_field(self) -> int:
        """Samples one network evaluation can see on each side of an output sample."""
        return sum(self.dilations)

    def mel_convention(self) -> MelConvention:
        return MelConvention(
            sample_rate=self.sample_rate, n_fft=self.n_fft, win_length=self.win_length,
            hop_length=self.hop_length, n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax,
            mel_scale=self.mel_scale, mel_norm=self.mel_norm, compression=self.mel_compression)

    def replace(self, **changes: Any) -> "DiffWaveConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffWaveConfig":
        return strict_from_dict(cls, data, "config field")

    @classmethod
    def from_json(cls, text: str) -> "DiffWaveConfig":
        return cls.from_dict(json.loads(text))


def strict_from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build a dataclass from a dict; unknown keys are an error so that a typo never goes unnoticed."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; expected a subset of {sorted(known)}")
    return cls(**data)


def reference_params_to_config(params: dict[str, Any], **overrides: Any) -> DiffWaveConfig:
    """Map lmnt-com/diffwave's `params` AttrDict (as a plain dict) onto a DiffWaveConfig.

    Fields the reference does not have keep our (= the reference's) defaults; fields we do not
    model (batch_size, learning_rate, crop_mel_frames, ...) are training settings and are ignored.
    """
    mapping = {
        "residual_channels": "residual_channels", "residual_layers": "residual_layers",
        "dilation_cycle_length": "dilation_cycle_length", "unconditional": "unconditional",
        "n_mels": "n_mels", "hop_samples": "hop_length", "sample_rate": "sample_rate",
        "n_fft": "n_fft", "noise_schedule": "noise_schedule",
        "inference_noise_schedule": "inference_noise_schedule", "audio_len": "audio_len",
    }
    values = {ours: params[theirs] for theirs, ours in mapping.items() if theirs in params}
    if "hop_length" in values:
        # The reference derives the STFT window from the hop (preprocess.py: win_length = 4 * hop).
        values.setdefault("win_length", 4 * values["hop_length"])
    values.update(overrides)
    return DiffWaveConfig(**values)


__all__ = ["DiffWaveConfig", "reference_params_to_config", "REFERENCE_NOISE_SCHEDULE",
           "REFERENCE_FAST_SCHEDULE"]
