"""Training checkpoints: complete or absent, whatever moment the process dies at.

A run directory keeps its checkpoints under `checkpoints/step-NNNNNNNNN/`, each holding
`state.json` (global step, data position, seed), `config.json` (model), `training.json` (settings)
and `variables.*` (model weights, optimizer state and, where the run keeps one, the weight average;
a tf.train.Checkpoint). Each is written into a
temporary sibling and renamed into place (io/atomic.py), so a `step-*` directory is always whole; a
kill during a save leaves only a `.step-*.tmp` directory, which the next run removes. There is no
"latest" pointer file to get out of step: the newest complete directory is the latest.
Deletion renames a checkpoint out of the `step-*` namespace before removing its files.
`load_for_export` reads a run, one of its checkpoints or an inference checkpoint as a `Vocoder`:
all that exporting, evaluating or fine-tuning from a run needs, without the trainer.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import keras
import tensorflow as tf

from ..config import DiffWaveConfig, stored_config
from ..io.atomic import atomic_directory
from ..model import build_model
from ..vocoder import CONFIG_FILE, Vocoder
from .weight_average import CHECKPOINT_KEY as AVERAGE_KEY, WeightAverage

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"  # of a run directory
FORMAT_NAME = "diffwave-vocoder-training"
FORMAT_VERSION = 2  # 2: config.json nests the mel convention (1: flat mel fields)
STATE_FILE = "state.json"
SETTINGS_FILE = "training.json"  # a run's training settings, beside its config.json and in each checkpoint
VARIABLES_PREFIX = "variables"
_NAME = re.compile(r"^step-(\d+)$")


def is_training_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / STATE_FILE).is_file()


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's state.json, checked for format and version."""
    file = Path(path) / STATE_FILE
    try:
        state = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable training checkpoint state {file}: {error}") from None
    if state.get("format") != FORMAT_NAME or int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} is not a {FORMAT_NAME} checkpoint up to version {FORMAT_VERSION} "
                         f"(format {state.get('format')!r}, version {state.get('format_version')!r})")
    return state


class CheckpointStore:
    """The checkpoints of one run: list, save atomically, rotate."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def path(self, step: int) -> Path:
        return self.directory / f"step-{step:09d}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for child in self.directory.iterdir():
            match = _NAME.match(child.name)
            if match and is_training_checkpoint(child):
                found.append(int(match.group(1)))
        return sorted(found)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def remove_partial(self) -> list[Path]:
        """Delete what a killed save or deletion left behind (hidden temporaries); returns them."""
        if not self.directory.is_dir():
            return []
        leftovers = [c for c in self.directory.iterdir() if c.name.startswith(".")]
        for child in leftovers:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return leftovers

    def save(self, step: int, state: dict[str, Any], files: dict[str, str],
             write_variables: Callable[[str], Any]) -> Path:
        """Write checkpoint `step`: `write_variables(prefix)` writes the tf.train.Checkpoint,
        `files` maps extra file names to their text. The directory appears complete or not at all."""
        target = self.path(step)
        with atomic_directory(target) as tmp:
            write_variables(str(tmp / VARIABLES_PREFIX))
            for name, text in files.items():
                (tmp / name).write_text(text)
            # state.json last: a directory is a checkpoint only once everything else is in it.
            (tmp / STATE_FILE).write_text(json.dumps(
                {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **state}, indent=2) + "\n")
        return target

    def rotate(self, keep_last: int, keep_every: int = 0) -> list[int]:
        """Delete all but the newest `keep_last` and the multiples of `keep_every`; returns the deleted."""
        steps = self.steps()
        keep = set(steps[-keep_last:]) if keep_last > 0 else set()
        if keep_every > 0:
            keep |= {s for s in steps if s % keep_every == 0}
        deleted = [s for s in steps if s not in keep]
        for step in deleted:
            self.delete(step)
        return deleted

    def delete(self, step: int) -> None:
        """Rename out of the step-* namespace first, so a kill mid-way never leaves a partial checkpoint."""
        trash = Path(tempfile.mkdtemp(prefix=".deleting-", dir=self.directory))
        os.replace(self.path(step), trash / "checkpoint")
        shutil.rmtree(trash)


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build Keras layers under a dtype policy without leaving it set globally."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def training_metadata(step: int, init_provenance: dict[str, Any] | None,
                      setting_changes: list[dict[str, Any]] | None = None,
                      weight_average: dict[str, Any] | None = None) -> dict[str, Any]:
    """An exported vocoder's provenance: its step, what it started from when fine-tuned, the
    settings changed when the run was resumed, and the weight average it holds ({decay, updates})."""
    metadata: dict[str, Any] = {"training_step": step, "source": "diffwave-vocoder train"}
    if init_provenance is not None:
        metadata["init_from"] = init_provenance
    if setting_changes:
        metadata["setting_changes"] = setting_changes
    if weight_average is not None:
        metadata[AVERAGE_KEY] = weight_average
    return metadata


def _export_source(src: str | os.PathLike) -> Path:
    """The checkpoint directory `load_for_export` reads: a run's newest checkpoint, or `src` itself."""
    root = Path(src)
    if not root.exists():
        raise ValueError(f"export source not found: {root}")
    if (root / CHECKPOINTS_DIR).is_dir():
        latest = CheckpointStore(root / CHECKPOINTS_DIR).latest()
        if latest is None:
            raise ValueError(f"training run {root} has no complete checkpoint yet")
        root = latest
    elif (root / SETTINGS_FILE).is_file() and not is_training_checkpoint(root):
        raise ValueError(f"training run {root} has no complete checkpoint yet")
    if not is_training_checkpoint(root) and not (root / CONFIG_FILE).is_file():
        raise ValueError(f"not a training run, training checkpoint or vocoder checkpoint: {root} (expected "
                         f"{CHECKPOINTS_DIR}/, state.json or config.json in it)")
    return root


def export_source_config(src: str | os.PathLike) -> DiffWaveConfig:
    """The model config of what `load_for_export(src)` would load, read without building the model."""
    return stored_config(json.loads((_export_source(src) / CONFIG_FILE).read_text()))


def load_for_export(src: str | os.PathLike, average: bool = True) -> Vocoder:
    """A Vocoder from a training run directory (its newest checkpoint), one training checkpoint
    directory, or an inference checkpoint, so that every export format loads its source alike.

    A training checkpoint that keeps a weight average (ema_decay > 0) gives the average, as the
    trainer exports; `average=False` gives its raw weights."""
    root = _export_source(src)
    if not is_training_checkpoint(root):
        return Vocoder.load(root)
    state = read_state(root)
    config = stored_config(json.loads((root / CONFIG_FILE).read_text()))
    with dtype_policy("float32"):
        model = build_model(config)
    averaged = average and AVERAGE_KEY in state
    weight_average = WeightAverage(model.trainable_variables, state[AVERAGE_KEY]["decay"]) if averaged else None
    try:
        tf.train.Checkpoint(model=model, **({AVERAGE_KEY: weight_average} if averaged else {})) \
            .read(str(root / VARIABLES_PREFIX)).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError, IndexError) as error:
        raise ValueError(f"cannot read the weights of training checkpoint {root}: {' '.join(str(error).split())}") \
            from None
    if weight_average is not None:
        weight_average.copy_to(model.trainable_variables)
    return Vocoder(model, config, training_metadata(int(state["step"]), state.get("init_from"),
                                                     state.get("setting_changes"),
                                                     state.get(AVERAGE_KEY) if averaged else None))
