"""A third-party plugin: a small DiffWave vocoder and an adapter for natural-log lmnt-filterbank mels."""
import math

from diffwave_vocoder import MelConvention, hookimpl
from diffwave_vocoder.adapters import MelAdapter

# A toolkit that uses lmnt's filterbank but stores ln(max(mel, 1e-5)) instead of lmnt's [0, 1] dB.
SOURCE = MelConvention(compression="log", compression_params={"base": math.e, "guard": "clamp", "eps": 1e-5})


def tiny_vocoder(seed=0):
    from diffwave_vocoder import DiffWaveConfig, Vocoder

    return Vocoder.from_config(DiffWaveConfig(residual_layers=2, residual_channels=4), seed=seed)


def ln_adapter(target, **options):
    return MelAdapter(SOURCE, target, name="fixture-ln", **options)


@hookimpl
def register_vocoders(register):
    register("fixture-tiny", tiny_vocoder, description="2-layer DiffWave from the fixture plugin")


@hookimpl
def register_adapters(register):
    register("fixture-ln", ln_adapter, description="ln mels on lmnt's filterbank")
