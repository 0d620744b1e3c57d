"""Griffin-Lim from a mel spectrogram: the vocoder everyone already has, as an evaluation baseline.

The mel's compression is undone (`mel.decompress`), the linear magnitude spectrum is estimated
per frame by non-negative least squares against the convention's filterbank
(`librosa.util.nnls`), the STFT normalisation is undone, and the phase is found by librosa's fast
Griffin-Lim with the convention's window, hop and padding. Values a compression clipped (lmnt's 0
and 1) stay at the clip.
"""
from __future__ import annotations

import librosa
import numpy as np

from ..features.mel import MelConvention, _window, decompress, mel_filterbank

ITERATIONS = 32


def mel_to_linear(mel: np.ndarray, convention: MelConvention) -> np.ndarray:
    """Estimated |STFT| of a (frames, n_mels) mel, shape (n_fft // 2 + 1, frames), unnormalised
    (the scale `librosa.stft` gives for the convention's window)."""
    mel = np.asarray(mel, np.float64)
    if mel.ndim != 2 or mel.shape[1] != convention.n_mels:
        raise ValueError(f"expected a (frames, {convention.n_mels}) mel, got shape {mel.shape}")
    energy = decompress(mel, convention).T  # (n_mels, frames): magnitude, or power if power = 2
    linear = librosa.util.nnls(mel_filterbank(convention).astype(np.float64), energy)
    if convention.power != 1.0:
        linear = np.power(linear, 1.0 / convention.power)
    if convention.stft_normalized:
        window = _window(convention.window, convention.win_length, convention.window_periodic)
        linear = linear * np.sqrt(np.sum(window ** 2))
    return linear


def griffin_lim(mel: np.ndarray, convention: MelConvention = MelConvention(), n_iter: int = ITERATIONS,
                seed: int = 0) -> np.ndarray:
    """Float32 audio in [-1, 1] from a (frames, n_mels) mel in `convention`, hop_length samples per
    frame as a vocoder gives (centred conventions); `seed` fixes the initial random phase."""
    linear = mel_to_linear(mel, convention)
    frames = linear.shape[1]
    hop, pad = convention.hop_length, convention.pad
    window = _window(convention.window, convention.win_length, convention.window_periodic)
    audio = librosa.griffinlim(linear, n_iter=n_iter, hop_length=hop, win_length=convention.win_length,
                               n_fft=convention.n_fft, window=window, center=convention.center,
                               pad_mode=convention.pad_mode, random_state=seed)
    # The inverse STFT ends at the last frame's centre; a vocoder gives a whole hop per frame.
    length = frames * hop if convention.center else (frames - 1) * hop + convention.n_fft
    audio = librosa.util.fix_length(audio, size=length + 2 * pad)[pad:length + pad]
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


__all__ = ["griffin_lim", "mel_to_linear", "ITERATIONS"]
