"""The built-in adapters, registered through the package's own `diffwave_vocoder` entry point."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..hookspecs import hookimpl
from ..features.mel import MelConvention
from .conventions import CONVENTIONS
from .mel_adapter import MelAdapter

DESCRIPTIONS = {
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


def _convention(name: str, recipe: Callable[..., MelConvention], options: dict[str, Any]) -> MelConvention:
    try:
        return recipe(**options)
    except TypeError as error:  # an unknown keyword: say what is accepted
        fields = sorted(f.name for f in dataclasses.fields(MelConvention))
        raise ValueError(f"adapter {name!r} got an unsupported option ({error}); it accepts "
                         f"method, extend_db, the keywords of {recipe.__name__}() and MelConvention "
                         f"fields {fields}") from None


def _factory(name: str, recipe: Callable[..., MelConvention]) -> Callable[..., MelAdapter]:
    def factory(target: MelConvention, method: str = "pinv", extend_db: float | None = -10.0,
                **options: Any) -> MelAdapter:
        return MelAdapter(_convention(name, recipe, options), target, method=method, extend_db=extend_db,
                          name=name)

    factory.__doc__ = f"{DESCRIPTIONS[name]}. Options: MelAdapter's method/extend_db and {recipe.__name__}()'s."
    return factory


def generic(target: MelConvention, source: MelConvention | dict | None = None, method: str = "pinv",
            extend_db: float | None = -10.0, **fields: Any) -> MelAdapter:
    """An adapter from explicit convention parameters: `source=` a MelConvention or a dict of its
    fields, or the fields as keywords (unset fields keep lmnt's values)."""
    if source is not None and fields:
        raise ValueError(f"give the source convention either as source= or as fields, not both (got {sorted(fields)})")
    if isinstance(source, dict) or source is None:
        source = _convention("generic", MelConvention, source if isinstance(source, dict) else fields)
    return MelAdapter(source, target, method=method, extend_db=extend_db, name="generic")


@hookimpl
def register_adapters(register) -> None:
    for name, recipe in CONVENTIONS.items():
        register(name, _factory(name, recipe), description=DESCRIPTIONS[name])
    register("generic", generic, description="any convention, from explicit MelConvention parameters")
