"""This package's own plugin: the DiffWave vocoder and the mel adapters of common TTS toolkits.

It is declared under the `diffwave_vocoder` entry-point group in pyproject.toml, exactly as a
third-party plugin is, and gets no privileges in the registry. Registering imports nothing heavy:
TensorFlow and librosa are imported when a factory is called, so listing plugins stays fast.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Callable

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .adapters import MelAdapter
    from .features.mel import MelConvention
    from .config import DiffWaveConfig
    from .vocoder import Vocoder

# One adapter per recipe in `diffwave_vocoder.adapters.CONVENTIONS`, described here so that listing
# them does not import the recipes (and with them librosa).
ADAPTER_DESCRIPTIONS = {
    "lmnt": "lmnt-com/diffwave's own mel (identity for the reference checkpoints)",
    "tacotron2": "NVIDIA Tacotron 2: slaney 0-8 kHz, ln(clamp(mel, 1e-5))",
    "hifigan": "jik876/hifi-gan: as Tacotron 2, frames padded (n_fft-hop)/2 and half a hop later",
    "parallel_wavegan": "ParallelWaveGAN: log10, 80-7600 Hz; stats=stats.h5/.npy for z-scored input",
    "espnet": "ESPnet2 TTS: log10, 80-7600 Hz; stats=feats_stats.npz for GlobalMVN-normalised input",
    "coqui": "Coqui TTS AudioProcessor (its audio config keys; default symmetric [-4, 4] dB norm)",
    "tensorflowtts": "TensorFlowTTS: log10, 80-7600 Hz; stats=stats.npy for normalised input",
    "nemo": "NVIDIA NeMo FastPitch (v1.05, released checkpoints): symmetric Hann, ln(mel + 1e-5)",
    "nemo_22050": "NVIDIA NeMo fastpitch_22050 configs: no area norm, 0-11025 Hz, ln(mel + 1)",
    "speechbrain": "SpeechBrain HiFi-GAN/DiffWave recipes: slaney 0-8 kHz, ln(clamp(mel, 1e-5))",
}


def diffwave(checkpoint: str | os.PathLike | None = None, config: DiffWaveConfig | dict | None = None,
             seed: int | None = None, preset: str | None = None) -> Vocoder:
    """DiffWave from `checkpoint=` (a directory written by Vocoder.save), from a shipped `preset=`,
    or randomly initialised from `config=` (a DiffWaveConfig or a dict of its fields; `seed` fixes
    the weights). With none of them: the shipped default vocoder."""
    from .config import DiffWaveConfig
    from .pretrained import DEFAULT_PRESET, preset_path
    from .vocoder import Vocoder

    given = [name for name, value in (("checkpoint", checkpoint), ("preset", preset)) if value is not None]
    if config is not None or seed is not None:
        given.append("config/seed")
    if len(given) > 1:
        raise ValueError(f"give one of checkpoint= (trained weights), preset= (a shipped vocoder) or "
                         f"config=/seed= (random init), got {' and '.join(given)}")
    if checkpoint is not None:
        return Vocoder.load(checkpoint)
    if config is None and seed is None:
        return Vocoder.load(preset_path(preset or DEFAULT_PRESET))
    if config is None:
        raise ValueError("seed= initialises a random model and needs config= (a DiffWaveConfig or dict)")
    if isinstance(config, dict):
        config = DiffWaveConfig.from_dict(config)
    if not isinstance(config, DiffWaveConfig):
        raise ValueError(f"config must be a DiffWaveConfig or a dict, got {type(config).__name__}")
    return Vocoder.from_config(config, seed=seed)


def _convention(name: str, recipe: Callable[..., MelConvention], options: dict[str, Any]) -> MelConvention:
    from .features.mel import MelConvention

    try:
        return recipe(**options)
    except TypeError as error:  # an unknown keyword: say what is accepted
        fields = sorted(f.name for f in dataclasses.fields(MelConvention))
        raise ValueError(f"adapter {name!r} got an unsupported option ({error}); it accepts "
                         f"method, extend_db, the keywords of {recipe.__name__}() and MelConvention "
                         f"fields {fields}") from None


def _toolkit_adapter(name: str) -> Callable[..., MelAdapter]:
    """The factory of the adapter from toolkit `name`'s recipe (`adapters.CONVENTIONS[name]`)."""
    def factory(target: MelConvention, method: str = "pinv", extend_db: float | None = -10.0,
                **options: Any) -> MelAdapter:
        from .adapters import CONVENTIONS, MelAdapter

        return MelAdapter(_convention(name, CONVENTIONS[name], options), target, method=method,
                          extend_db=extend_db, name=name)

    factory.__doc__ = (f"{ADAPTER_DESCRIPTIONS[name]}. Options: MelAdapter's method/extend_db and the "
                       f"keywords of diffwave_vocoder.adapters.CONVENTIONS[{name!r}].")
    return factory


def generic(target: MelConvention, source: MelConvention | dict | None = None, method: str = "pinv",
            extend_db: float | None = -10.0, **fields: Any) -> MelAdapter:
    """An adapter from explicit convention parameters: `source=` a MelConvention or a dict of its
    fields, or the fields as keywords (unset fields keep lmnt's values)."""
    from .adapters import MelAdapter
    from .features.mel import MelConvention

    if source is not None and fields:
        raise ValueError(f"give the source convention either as source= or as fields, not both (got {sorted(fields)})")
    if isinstance(source, dict) or source is None:
        source = _convention("generic", MelConvention, source if isinstance(source, dict) else fields)
    return MelAdapter(source, target, method=method, extend_db=extend_db, name="generic")


@hookimpl
def register_vocoders(register) -> None:
    register("diffwave", diffwave, description="DiffWave (lmnt-com/diffwave architecture) in Keras 3; "
                                               "the shipped default vocoder unless checkpoint=, preset= or config=")


@hookimpl
def register_adapters(register) -> None:
    for name, description in ADAPTER_DESCRIPTIONS.items():
        register(name, _toolkit_adapter(name), description=description)
    register("generic", generic, description="any convention, from explicit MelConvention parameters")
