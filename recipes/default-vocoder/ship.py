"""Export the newest checkpoint of the default-vocoder run into the package, with its provenance and
its quality on held-out speech (voices and texts never trained on) recorded in metadata.json.

    python recipes/default-vocoder/ship.py [WORK_DIR] [--run RUN_DIR] [--full]

WORK_DIR is train.sh's (default ~/diffwave-default-vocoder); RUN_DIR defaults to its run/. Writes
diffwave_vocoder/pretrained/default (atomically) and recipes/default-vocoder/evaluation.json (per-clip
scores, with each clip's voice). Prints the summary overall and per voice. --full also scores the
50-step schedule.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from diffwave_vocoder.cli import OFF_FLAG_VALUES
from diffwave_vocoder.evaluation.evaluate import evaluate
from diffwave_vocoder.io.atomic import atomic_file
from diffwave_vocoder.training.checkpoints import load_for_export
from diffwave_vocoder.training.trainer import TrainingSettings, stored_run
from diffwave_vocoder.pretrained import DEFAULT_PRESET, PRESETS_DIR
from diffwave_vocoder.vocoder_format import total_training_steps

HERE = Path(__file__).resolve().parent
RECIPE_CONFIG = json.loads((HERE / "config.json").read_text())


def corpus_manifest(path: Path) -> dict:
    if not (path / "corpus.json").is_file():
        raise ValueError(f"{path} is not a corpus made by train.sh (no corpus.json there)")
    manifest = json.loads((path / "corpus.json").read_text())
    return {key: manifest[key] for key in ("clips", "seed", "sample_rate", "voices", "tools")}


def rounded(value: float) -> float | None:
    """Four decimals; None for a metric undefined on every clip (JSON has no NaN)."""
    return round(value, 4) if math.isfinite(value) else None


def training_history(metadata: dict) -> list[dict]:
    """The runs behind an export, oldest first: a run started with --init-from continues the one it was
    initialised from (weights kept, fresh optimizer), so its steps add to that export's. A run resumed
    with changed settings (a learning rate lowered by hand) lists them by the run's step."""
    init = metadata.get("init_from")
    earlier = training_history(init["metadata"]) if init else []
    run = {"steps": metadata["training_step"]}
    if init:
        run["init_from"] = Path(init["path"]).name
    if metadata.get("setting_changes"):
        run["setting_changes"] = metadata["setting_changes"]
    if metadata.get("weight_average"):
        run["weight_average"] = metadata["weight_average"]
    return earlier + [run]


TRAIN_SH = "bash recipes/default-vocoder/train.sh WORK"
TRAINER = "diffwave-vocoder train WORK/run WORK/train --val WORK/val --config recipes/default-vocoder/config.json"


def started_with(run_dir: Path, setting_changes: list[dict]) -> dict:
    """The settings a run started with that differ from the recipe's config (so its first command gave
    them as flags): the run's stored settings with its recorded setting changes undone; {} for a
    directory that is not a run (no training.json)."""
    settings = stored_run(run_dir)[1]
    if settings is None:
        return {}
    for change in reversed(setting_changes):
        settings = settings.replace(**{field: then_now[0] for field, then_now in change.items() if field != "step"})
    recipe = TrainingSettings().replace(**RECIPE_CONFIG["training"])
    return {field.name: getattr(settings, field.name) for field in dataclasses.fields(TrainingSettings)
            if field.name not in ("init_from", "max_steps")
            and getattr(settings, field.name) != getattr(recipe, field.name)}


def training_commands(run: dict, program: str = TRAIN_SH) -> str:
    """The commands behind one run of training_history: `program` (train.sh, or the trainer command it
    runs) with the settings it started with as flags, stopped at each step where the run was resumed
    with changed settings, then resumed with those settings as flags."""
    base = program + (f" --init-from {run['init_from']}" if "init_from" in run else "")
    flags: dict[str, object] = dict(run.get("started_with", {}))

    def flag_value(field: str, value: object) -> object:
        if value is not None:
            return value
        if field not in OFF_FLAG_VALUES:
            raise ValueError(f"the run records {field} as null, but only {', '.join(sorted(OFF_FLAG_VALUES))} "
                             "can be switched off by a flag: the checkpoint's training_history was edited by hand?")
        return OFF_FLAG_VALUES[field]

    def command(extra: str = "") -> str:
        return base + "".join(f" --{field.replace('_', '-')} {flag_value(field, value)}"
                              for field, value in flags.items()) + extra

    commands = []
    for change in run.get("setting_changes", []):
        commands.append(command(f" --max-steps {change['step']}"))
        flags.update({field: then_now[1] for field, then_now in change.items() if field != "step"})
    return "; then ".join(commands + [command()])


def ship(work: Path, run: Path, full: bool) -> None:
    # The corpora's manifests first: a wrong WORK_DIR fails before minutes of evaluation.
    data = {name: corpus_manifest(work / name) for name in ("train", "val", "heldout")}
    vocoder = load_for_export(run)
    step = total_training_steps(vocoder.metadata)
    # The provenance too: a run whose history cannot be written as commands fails before the evaluation.
    history = training_history(vocoder.metadata)
    flags = started_with(run, history[-1].get("setting_changes", []))
    if flags:
        history[-1]["started_with"] = flags
    commands = {"training_command": training_commands(history[-1]),
                "trainer_command": training_commands(history[-1], TRAINER)}
    reports = {"fast": evaluate(vocoder, work / "heldout", steps="fast", progress=True)}
    if full:
        reports["full"] = evaluate(vocoder, work / "heldout", steps="full", baseline=None, ground_truth=False,
                                   progress=True)
    quality = {}
    for schedule, report in reports.items():
        print(f"\n{schedule} schedule, step {step}:\n{report.table()}\n\nper voice:\n{report.table(by_voice=True)}")
        quality[schedule] = [{k: (rounded(v) if isinstance(v, float) else v) for k, v in row.items()}
                             for row in report.summary()]
    vocoder.metadata.update({
        "preset": DEFAULT_PRESET,
        "training_history": history,
        "total_training_steps": step,
        "recipe": "recipes/default-vocoder (train.sh, config.json, ship.py)",
        **commands,
        "training_config": RECIPE_CONFIG,
        "training_data": data["train"],
        "validation_data": data["val"],
        "evaluation_data": {**data["heldout"],
                            "note": "voices and texts never trained on (corpus --exclude-texts-of train)"},
        "quality_heldout": quality,
    })
    out = vocoder.save(PRESETS_DIR / DEFAULT_PRESET)
    evaluation = {schedule: report.to_dict() for schedule, report in reports.items()}
    with atomic_file(HERE / "evaluation.json") as tmp:
        tmp.write_text(json.dumps(evaluation, indent=1) + "\n")
    print(f"\nwrote {out} (step {step}) and {HERE / 'evaluation.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dir", nargs="?", type=Path, default=Path.home() / "diffwave-default-vocoder")
    parser.add_argument("--run", type=Path, help="the run directory to export (default: WORK_DIR/run)")
    parser.add_argument("--full", action="store_true", help="also evaluate the 50-step schedule")
    args = parser.parse_args()
    try:
        ship(args.work_dir, args.run or args.work_dir / "run", args.full)
    except (ValueError, OSError) as error:  # a wrong directory, a run without checkpoints, a missing corpus
        sys.exit(f"ship.py: {' '.join(str(error).split())}")


if __name__ == "__main__":
    main()
