"""The vocoder checkpoint directory, read without TensorFlow.

A checkpoint is a directory: `config.json` (model sizes, mel convention and schedules, readable by
humans), `model.weights.h5` (Keras weights) and `metadata.json` (format version, provenance).
Format version 2 stores the whole mel convention nested in the config; version 1 checkpoints (flat
mel fields) still load. Reading the config and metadata, and counting the weights, needs only
json and h5py, so describing a checkpoint (`diffwave-vocoder info`) starts no TensorFlow.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .config import EMBEDDING_DIM, EMBEDDING_HIDDEN, DiffWaveConfig, stored_config
from .features.input_layout import check_weights_fit

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


def expected_weight_shapes(config: DiffWaveConfig) -> dict[str, tuple[int, ...]]:
    """The Keras weight path and shape of every weight `model.build_model(config)` creates, known
    without building it (a test holds the two equal), so a checkpoint can be checked without TensorFlow."""
    c, e, h = config.residual_channels, EMBEDDING_DIM, EMBEDDING_HIDDEN
    shapes = {"input_projection/kernel": (1, c), "input_projection/bias": (c,),
              "diffusion_embedding/projection1/kernel": (e, h), "diffusion_embedding/projection1/bias": (h,),
              "diffusion_embedding/projection2/kernel": (h, h), "diffusion_embedding/projection2/bias": (h,)}
    if not config.unconditional:
        for j, stride in enumerate(config.upsample_factors, 1):
            shapes[f"spectrogram_upsampler/conv{j}/kernel"] = (2 * stride, 3, 1, 1)
            shapes[f"spectrogram_upsampler/conv{j}/bias"] = (1,)
    for i in range(config.residual_layers):
        block = f"residual_block_{i}/"
        shapes[block + "dilated_conv/kernel"], shapes[block + "dilated_conv/bias"] = (3, c, 2 * c), (2 * c,)
        shapes[block + "diffusion_projection/kernel"] = (h, c)
        shapes[block + "diffusion_projection/bias"] = (c,)
        if not config.unconditional:
            shapes[block + "conditioner_projection/kernel"] = (config.n_mels, 2 * c)
            shapes[block + "conditioner_projection/bias"] = (2 * c,)
        shapes[block + "output_projection/kernel"], shapes[block + "output_projection/bias"] = (c, 2 * c), (2 * c,)
    shapes.update({"skip_projection/kernel": (c, c), "skip_projection/bias": (c,),
                   "output_projection/kernel": (c, 1), "output_projection/bias": (1,)})
    return shapes


def total_training_steps(metadata: dict[str, Any]) -> int | None:
    """The training steps behind a checkpoint, counting the checkpoints it was fine-tuned from: a run
    started with `--init-from` adds its own steps to that checkpoint's. A converted checkpoint counts its
    source's steps where known; None where nothing records them."""
    if "training_step" not in metadata:
        return metadata.get("source_step")
    init = metadata.get("init_from")
    earlier = total_training_steps(init["metadata"]) if init else None
    return metadata["training_step"] + (earlier or 0)


def description(config: DiffWaveConfig, metadata: dict[str, Any], parameters: int) -> dict[str, Any]:
    """Sizes, parameter count, mel convention, schedules and provenance, as `info` prints them."""
    return {"parameters": parameters, "config": config.to_dict(), "receptive_field": config.receptive_field,
            "metadata": metadata}


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """`Vocoder.load(path).info()` without building the model: the weights file is checked against
    the shapes the config gives (`expected_weight_shapes`), whose sizes are the parameter count."""
    config, metadata = read_checkpoint(path)
    shapes = list(expected_weight_shapes(config).values())
    check_weights_fit(shapes, Path(path) / WEIGHTS_FILE)
    return description(config, metadata, sum(math.prod(shape) for shape in shapes))
