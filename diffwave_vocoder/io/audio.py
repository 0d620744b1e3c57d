"""Reading and writing waveforms: float32 mono in [-1, 1], sample rates checked, writes atomic;
finding a data set's wav files."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import soundfile

from .atomic import atomic_file

log = logging.getLogger(__name__)


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


def find_wavs(root: str | os.PathLike) -> list[Path]:
    """The wav files of a data set, sorted: an LJSpeech folder's listed clips or every wav below root.

    LJSpeech layout: `metadata.csv` (`id|text|normalised text`) next to `wavs/`; clips listed in
    metadata.csv but missing are reported and left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data set not found: expected a directory of .wav files, got {root}")
    metadata = root / "metadata.csv"
    if metadata.is_file() and (root / "wavs").is_dir():
        ids = [line.split("|", 1)[0].strip() for line in metadata.read_text(encoding="utf-8").splitlines()]
        paths = [root / "wavs" / f"{clip_id}.wav" for clip_id in ids if clip_id]
        missing = [p for p in paths if not p.is_file()]
        for path in missing[:10]:
            log.warning("listed in %s but missing: %s", metadata, path)
        if missing:
            log.warning("%d of %d clips listed in %s are missing", len(missing), len(paths), metadata)
        wavs = sorted(p for p in paths if p.is_file())
    else:
        wavs = sorted(p for p in root.rglob("*.wav") if p.is_file())
    if not wavs:
        raise ValueError(f"no .wav files under {root}")
    return wavs
