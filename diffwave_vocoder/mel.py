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
from dataclasses import dataclass
from typing import Callable

import librosa
import numpy as np
import scipy.signal

_COMPRESSIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {}


def register_compression(name: str, compress: Callable[[np.ndarray], np.ndarray],
                         decompress: Callable[[np.ndarray], np.ndarray]) -> None:
    """Register a magnitude -> feature map and its inverse under a name usable in MelConvention."""
    _COMPRESSIONS[name] = (compress, decompress)


def _lmnt_compress(mel: np.ndarray) -> np.ndarray:
    db = 20.0 * np.log10(np.maximum(mel, 1e-5)) - 20.0
    return np.clip((db + 100.0) / 100.0, 0.0, 1.0)


def _lmnt_decompress(features: np.ndarray) -> np.ndarray:
    # Values clipped at 0 or 1 were saturated; their magnitudes are not recoverable.
    return np.power(10.0, (100.0 * np.asarray(features, np.float64) - 80.0) / 20.0)


register_compression("lmnt", _lmnt_compress, _lmnt_decompress)


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

    def __post_init__(self) -> None:
        if self.mel_scale not in ("htk", "slaney"):
            raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {self.mel_scale!r}")
        if self.mel_norm not in (None, "slaney"):
            raise ValueError(f"mel_norm must be None or 'slaney', got {self.mel_norm!r}")
        if self.compression not in _COMPRESSIONS:
            raise ValueError(f"unknown mel compression {self.compression!r}; known: {sorted(_COMPRESSIONS)}")
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
        return dataclasses.asdict(self)

    def frames_for(self, num_samples: int) -> int:
        """Number of mel frames this convention yields for `num_samples` of audio."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length


@functools.lru_cache(maxsize=32)
def mel_filterbank(convention: MelConvention) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) filterbank of a convention, float32."""
    return librosa.filters.mel(
        sr=convention.sample_rate, n_fft=convention.n_fft, n_mels=convention.n_mels,
        fmin=convention.fmin, fmax=convention.f_max, htk=convention.mel_scale == "htk",
        norm=convention.mel_norm, dtype=np.float32)


@functools.lru_cache(maxsize=32)
def _window(kind: str, win_length: int) -> np.ndarray:
    return scipy.signal.get_window(kind, win_length, fftbins=True).astype(np.float64)


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
    window = _window(convention.window, convention.win_length)
    spec = librosa.stft(audio, n_fft=convention.n_fft, hop_length=convention.hop_length,
                        win_length=convention.win_length, window=window, center=convention.center,
                        pad_mode=convention.pad_mode)
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
    return _COMPRESSIONS[convention.compression][0](mel).astype(np.float32)


def decompress(features: np.ndarray, convention: MelConvention) -> np.ndarray:
    return _COMPRESSIONS[convention.compression][1](features)


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
