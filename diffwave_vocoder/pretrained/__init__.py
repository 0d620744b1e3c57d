"""Vocoders that ship inside the package, one checkpoint directory per preset (as `Vocoder.save` writes).

`default` is the vocoder that `load_vocoder("diffwave")` and the CLI's `vocode`/`resynth` use when
no checkpoint is given. Its `metadata.json` records how it was made: the corpus and its seed, the
exact training command and config, the step count and its measured quality; the recipe that
retrains it is `recipes/default-vocoder/` in the source repository.
"""
from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent
DEFAULT_PRESET = "default"


def list_presets() -> list[str]:
    """Names of the checkpoints shipped with this installation."""
    return sorted(p.name for p in PRESETS_DIR.iterdir() if (p / "config.json").is_file())


def preset_path(name: str = DEFAULT_PRESET) -> Path:
    """The checkpoint directory of a shipped preset."""
    path = PRESETS_DIR / name
    if not (path / "config.json").is_file():
        raise ValueError(f"no shipped vocoder preset named {name!r}; presets in this installation: "
                         f"{list_presets() or 'none'}")
    return path
