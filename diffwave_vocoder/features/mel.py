"""Mel front end: the exact features lmnt-com/diffwave trains on, and the convention object that names them.

The reference (`preprocess.py`) uses torchaudio's MelSpectrogram with `power=1, normalized=True`:
a periodic-Hann, centred, reflect-padded STFT divided by sqrt(sum(window**2)) (= sqrt(384)), an
HTK mel filterbank without area normalisation over 20 Hz .. sr/2, then
`clip((20*log10(max(mel, 1e-5)) - 20 + 100) / 100, 0, 1)`. Every parameter of that recipe is a
field of `MelConvention`, so checkpoints can say which mel they expect and adapters can convert.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
from dataclasses import dataclass
from typing import Callable

import librosa
import numpy as np
import scipy.signal

_COMPRESSIONS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {}


def register_compression(name: str, compress: Callable[..., np.ndarray], decompress: Callable[..., np.ndarray]) -> None:
    """Register a magnitude -> feature map and its inverse under a name usable in MelConvention.

    `decompress(features, xp, **params)` uses arithmetic and functions of the array module `xp`
    only: NumPy, or `tensorflow.experimental.numpy`, which puts the same formula into a TF graph
    (the energy prior of an exported model decompresses its input mel there).
    """
    _COMPRESSIONS[name] = (compress, decompress)


def _lmnt_compress(mel: np.ndarray) -> np.ndarray:
    db = 20.0 * np.log10(np.maximum(mel, 1e-5)) - 20.0
    return np.clip((db + 100.0) / 100.0, 0.0, 1.0)


def _lmnt_decompress(features, xp):
    # Values clipped at 0 or 1 were saturated; their magnitudes are not recoverable.
    return 10.0 ** ((100.0 * features - 80.0) / 20.0)


register_compression("lmnt", _lmnt_compress, _lmnt_decompress)


# Other toolkits' compressions; their parameters come from MelConvention.compression_params.
def _log(x: np.ndarray, base: float) -> np.ndarray:
    return np.log(x) / np.log(base)


def _log_compress(mel, base=np.e, guard="clamp", eps=1e-5, gain=1.0):
    """gain * log_base(max(mel, eps)) ("clamp") or gain * log_base(mel + eps) ("add")."""
    if guard not in ("clamp", "add"):
        raise ValueError(f"log guard must be 'clamp' or 'add', got {guard!r}")
    return gain * _log(np.maximum(mel, eps) if guard == "clamp" else mel + eps, base)


def _log_decompress(features, xp, base=np.e, guard="clamp", eps=1e-5, gain=1.0):
    mel = float(base) ** (features / gain)
    return mel if guard == "clamp" else xp.maximum(mel - eps, 0.0)


def _zscore_compress(mel, mean, scale, base=10.0, eps=1e-10, gain=1.0):
    """Per-bin standardisation of gain * log_base(max(mel, eps)) with a training set's statistics."""
    return (_log_compress(mel, base, "clamp", eps, gain) - np.asarray(mean)) / np.asarray(scale)


def _zscore_decompress(features, xp, mean, scale, base=10.0, eps=1e-10, gain=1.0):
    raw = features * np.asarray(scale) + np.asarray(mean)
    return _log_decompress(raw, xp, base, "clamp", eps, gain)


def _coqui_compress(mel, spec_gain=20.0, base=10.0, eps=1e-8, ref_level_db=20.0, min_level_db=-100.0,
                    max_norm=4.0, symmetric=True, clip_norm=True):
    """Coqui AudioProcessor.normalize(amp_to_db(mel)) with signal_norm=True and no stats file."""
    normed = (_log_compress(mel, base, "clamp", eps, spec_gain) - ref_level_db - min_level_db) / -min_level_db
    low = -max_norm if symmetric else 0.0
    normed = (2 * max_norm * normed - max_norm) if symmetric else max_norm * normed
    return np.clip(normed, low, max_norm) if clip_norm else normed


def _coqui_decompress(features, xp, spec_gain=20.0, base=10.0, eps=1e-8, ref_level_db=20.0, min_level_db=-100.0,
                      max_norm=4.0, symmetric=True, clip_norm=True):
    normed = (features + max_norm) / (2 * max_norm) if symmetric else features / max_norm
    db = normed * -min_level_db + min_level_db + ref_level_db
    return _log_decompress(db, xp, base, "clamp", eps, spec_gain)


register_compression("log", _log_compress, _log_decompress)
register_compression("zscore", _zscore_compress, _zscore_decompress)
register_compression("coqui", _coqui_compress, _coqui_decompress)


def _freeze(value):
    """Hashable form of a compression parameter (arrays and lists become tuples of floats)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    array = np.asarray(value)
    if array.dtype.kind in "iuf":
        return tuple(float(v) for v in array.reshape(-1)) if array.ndim else float(array)
    raise ValueError(f"compression parameters must be numbers, strings or numeric arrays, got {value!r}")


@dataclass(frozen=True)
class MelConvention:
    """How a mel spectrogram was computed from audio; defaults are lmnt-com/diffwave's."""

    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 20.0
    fmax: float | None = None  # None: sample_rate / 2
    mel_scale: str = "htk"  # "htk" or "slaney"
    mel_norm: str | None = None  # None or "slaney" (area normalisation)
    compression: str = "lmnt"
    window: str = "hann"  # periodic
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 1.0  # 1: magnitude, 2: power
    stft_normalized: bool = True  # divide the STFT by sqrt(sum(window**2)), as torchaudio normalized=True
    # Fields other toolkits need (defaults keep lmnt's recipe).
    compression_params: tuple = ()  # keyword arguments of the compression, e.g. {"base": 10.0}; stored sorted
    window_periodic: bool = True  # False: symmetric window (NeMo)
    pad: int = 0  # samples padded on each side with pad_mode before the STFT (HiFi-GAN: 384, center=False)
    magnitude_eps: float = 0.0  # guard inside the magnitude: sqrt(|X|^2 + eps) or sqrt(max(|X|^2, eps))
    magnitude_guard: str = "add"  # "add" (HiFi-GAN, 1e-9) or "clamp" (ESPnet, 1e-10)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        params = self.compression_params
        items = params.items() if isinstance(params, dict) else params
        try:
            frozen = tuple(sorted((str(k), _freeze(v)) for k, v in items))
        except (TypeError, ValueError) as error:
            raise ValueError(f"compression_params must be a dict or (name, value) pairs, got {params!r}") from error
        object.__setattr__(self, "compression_params", frozen)
        if self.magnitude_guard not in ("add", "clamp"):
            raise ValueError(f"magnitude_guard must be 'add' or 'clamp', got {self.magnitude_guard!r}")
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0 samples, got {self.pad}")
        if self.mel_scale not in ("htk", "slaney"):
            raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {self.mel_scale!r}")
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"mel_norm must be None or 'slaney', got {self.mel_norm!r}")
        if self.compression not in _COMPRESSIONS:
            raise ValueError(f"unknown mel compression {self.compression!r}; known: {sorted(_COMPRESSIONS)}")
        try:  # a wrong parameter name or a statistics vector of the wrong length fails here, not later
            compress(np.ones((1, self.n_mels)), self)
        except (TypeError, ValueError) as error:
            shown = {k: f"<{len(v)} values>" if isinstance(v, tuple) else v for k, v in self.compression_params}
            raise ValueError(f"compression {self.compression!r} rejected parameters {shown}: {error}") from error
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if not 0 <= self.fmin < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, "
                             f"fmax={self.f_max}, sample_rate={self.sample_rate}")

    @property
    def f_max(self) -> float:
        return float(self.sample_rate / 2 if self.fmax is None else self.fmax)

    def replace(self, **changes) -> "MelConvention":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """All fields, JSON-ready: compression_params as a dict (arrays as lists); `from_dict` inverts it."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["compression_params"] = {name: list(value) if isinstance(value, tuple) else value
                                      for name, value in self.compression_params}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "MelConvention":
        """A convention from some or all of its fields (the rest keep lmnt's defaults); an unknown
        field is an error, so that a misspelt one never silently falls back to a default."""
        if not isinstance(data, dict):
            raise ValueError(f"a mel convention must be a JSON object of its fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown mel convention field(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    @property
    def params(self) -> dict:
        """The compression's keyword arguments as a dict."""
        return dict(self.compression_params)

    def value_range(self) -> tuple[float, float]:
        """(lowest, highest) feature value this convention produces from audio in [-1, 1].

        Silence gives the low end (the compression's floor). The high end bounds a full-scale
        signal: no STFT magnitude exceeds the window's sum (scaled as the STFT is), and no mel band
        exceeds its filter's weight sum times that. Both ends go through the compression per band,
        so z-score statistics and clipping are accounted for.
        """
        return _value_range(self)

    def frames_for(self, num_samples: int) -> int:
        """Number of mel frames this convention yields for `num_samples` of audio."""
        if self.center:
            return 1 + (num_samples + 2 * self.pad) // self.hop_length
        return 1 + (num_samples + 2 * self.pad - self.n_fft) // self.hop_length

    def samples_for(self, frames: int) -> int:
        """The fewest audio samples (at least 1) that yield `frames` mel frames: `frames_for`'s inverse."""
        padding = 2 * self.pad - (0 if self.center else self.n_fft)
        return max(1, (frames - 1) * self.hop_length - padding)

    def first_frame_start(self) -> int:
        """Where frame 0's n_fft-sample window starts in the unpadded audio (negative: in the padding);
        frame j's starts j * hop_length later."""
        return -(self.pad + (self.n_fft // 2 if self.center else 0))


@functools.lru_cache(maxsize=32)
def mel_filterbank(convention: MelConvention) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) filterbank of a convention, float32."""
    return librosa.filters.mel(
        sr=convention.sample_rate, n_fft=convention.n_fft, n_mels=convention.n_mels,
        fmin=convention.fmin, fmax=convention.f_max, htk=convention.mel_scale == "htk",
        norm=convention.mel_norm, dtype=np.float32)


@functools.lru_cache(maxsize=32)
def _window(kind: str, win_length: int, periodic: bool = True) -> np.ndarray:
    return scipy.signal.get_window(kind, win_length, fftbins=periodic).astype(np.float64)


@functools.lru_cache(maxsize=32)
def _value_range(convention: MelConvention) -> tuple[float, float]:
    window = _window(convention.window, convention.win_length, convention.window_periodic)
    peak = float(np.sum(np.abs(window)))
    if convention.stft_normalized:
        peak /= float(np.sqrt(np.sum(window ** 2)))
    floor = 0.0
    if convention.magnitude_eps:
        eps = convention.magnitude_eps
        floor = float(np.sqrt(eps))
        peak = float(np.sqrt(peak ** 2 + eps)) if convention.magnitude_guard == "add" else max(peak, floor)
    weights = mel_filterbank(convention).astype(np.float64).sum(axis=1)
    bands = np.stack([weights * floor ** convention.power, weights * peak ** convention.power])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        values = _COMPRESSIONS[convention.compression][0](bands, **convention.params)
    values = np.asarray(values, np.float64)
    return float(np.nanmin(values)), float(np.nanmax(values))


def _check_audio(audio, sample_rate: int | None, convention: MelConvention) -> np.ndarray:
    array = np.asarray(audio)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"audio must be numeric, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"audio must be 1-D (samples,), got shape {array.shape}")
    if array.size == 0:
        raise ValueError("audio is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError("audio contains NaN or Inf")
    if sample_rate is not None and sample_rate != convention.sample_rate:
        raise ValueError(f"audio sample rate is {sample_rate} Hz but the mel convention expects "
                         f"{convention.sample_rate} Hz; resample first")
    if array.dtype.kind in "iu":
        raise ValueError(f"audio must be float in [-1, 1], got integer dtype {array.dtype}")
    # The reference clamps to [-1, 1] before analysis.
    return np.clip(array.astype(np.float32), -1.0, 1.0)


def linear_spectrogram(audio: np.ndarray, convention: MelConvention) -> np.ndarray:
    """|STFT|**power, shape (frames, n_fft // 2 + 1), with the convention's window and padding."""
    window = _window(convention.window, convention.win_length, convention.window_periodic)
    if convention.pad:
        audio = np.pad(audio, convention.pad, mode=convention.pad_mode)
    spec = librosa.stft(audio, n_fft=convention.n_fft, hop_length=convention.hop_length,
                        win_length=convention.win_length, window=window, center=convention.center,
                        pad_mode=convention.pad_mode)
    if convention.magnitude_eps:
        power = spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2
        guarded = (power + convention.magnitude_eps if convention.magnitude_guard == "add"
                   else np.maximum(power, convention.magnitude_eps))
        magnitude = np.sqrt(guarded)
    else:
        magnitude = np.abs(spec)
    if convention.stft_normalized:
        magnitude = magnitude / np.sqrt(np.sum(window ** 2))
    if convention.power != 1.0:
        magnitude = magnitude ** convention.power
    return magnitude.T.astype(np.float32)


def mel_magnitudes(audio, convention: MelConvention, sample_rate: int | None = None) -> np.ndarray:
    """Uncompressed mel magnitudes, shape (frames, n_mels)."""
    audio = _check_audio(audio, sample_rate, convention)
    return linear_spectrogram(audio, convention) @ mel_filterbank(convention).T


def compress(mel: np.ndarray, convention: MelConvention) -> np.ndarray:
    return _COMPRESSIONS[convention.compression][0](mel, **convention.params).astype(np.float32)


def decompress(features, convention: MelConvention, xp=np):
    """Mel magnitudes (powers when convention.power is 2) of compressed features: float64 NumPy, or,
    with xp = tensorflow.experimental.numpy, a tensor of the features' dtype (usable in a tf.function)."""
    if xp is np:
        features = np.asarray(features, np.float64)
    return _COMPRESSIONS[convention.compression][1](features, xp, **convention.params)


def compute_mel(audio, convention: MelConvention = MelConvention(),
                sample_rate: int | None = None) -> np.ndarray:
    """Features of `audio` in `convention`, shape (frames, n_mels), float32.

    `sample_rate`, when given, is the audio's rate and must equal the convention's.
    """
    return compress(mel_magnitudes(audio, convention, sample_rate), convention)


def mel_spectrogram(audio, sample_rate: int = 22050, n_fft: int = 1024, win_length: int | None = None,
                    hop_length: int = 256, n_mels: int = 80, fmin: float = 20.0,
                    fmax: float | None = None) -> np.ndarray:
    """lmnt-com/diffwave's mel features of float audio in [-1, 1], shape (frames, n_mels).

    `win_length` defaults to `n_fft` (the reference uses 4 * hop = 1024 = n_fft).
    """
    convention = MelConvention(sample_rate=sample_rate, n_fft=n_fft,
                               win_length=n_fft if win_length is None else win_length,
                               hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return compute_mel(audio, convention)
