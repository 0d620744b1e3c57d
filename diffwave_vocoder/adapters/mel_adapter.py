"""Convert mels between conventions: the step that makes another acoustic model's output usable.

Every mel is `compress(fb @ |STFT|**power)`. To move from a source to a target convention the
adapter undoes the source compression (or normalisation), re-samples the frames to the target's
frame times when hop, sample rate or padding differ, re-projects through the target filterbank when
the filterbanks differ (non-negative least squares or a pseudo-inverse back to the linear
spectrum, then the target's STFT scale, frequency grid and filterbank), and applies the target
compression. Identical conventions are returned unchanged; equal filterbanks and framing change
only the compression, which is exact wherever neither side clipped.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.optimize

from ..features.input_layout import as_mel_list
from ..features.mel import MelConvention, _window, compress, decompress, mel_filterbank

METHODS = ("pinv", "nnls")
# Frequencies the source filterbank never saw (e.g. 8-11 kHz for a 0-8 kHz source feeding lmnt's
# 20 Hz-11 kHz bands) are filled from the nearest known spectrum: its mean over this many Hz at
# the edge, `extend_db` below that, falling this many dB per octave away from the edge.
EDGE_REFERENCE_HZ = {"high": 1000.0, "low": 200.0}
EXTENSION_ROLLOFF_DB_PER_OCTAVE = 12.0


def _analysis_gain(convention: MelConvention) -> float:
    """|STFT| of a unit-amplitude sinusoid at a bin centre (x2): sum(window), over the normaliser."""
    window = _window(convention.window, convention.win_length, convention.window_periodic)
    return float(window.sum() / (np.sqrt(np.sum(window ** 2)) if convention.stft_normalized else 1.0))


def _first_frame_offset(convention: MelConvention) -> float:
    """Sample index (in the unpadded audio) at which frame 0 is centred."""
    padding = convention.pad + (convention.n_fft // 2 if convention.center else 0)
    return convention.n_fft / 2 - padding


def _same_stft(a: MelConvention, b: MelConvention) -> bool:
    fields = ("sample_rate", "n_fft", "win_length", "window", "window_periodic", "stft_normalized", "power")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def _same_filterbank(a: MelConvention, b: MelConvention) -> bool:
    return _same_stft(a, b) and all(getattr(a, f) == getattr(b, f)
                                    for f in ("n_mels", "fmin", "f_max", "mel_scale", "mel_norm"))


def _same_framing(a: MelConvention, b: MelConvention) -> bool:
    return (a.sample_rate == b.sample_rate and a.hop_length == b.hop_length
            and _first_frame_offset(a) == _first_frame_offset(b))


@functools.lru_cache(maxsize=16)
def _frequency_map(source: MelConvention, target: MelConvention) -> np.ndarray:
    """(target bins, source bins) linear interpolation of a magnitude spectrum between FFT grids,
    scaled by the ratio of analysis gains; zero above the source's Nyquist frequency."""
    f_source = np.arange(source.n_fft // 2 + 1) * source.sample_rate / source.n_fft
    f_target = np.arange(target.n_fft // 2 + 1) * target.sample_rate / target.n_fft
    position = f_target / (source.sample_rate / source.n_fft)
    low = np.clip(np.floor(position).astype(int), 0, len(f_source) - 1)
    high = np.clip(low + 1, 0, len(f_source) - 1)
    frac = position - low
    mapping = np.zeros((len(f_target), len(f_source)))
    rows = np.arange(len(f_target))
    inside = f_target <= f_source[-1]
    np.add.at(mapping, (rows[inside], low[inside]), 1.0 - frac[inside])
    np.add.at(mapping, (rows[inside], high[inside]), frac[inside])
    return mapping * (_analysis_gain(target) / _analysis_gain(source))


@functools.lru_cache(maxsize=16)
def _pinv(convention: MelConvention) -> np.ndarray:
    return np.linalg.pinv(mel_filterbank(convention).astype(np.float64))


class MelAdapter:
    """Callable converting mels in `source` convention to `target` convention.

    `adapter(mel, layout="tf")` takes what `Vocoder.vocode` takes (numpy, tf.Tensor or torch tensor;
    one mel, a batch, or a list; `layout` read with the *source* n_mels) and returns the same
    structure in TF layout (frames, target n_mels). `method` picks how the linear spectrum is
    estimated when the filterbanks differ: "pinv" (pseudo-inverse, negative values clipped to 0; the
    default: fast and, measured on speech, the more accurate) or "nnls" (exact non-negative least
    squares per frame, scipy; sparser spectra, about 100x slower). `extend_db` fills frequencies the
    source never covered (see EDGE_REFERENCE_HZ); None leaves them silent, which suits acoustic
    models trained on band-limited audio.
    """

    def __init__(self, source: MelConvention, target: MelConvention = MelConvention(), method: str = "pinv",
                 extend_db: float | None = -10.0, name: str | None = None):
        if not isinstance(source, MelConvention) or not isinstance(target, MelConvention):
            raise ValueError(f"source and target must be MelConvention objects, got "
                             f"{type(source).__name__} and {type(target).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.source = source
        self.target = target
        self.method = method
        self.extend_db = None if extend_db is None else float(extend_db)
        self.name = name or "generic"

    def __repr__(self) -> str:
        return f"MelAdapter({self.name!r}, method={self.method!r})"

    @property
    def is_identity(self) -> bool:
        return self.source == self.target

    def __call__(self, mel: Any, layout: str = "tf") -> np.ndarray | list[np.ndarray]:
        mels, single = as_mel_list(mel, self.source.n_mels, layout)
        converted = [self.convert(m) for m in mels]
        if single:
            return converted[0]
        if isinstance(mel, (list, tuple)):
            return converted
        return np.stack(converted)

    def convert(self, mel: np.ndarray) -> np.ndarray:
        """One mel, (frames, source n_mels) -> (target frames, target n_mels) float32."""
        mel = np.asarray(mel)
        if mel.ndim != 2 or mel.shape[1] != self.source.n_mels or mel.shape[0] == 0:
            raise ValueError(f"expected one mel of shape (frames, {self.source.n_mels}), got {mel.shape}")
        if self.is_identity:
            return mel.astype(np.float32)
        source, target = self.source, self.target
        energy = decompress(mel, source)  # fb @ |X|**power, float64
        if not _same_framing(source, target):
            energy = self._retime(energy)
        if not _same_filterbank(source, target):
            energy = self._reproject(energy)
        return compress(energy, target)

    def target_frames(self, source_frames: int) -> int:
        """Frames the target convention gives for audio that yielded `source_frames` source frames."""
        s, t = self.source, self.target
        # Shortest source audio with that many frames, plus half a hop (the length is only known to a hop).
        padding = 2 * s.pad + (0 if s.center else -s.n_fft)
        samples = (source_frames - 1) * s.hop_length - padding + (s.hop_length - 1) / 2
        return max(1, t.frames_for(int(round(samples * t.sample_rate / s.sample_rate))))

    def _retime(self, energy: np.ndarray) -> np.ndarray:
        """Interpolate log mel energies at the target's frame centres (edges held)."""
        s, t = self.source, self.target
        frames = self.target_frames(len(energy))
        centres = (np.arange(frames) * t.hop_length + _first_frame_offset(t)) / t.sample_rate
        position = (centres * s.sample_rate - _first_frame_offset(s)) / s.hop_length
        index = np.arange(len(energy))
        log_energy = np.log(np.maximum(energy, np.finfo(np.float64).tiny))
        return np.exp(np.stack([np.interp(position, index, band) for band in log_energy.T], axis=1))

    def _reproject(self, energy: np.ndarray) -> np.ndarray:
        """Source mel energies -> estimated linear spectrum -> target mel energies."""
        s, t = self.source, self.target
        if self.method == "nnls":
            basis = mel_filterbank(s).astype(np.float64)
            linear = np.stack([scipy.optimize.nnls(basis, frame)[0] for frame in energy])
        else:
            linear = np.maximum(energy @ _pinv(s).T, 0.0)
        magnitude = linear ** (1.0 / s.power) if s.power != 1.0 else linear
        magnitude = magnitude @ _frequency_map(s, t).T
        if self.extend_db is not None:
            magnitude = self._extend(magnitude)
        linear = magnitude ** t.power if t.power != 1.0 else magnitude
        return linear @ mel_filterbank(t).T.astype(np.float64)

    def _extend(self, magnitude: np.ndarray) -> np.ndarray:
        """Fill target-grid bins outside the source filterbank's support (see EDGE_REFERENCE_HZ)."""
        s, t = self.source, self.target
        support = np.flatnonzero(mel_filterbank(s).sum(axis=0) > 0) * s.sample_rate / s.n_fft
        low_edge, high_edge = support[0], support[-1]
        freqs = np.arange(t.n_fft // 2 + 1) * t.sample_rate / t.n_fft
        exponent = EXTENSION_ROLLOFF_DB_PER_OCTAVE / (20 * np.log10(2.0))
        gain = 10.0 ** (self.extend_db / 20.0)
        magnitude = magnitude.copy()
        for missing, reference, shape in (
                (freqs > high_edge, (freqs > high_edge - EDGE_REFERENCE_HZ["high"]) & (freqs <= high_edge),
                 (np.maximum(freqs, 1e-9) / high_edge) ** -exponent),
                (freqs < low_edge, (freqs >= low_edge) & (freqs < low_edge + EDGE_REFERENCE_HZ["low"]),
                 (freqs / low_edge) ** exponent)):
            if missing.any() and reference.any():
                level = magnitude[:, reference].mean(axis=1, keepdims=True)
                magnitude[:, missing] = gain * level * shape[missing]
        return magnitude
