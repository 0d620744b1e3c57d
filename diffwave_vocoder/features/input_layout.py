"""Turn whatever a TTS pipeline hands over into validated float32 mels of shape (frames, n_mels).

Accepts numpy arrays, tf.Tensors and torch tensors (torch is never imported unless such a tensor
is passed), one mel or a batch, in TF layout `(..., frames, n_mels)` or PyTorch layout
`(..., n_mels, frames)`. Every rejection says what was expected and what came. Values far outside
the range the vocoder's mel convention produces (another toolkit's mel: z-scored, natural-log,
dB) are vocoded, but with one `MelRangeWarning`.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

LAYOUTS = ("tf", "torch", "auto")
# How far outside its convention's range (as a share of the range's width) a mel may stray before
# it is taken for another toolkit's: acoustic models overshoot a little, foreign mels by far more.
RANGE_MARGIN = 0.25


class MelRangeWarning(UserWarning):
    """A mel's values lie well outside the range the vocoder's mel convention produces."""


def to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy array, tf.Tensor, torch tensor or nested list."""
    module = type(value).__module__
    if module.startswith("torch"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ValueError(f"mel must be a numeric array, got dtype {array.dtype}")
    if array.dtype.kind == "b":
        raise ValueError("mel must be a numeric array, got booleans")
    return array


def _frames_last(mel: np.ndarray, n_mels: int, layout: str) -> np.ndarray:
    """One mel (2-D) in either layout -> (frames, n_mels)."""
    rows, cols = mel.shape
    if layout == "auto":
        if rows == n_mels and cols == n_mels:
            raise ValueError(
                f"mel of shape {mel.shape} is ambiguous: both axes equal n_mels={n_mels}; "
                "pass layout='tf' for (frames, n_mels) or layout='torch' for (n_mels, frames)")
        if cols == n_mels:
            return mel
        if rows == n_mels:
            return mel.T
        raise ValueError(f"expected a mel with an axis of n_mels={n_mels}, got shape {mel.shape}")
    if layout == "torch":
        if rows != n_mels:
            hint = " (it looks like TF layout (frames, n_mels); use layout='tf')" if cols == n_mels else ""
            raise ValueError(f"expected PyTorch layout (n_mels={n_mels}, frames), got shape {mel.shape}{hint}")
        return mel.T
    if cols != n_mels:
        hint = (" (axis 0 equals n_mels: it looks like PyTorch layout (n_mels, frames); "
                "use layout='torch' or transpose)") if rows == n_mels else ""
        raise ValueError(f"expected TF layout (frames, n_mels={n_mels}), got shape {mel.shape}; "
                         f"n_mels axis has {cols}{hint}")
    return mel


def _validate(mel: np.ndarray, index: int | None) -> np.ndarray:
    where = "" if index is None else f" (item {index})"
    if mel.shape[0] == 0:
        raise ValueError(f"mel has zero frames{where}")
    if not np.all(np.isfinite(mel)):
        raise ValueError(f"mel contains NaN or Inf{where}")
    return np.ascontiguousarray(mel, dtype=np.float32)


def check_value_range(mels: Sequence[np.ndarray], expected: tuple[float, float], stacklevel: int = 3) -> bool:
    """Warn once (MelRangeWarning) if the mels' values stray well outside `expected`; returns
    whether they were within it (plus RANGE_MARGIN of its width on either side)."""
    low, high = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
    margin = RANGE_MARGIN * (expected[1] - expected[0])
    if expected[0] - margin <= low and high <= expected[1] + margin:
        return True
    warnings.warn(
        f"mel values span [{low:.4g}, {high:.4g}] but the vocoder expects mels in "
        f"[{expected[0]:.4g}, {expected[1]:.4g}]: this looks like another toolkit's mel (z-scored, natural-log "
        "and dB mels are common), which vocodes as noise; convert it with --adapter NAME (Python: adapter=NAME; "
        "`diffwave-vocoder plugins` lists them)", MelRangeWarning, stacklevel=stacklevel)
    return False


def check_weights_fit(expected: Sequence[tuple[int, ...]], path: Any) -> None:
    """Raise ValueError if a Keras .weights.h5 file cannot be read, or holds arrays of other shapes
    than `expected` (a model's weight shapes; a config and weights from different models), before
    Keras reports it layer by layer."""
    import h5py

    shapes: list[tuple[int, ...]] = []
    try:
        with h5py.File(path, "r") as file:
            file.visititems(lambda _, item: shapes.append(tuple(item.shape))
                            if isinstance(item, h5py.Dataset) else None)
    except OSError as error:
        raise ValueError(f"cannot read weights from {path}: {error}") from None
    expected = [tuple(shape) for shape in expected]
    if sorted(shapes) == sorted(expected):
        return
    count = lambda found: sum(int(np.prod(s)) for s in found)  # noqa: E731
    missing = sorted(set(expected) - set(shapes)) or sorted(set(shapes) - set(expected))
    raise ValueError(f"the weights in {path} do not fit the model its config.json describes: the file holds "
                     f"{count(shapes):,} parameters in {len(shapes)} arrays, the config gives {count(expected):,} in "
                     f"{len(expected)} (e.g. shape {missing[0] if missing else '?'} is on one side only); config "
                     "and weights come from different models")


def as_mel_list(mel: Any, n_mels: int, layout: str = "tf",
                value_range: tuple[float, float] | None = None) -> tuple[list[np.ndarray], bool]:
    """Normalise input to a list of (frames, n_mels) float32 arrays.

    Returns the list and whether the caller passed a single mel (so the result can be unwrapped).
    A rank-3 array is a batch of equal-length mels; a list or tuple may hold different lengths.
    `value_range`: the (low, high) the mels should lie in (`MelConvention.value_range()`); mels
    well outside it give one MelRangeWarning.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(mel, (list, tuple)):
        if not mel:
            raise ValueError("expected at least one mel, got an empty list")
        items: Sequence[Any] = mel
        single = False
    else:
        array = to_numpy(mel)
        if array.ndim == 2:
            items, single = [array], True
        elif array.ndim == 3:
            items, single = list(array), False
        else:
            raise ValueError(f"expected a mel of rank 2 (frames, n_mels) or a batch of rank 3, "
                             f"got rank {array.ndim} with shape {array.shape}")
    mels = []
    for i, item in enumerate(items):
        array = to_numpy(item)
        if array.ndim != 2:
            raise ValueError(f"each mel in a list must have rank 2, item {i} has shape {array.shape}")
        mels.append(_validate(_frames_last(array, n_mels, layout), None if single else i))
    if value_range is not None:
        check_value_range(mels, value_range, stacklevel=4)
    return mels, single
