"""DiffWave hyperparameters: model sizes, mel convention and noise schedules in one config.

Model field names mirror lmnt-com/diffwave's `params.py`; the mel the conditioner takes is a whole
`MelConvention` in the `mel` field, so a vocoder can be trained on any toolkit's mel (HiFi-GAN's,
Tacotron 2's, ...) and say so. The config is stored as JSON inside every checkpoint, `"mel"` as a
nested object of all the convention's fields: whoever loads a vocoder knows exactly which mel it
expects. `stored_config` also reads the flat mel fields of format version 1.
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
# Diffusion priors: the reference's standard normal, or PriorGrad's per-frame energy prior (`prior`).
PRIORS = ("standard", "energy")
# The step embedding's fixed sizes (the reference's): a 128-wide sinusoid table, two 512-wide dense layers.
EMBEDDING_DIM = 128
EMBEDDING_HIDDEN = 512


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
    # The conditioner's input: how its mel is computed from audio (a dict of its fields is accepted).
    mel: MelConvention = MelConvention()
    # The upsampler's two transposed-convolution strides; their product must equal mel.hop_length.
    upsample_factors: tuple[int, int] | None = None
    # Diffusion.
    noise_schedule: tuple[float, ...] = REFERENCE_NOISE_SCHEDULE
    inference_noise_schedule: tuple[float, ...] = REFERENCE_FAST_SCHEDULE
    # Length of generated audio for the unconditional model (reference: 5 s at 22.05 kHz).
    audio_len: int = 22050 * 5
    # The diffusion's prior. "standard": N(0, I), the reference's. "energy": PriorGrad's N(0, diag(s^2)),
    # s per mel frame from its energy mapped linearly from `prior_energy_range` onto [0, 1], at least
    # `prior_std_min` (see `prior`); the range is fixed per model (the trainer measures it on its data).
    prior: str = "standard"
    prior_energy_range: tuple[float, float] | None = None
    prior_std_min: float = 0.1

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if isinstance(self.mel, dict):
            set_("mel", MelConvention.from_dict(self.mel))
        if not isinstance(self.mel, MelConvention):
            raise ValueError(f"mel must be a MelConvention or a dict of its fields, got {type(self.mel).__name__}")
        set_("noise_schedule", tuple(float(b) for b in self.noise_schedule))
        set_("inference_noise_schedule", tuple(float(b) for b in self.inference_noise_schedule))
        if self.upsample_factors is None:
            set_("upsample_factors", _default_upsample_factors(self.hop_length))
        set_("upsample_factors", tuple(int(f) for f in self.upsample_factors))
        for name in ("residual_channels", "residual_layers", "dilation_cycle_length", "audio_len"):
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
        self._check_prior()

    def _check_prior(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {list(PRIORS)}, got {self.prior!r}")
        if self.prior == "energy" and self.unconditional:
            raise ValueError("prior 'energy' needs a conditional (mel) model: its std comes from the mel")
        if not (isinstance(self.prior_std_min, (int, float)) and 0.0 < self.prior_std_min <= 1.0):
            raise ValueError(f"prior_std_min must be in (0, 1], got {self.prior_std_min!r}")
        object.__setattr__(self, "prior_std_min", float(self.prior_std_min))
        if self.prior_energy_range is not None:
            energies = tuple(self.prior_energy_range)
            if (len(energies) != 2 or not all(isinstance(e, (int, float)) and math.isfinite(e) for e in energies)
                    or not 0.0 <= energies[0] < energies[1]):
                raise ValueError("prior_energy_range must be two finite energies 0 <= low < high, "
                                 f"got {self.prior_energy_range!r}")
            object.__setattr__(self, "prior_energy_range", tuple(float(e) for e in energies))

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame (the upsampler's total stride)."""
        return self.mel.hop_length

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

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

    def replace(self, **changes: Any) -> "DiffWaveConfig":
        return dataclasses.replace(self, **changes)

    def with_mel(self, mel: MelConvention) -> "DiffWaveConfig":
        """This model on another mel: the upsample factors are kept while they still multiply to the
        new hop, else they become the default split of it."""
        keep = math.prod(self.upsample_factors) == mel.hop_length
        return self.replace(mel=mel, upsample_factors=self.upsample_factors if keep else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, `"mel"` as the nested dict of the convention's fields; `from_dict` inverts it."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        data["mel"] = self.mel.to_dict()
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


# Format version 1 stored the mel as flat config fields; their names in MelConvention.
_V1_MEL_FIELDS = {
    "n_mels": "n_mels", "hop_length": "hop_length", "sample_rate": "sample_rate", "n_fft": "n_fft",
    "win_length": "win_length", "fmin": "fmin", "fmax": "fmax", "mel_scale": "mel_scale",
    "mel_norm": "mel_norm", "mel_compression": "compression",
}


def stored_config(data: dict[str, Any]) -> DiffWaveConfig:
    """The config a checkpoint's (or --config file's) JSON object holds, in either stored form.

    Format version 2 nests the convention under `"mel"`; version 1 had the flat fields of
    `_V1_MEL_FIELDS` (the other convention fields were lmnt's fixed recipe, MelConvention's
    defaults), which are moved into the nested form here.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a config must be a JSON object, got {type(data).__name__}")
    flat = [key for key in _V1_MEL_FIELDS if key in data]
    if flat:
        if "mel" in data:
            raise ValueError(f"config has both a nested 'mel' and the flat mel field(s) {flat} of format "
                             "version 1; give the mel fields inside 'mel' only")
        mel = {_V1_MEL_FIELDS[key]: data[key] for key in flat}
        data = {key: value for key, value in data.items() if key not in _V1_MEL_FIELDS}
        data["mel"] = mel
    return DiffWaveConfig.from_dict(data)


def reference_params_to_config(params: dict[str, Any], **overrides: Any) -> DiffWaveConfig:
    """Map lmnt-com/diffwave's `params` AttrDict (as a plain dict) onto a DiffWaveConfig.

    Fields the reference does not have keep our (= the reference's) defaults; fields we do not
    model (batch_size, learning_rate, crop_mel_frames, ...) are training settings and are ignored.
    `overrides` are DiffWaveConfig fields or, for the mel, MelConvention fields (hop_length, ...).
    """
    mapping = {
        "residual_channels": "residual_channels", "residual_layers": "residual_layers",
        "dilation_cycle_length": "dilation_cycle_length", "unconditional": "unconditional",
        "noise_schedule": "noise_schedule", "inference_noise_schedule": "inference_noise_schedule",
        "audio_len": "audio_len",
    }
    mel_mapping = {"n_mels": "n_mels", "hop_samples": "hop_length", "sample_rate": "sample_rate", "n_fft": "n_fft"}
    values = {ours: params[theirs] for theirs, ours in mapping.items() if theirs in params}
    mel = {ours: params[theirs] for theirs, ours in mel_mapping.items() if theirs in params}
    mel_fields = {f.name for f in dataclasses.fields(MelConvention)}
    mel.update({key: value for key, value in overrides.items() if key in mel_fields})
    values.update({key: value for key, value in overrides.items() if key not in mel_fields})
    if "hop_length" in mel:
        # The reference derives the STFT window from the hop (preprocess.py: win_length = 4 * hop).
        mel.setdefault("win_length", 4 * mel["hop_length"])
    return DiffWaveConfig(mel=MelConvention(**mel), **values)


__all__ = ["DiffWaveConfig", "PRIORS", "reference_params_to_config", "stored_config", "REFERENCE_NOISE_SCHEDULE",
           "REFERENCE_FAST_SCHEDULE"]
