"""The vocoder checkpoint directory, read without TensorFlow.

A checkpoint is a directory: `config.json` (model sizes, mel convention and schedules, readable by
humans), `model.weights.h5` (Keras weights) and `metadata.json` (format version, provenance).
Format version 2 stores the whole mel convention nested in the config; version 1 checkpoints (flat
mel fields) still load. Reading the config and metadata, and counting the weights, needs only
json and h5py, so describing a checkpoint (`diffwave-vocoder info`) starts no TensorFlow.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import DiffWaveConfig, stored_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
FORMAT_NAME = "diffwave-vocoder"
FORMAT_VERSION = 2


def read_checkpoint(path: str | os.PathLike) -> tuple[DiffWaveConfig, dict[str, Any]]:
    """The config and provenance metadata of a checkpoint directory (format fields removed);
    a missing, foreign, newer or unreadable checkpoint is a ValueError saying which."""
    root = Path(path)
    if not root.exists():
        raise ValueError(f"checkpoint not found: {root}")
    if not root.is_dir() or not (root / CONFIG_FILE).is_file():
        raise ValueError(f"not a diffwave-vocoder checkpoint: {root} (expected a directory with "
                         f"{CONFIG_FILE} and {WEIGHTS_FILE}; convert PyTorch .pt files with "
                         "`diffwave-vocoder convert`)")
    try:
        config = stored_config(json.loads((root / CONFIG_FILE).read_text()))
        metadata = json.loads((root / METADATA_FILE).read_text()) if (root / METADATA_FILE).exists() else {}
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"unreadable checkpoint config in {root}: {error}") from None
    if metadata.get("format", FORMAT_NAME) != FORMAT_NAME or metadata.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(f"{root} holds format {metadata.get('format')} v{metadata.get('format_version')}; "
                         f"this version reads {FORMAT_NAME} up to v{FORMAT_VERSION}")
    for key in ("format", "format_version", "package_version"):
        metadata.pop(key, None)
    if not (root / WEIGHTS_FILE).is_file():
        raise ValueError(f"checkpoint {root} has no {WEIGHTS_FILE}")
    return config, metadata


def description(config: DiffWaveConfig, metadata: dict[str, Any], parameters: int) -> dict[str, Any]:
    """Sizes, parameter count, mel convention, schedules and provenance, as `info` prints them."""
    return {"parameters": parameters, "config": config.to_dict(), "receptive_field": config.receptive_field,
            "metadata": metadata}


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """`Vocoder.load(path).info()` without building the model: the parameters are counted in the
    weights file (every stored variable, as Keras' count_params counts them)."""
    import h5py

    config, metadata = read_checkpoint(path)
    weights = Path(path) / WEIGHTS_FILE
    sizes: list[int] = []
    try:
        with h5py.File(weights, "r") as file:
            file.visititems(lambda _, item: sizes.append(item.size) if isinstance(item, h5py.Dataset) else None)
    except OSError as error:
        raise ValueError(f"cannot read weights from {weights}: {error}") from None
    return description(config, metadata, sum(sizes))
