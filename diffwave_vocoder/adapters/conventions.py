"""The mel recipes of the acoustic models a pipeline is likely to pair with DiffWave.

Each function returns the `MelConvention` its toolkit's code computes (LJSpeech-style 22.05 kHz
defaults); keyword overrides change single fields for a model trained with other settings. Sources
(read at the commits listed in the project's plugin-conventions notes):

* tacotron2: NVIDIA/tacotron2 `layers.py` TacotronSTFT, `stft.py`, `audio_processing.py`
* hifigan: jik876/hifi-gan `meldataset.py` mel_spectrogram, `config_v1.json`
* parallel_wavegan: kan-bayashi/ParallelWaveGAN `bin/preprocess.py` logmelfilterbank, `bin/normalize.py`
* espnet: espnet2 `tts/feats_extract/log_mel_fbank.py`, `layers/log_mel.py`, `layers/global_mvn.py`
* coqui: coqui-ai/TTS `utils/audio/processor.py`, `numpy_transforms.py`, `config/shared_configs.py`
* tensorflowtts: TensorSpeech/TensorFlowTTS `bin/preprocess.py`, `preprocess/ljspeech_preprocess.yaml`
* nemo: NeMo `asr/parts/preprocessing/features.py` FilterbankFeatures with `tts/conf/fastpitch_align_v1.05.yaml`
  (the released tts_en_fastpitch); nemo_22050: `fastpitch/fastpitch_22050.yaml`
* speechbrain: `lobes/models/HifiGAN.py` mel_spectogram, LJSpeech vocoder recipes
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from ..features.mel import MelConvention

Stats = Union[str, os.PathLike, Sequence[Sequence[float]], None]

# The shared STFT of every LJSpeech recipe below: 22.05 kHz, 1024-point periodic Hann, hop 256,
# unnormalised magnitude, 80 Slaney-scale, area-normalised mel bands (librosa's default filterbank).
_LJ = dict(sample_rate=22050, n_fft=1024, win_length=1024, hop_length=256, n_mels=80,
           mel_scale="slaney", mel_norm="slaney", stft_normalized=False, center=True, pad_mode="reflect")
_LN_CLAMP = dict(compression="log", compression_params={"base": float(np.e), "guard": "clamp", "eps": 1e-5})
_LOG10 = {"base": 10.0, "guard": "clamp", "eps": 1e-10}


def _build(base: dict[str, Any], overrides: dict[str, Any]) -> MelConvention:
    return MelConvention(**{**base, **overrides})


def lmnt(**overrides: Any) -> MelConvention:
    """lmnt-com/diffwave `preprocess.py`: the package's own default."""
    return MelConvention(**overrides)


def tacotron2(**overrides: Any) -> MelConvention:
    """NVIDIA Tacotron 2: 0-8 kHz, centred reflect padding, ln(clamp(mel, 1e-5))."""
    return _build({**_LJ, "fmin": 0.0, "fmax": 8000.0, **_LN_CLAMP}, overrides)


def hifigan(**overrides: Any) -> MelConvention:
    """jik876/hifi-gan: like Tacotron 2 but reflect-padded by (n_fft - hop) / 2 with center=False
    (frames sit half a hop later, one fewer) and magnitude sqrt(power + 1e-9)."""
    n_fft = overrides.get("n_fft", _LJ["n_fft"])
    hop = overrides.get("hop_length", _LJ["hop_length"])
    base = {**_LJ, "fmin": 0.0, "fmax": 8000.0, **_LN_CLAMP, "center": False, "pad": (n_fft - hop) // 2,
            "magnitude_eps": 1e-9, "magnitude_guard": "add"}
    return _build(base, overrides)


def speechbrain(**overrides: Any) -> MelConvention:
    """SpeechBrain HiFi-GAN / DiffWave (torchaudio MelSpectrogram, slaney/slaney, ln clamp 1e-5)."""
    return _build({**_LJ, "fmin": 0.0, "fmax": 8000.0, **_LN_CLAMP}, overrides)


def _log10_family(stats: Stats, extra: dict[str, Any], overrides: dict[str, Any]) -> MelConvention:
    params = dict(_LOG10)
    compression = "log"
    if stats is not None:
        mean, scale = load_stats(stats)
        params = {"base": 10.0, "eps": 1e-10, "mean": mean, "scale": scale}
        compression = "zscore"
    base = {**_LJ, "fmin": 80.0, "fmax": 7600.0, **extra, "compression": compression,
            "compression_params": params}
    return _build(base, overrides)


def parallel_wavegan(stats: Stats = None, **overrides: Any) -> MelConvention:
    """ParallelWaveGAN: log10(max(mel, 1e-10)) over 80-7600 Hz; z-scored with `stats` (stats.h5 or
    stats.npy) when given, otherwise the raw ("denormalised") features."""
    return _log10_family(stats, {}, overrides)


def espnet(stats: Stats = None, **overrides: Any) -> MelConvention:
    """ESPnet2 LogMelFbank: sqrt(clamp(power, 1e-10)), log10(clamp(mel, 1e-10)) over 80-7600 Hz;
    GlobalMVN with `stats` (feats_stats.npz) when given, otherwise `feat_gen_denorm`."""
    return _log10_family(stats, {"magnitude_eps": 1e-10, "magnitude_guard": "clamp"}, overrides)


def tensorflowtts(stats: Stats = None, **overrides: Any) -> MelConvention:
    """TensorFlowTTS: log10(max(mel, 1e-10)) over 80-7600 Hz; z-scored with `stats` (stats.npy =
    [mean, scale]) when given, as its vocoders expect by default."""
    return _log10_family(stats, {}, overrides)


def nemo(**overrides: Any) -> MelConvention:
    """NeMo FastPitch (v1.05 config, the released checkpoints): symmetric Hann, zero (constant) centre
    padding, slaney/slaney 0-8 kHz, ln(mel + 1e-5)."""
    base = {**_LJ, "fmin": 0.0, "fmax": 8000.0, "window_periodic": False, "pad_mode": "constant",
            "compression": "log", "compression_params": {"base": float(np.e), "guard": "add", "eps": 1e-5}}
    return _build(base, overrides)


def nemo_22050(**overrides: Any) -> MelConvention:
    """NeMo's newer fastpitch_22050 configs: no area norm, 0 - sr/2, ln(mel + 1)."""
    return nemo(**{"fmax": None, "mel_norm": None,
                   "compression_params": {"base": float(np.e), "guard": "add", "eps": 1.0}, **overrides})


# Coqui's BaseAudioConfig keys that define its mel, with their defaults.
COQUI_DEFAULTS: dict[str, Any] = {
    "sample_rate": 22050, "fft_size": 1024, "win_length": 1024, "hop_length": 256, "num_mels": 80,
    "mel_fmin": 0.0, "mel_fmax": None, "stft_pad_mode": "reflect", "signal_norm": True,
    "symmetric_norm": True, "max_norm": 4.0, "clip_norm": True, "ref_level_db": 20, "min_level_db": -100,
    "spec_gain": 20.0, "log_func": "np.log10",
}


def coqui(**audio_config: Any) -> MelConvention:
    """Coqui TTS AudioProcessor.melspectrogram, configured with its own `audio` config keys.

    Defaults are BaseAudioConfig's: symmetric normalisation to [-4, 4] of 20*log10(mel) - 20 dB over
    -100 dB. `signal_norm=False` (newer LJ recipes use it with log_func="np.log", spec_gain=1) gives
    plain spec_gain * log(mel).
    """
    unknown = sorted(set(audio_config) - set(COQUI_DEFAULTS))
    if unknown:
        raise ValueError(f"unsupported Coqui audio setting(s) {unknown}; expected some of {sorted(COQUI_DEFAULTS)}")
    c = {**COQUI_DEFAULTS, **audio_config}
    bases = {"np.log10": 10.0, "np.log": float(np.e)}
    if c["log_func"] not in bases:
        raise ValueError(f"log_func must be one of {sorted(bases)}, got {c['log_func']!r}")
    base = bases[c["log_func"]]
    if c["signal_norm"]:
        compression = "coqui"
        params = {"spec_gain": float(c["spec_gain"]), "base": base, "eps": 1e-8,
                  "ref_level_db": float(c["ref_level_db"]), "min_level_db": float(c["min_level_db"]),
                  "max_norm": float(c["max_norm"]), "symmetric": bool(c["symmetric_norm"]),
                  "clip_norm": bool(c["clip_norm"])}
    else:
        compression = "log"
        params = {"base": base, "guard": "clamp", "eps": 1e-8, "gain": float(c["spec_gain"])}
    return MelConvention(
        sample_rate=int(c["sample_rate"]), n_fft=int(c["fft_size"]), win_length=int(c["win_length"]),
        hop_length=int(c["hop_length"]), n_mels=int(c["num_mels"]), fmin=float(c["mel_fmin"]),
        fmax=None if c["mel_fmax"] is None else float(c["mel_fmax"]), mel_scale="slaney", mel_norm="slaney",
        stft_normalized=False, center=True, pad_mode=c["stft_pad_mode"], compression=compression,
        compression_params=params)


def load_stats(stats: Stats) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per mel bin from a toolkit's statistics file, or from a (mean, scale) pair.

    .npy: [mean, scale] (ParallelWaveGAN, TensorFlowTTS); .h5: datasets "mean" and "scale"
    (ParallelWaveGAN); .npz: ESPnet's count/sum/sum_square (std = sqrt(max(var, 1e-20))) or
    mean/scale arrays.
    """
    if isinstance(stats, (str, os.PathLike)):
        path = Path(stats)
        if not path.is_file():
            raise ValueError(f"statistics file not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            pair = np.load(path)
        elif suffix == ".npz":
            with np.load(path) as data:
                keys = set(data.files)
                if {"count", "sum", "sum_square"} <= keys:
                    count = float(data["count"])
                    mean = data["sum"] / count
                    var = data["sum_square"] / count - mean * mean
                    pair = np.stack([mean, np.sqrt(np.maximum(var, 1e-20))])
                elif {"mean", "scale"} <= keys:
                    pair = np.stack([data["mean"], data["scale"]])
                else:
                    raise ValueError(f"{path} holds {sorted(keys)}; expected count/sum/sum_square "
                                     "(ESPnet feats_stats.npz) or mean/scale")
        elif suffix in (".h5", ".hdf5"):
            import h5py  # a Keras dependency; only needed for ParallelWaveGAN's stats.h5

            with h5py.File(path, "r") as data:
                if "mean" not in data or "scale" not in data:
                    raise ValueError(f"{path} holds {sorted(data)}; expected datasets 'mean' and 'scale'")
                pair = np.stack([data["mean"][()], data["scale"][()]])
        else:
            raise ValueError(f"unsupported statistics file {path}: expected .npy, .npz or .h5")
    else:
        pair = np.asarray(stats, dtype=np.float64)
    pair = np.asarray(pair, dtype=np.float64)
    if pair.ndim != 2 or pair.shape[0] != 2:
        raise ValueError(f"statistics must be (mean, scale) of shape (2, n_mels), got shape {pair.shape}")
    if not np.all(np.isfinite(pair)) or np.any(pair[1] <= 0):
        raise ValueError("statistics must be finite with every scale > 0")
    return pair[0], pair[1]


CONVENTIONS = {
    "lmnt": lmnt, "tacotron2": tacotron2, "hifigan": hifigan, "parallel_wavegan": parallel_wavegan,
    "espnet": espnet, "coqui": coqui, "tensorflowtts": tensorflowtts, "nemo": nemo,
    "nemo_22050": nemo_22050, "speechbrain": speechbrain,
}


def convention_from_spec(spec: str | os.PathLike) -> MelConvention:
    """A convention by name (a key of CONVENTIONS, with its toolkit's defaults) or from a JSON file
    holding an object of MelConvention fields (those left out keep lmnt's defaults)."""
    if isinstance(spec, str) and spec in CONVENTIONS:
        return CONVENTIONS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"unknown mel convention {str(spec)!r}: give one of {', '.join(sorted(CONVENTIONS))} "
                         "or a JSON file of MelConvention fields")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read mel convention file {path}: {error}") from None
    try:
        return MelConvention.from_dict(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"mel convention file {path}: {error}") from None
