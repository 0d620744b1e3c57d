"""Reading and writing waveforms: float32 mono in [-1, 1], sample rates checked, writes atomic."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

from .atomic import atomic_file


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               resample: bool = False) -> tuple[np.ndarray, int]:
    """First channel of an audio file as float32 in [-1, 1], and its sample rate.

    With `sample_rate` set, a file at another rate is an error unless `resample` is True, in which
    case it is resampled (librosa, soxr) and the returned rate is `sample_rate`.
    """
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"cannot read audio file {path}: {error}") from None
    audio = audio[:, 0]
    if audio.size == 0:
        raise ValueError(f"audio file {path} is empty")
    if sample_rate is not None and rate != sample_rate:
        if not resample:
            raise ValueError(f"{path} is sampled at {rate} Hz but {sample_rate} Hz is expected")
        import librosa

        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate).astype(np.float32)
        rate = sample_rate
    return np.clip(audio, -1.0, 1.0), rate


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV atomically (no partial file on failure)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got {audio.shape}")
    with atomic_file(path, suffix=".wav") as tmp:
        soundfile.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)
