"""Training checkpoints: complete or absent, whatever moment the process dies at.

A run directory keeps its checkpoints under `checkpoints/step-NNNNNNNNN/`, each holding
`state.json` (global step, data position, seed), `config.json` (model), `training.json` (settings)
and `variables.*` (model weights and optimizer state, a tf.train.Checkpoint). Each is written into a
temporary sibling and renamed into place (atomic.py), so a `step-*` directory is always whole; a
kill during a save leaves only a `.step-*.tmp` directory, which the next run removes. There is no
"latest" pointer file to get out of step: the newest complete directory is the latest.
Deletion renames a checkpoint out of the `step-*` namespace before removing its files.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from .io.atomic import atomic_directory

log = logging.getLogger(__name__)

FORMAT_NAME = "diffwave-vocoder-training"
FORMAT_VERSION = 1
STATE_FILE = "state.json"
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
