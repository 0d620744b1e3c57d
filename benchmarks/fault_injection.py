"""Fault injection: SIGKILL a small training run at random moments, resume it each time, and check
that it ends exactly where an uninterrupted run ends, with no temporary left behind.

    python benchmarks/fault_injection.py --kills 50 --json figures.json     # README's long form
    python benchmarks/fault_injection.py --kills 5                          # CI's short form (tests/)

Each kill is a real SIGKILL at a moment drawn at random (seeded by --seed) from one of four phases:

* step: the parent kills the trainer process from outside, a random few milliseconds after it
  finished a randomly chosen training step (it may be in the next step, or in a save);
* save / rotation / export: the trainer process kills itself (os.kill(getpid(), SIGKILL)) just
  before or just after one file-system operation (mkdtemp, a file write, the weights write, fsync,
  rename, exchange, unlink, rmtree) chosen at random among those an uninterrupted run performs in
  that phase: writing a checkpoint, deleting old ones, writing the final vocoder/.

After every kill the same training command runs again and must resume, with no manual step, from
the newest complete checkpoint. After the last kill it runs to the end; its final checkpoint and
exported vocoder must equal an uninterrupted run's (max abs weight difference <= 1e-5), with the
same checkpoints kept and no hidden temporary anywhere in the run directory.

A second part corrupts data during training: while a run trains, one wav is truncated to its header
and another overwritten with noise bytes, and a new garbage wav appears; the run is killed and
resumed. Each broken file must be named in the log and skipped, and training must reach its end.

The model is tiny (8 residual channels, 4 layers) and the data small (--data, default: four
synthetic 3 s clips), so each restart costs mostly TensorFlow's start-up. Prints one JSON object
(also written to --json); exit status 0 when every check passed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

MODEL = dict(residual_channels=8, residual_layers=4, dilation_cycle_length=2)
SETTINGS = dict(batch_size=4, crop_frames=8, checkpoint_every=2, keep_last=2, keep_every=0, log_every=1000,
                val_fraction=0.0, seed=0)
KINDS = ("step", "save", "rotation", "export")
WEIGHTS = {"step": 0.3, "save": 0.3, "rotation": 0.25, "export": 0.15}
TOLERANCE = 1e-5


# -- the trainer process ----------------------------------------------------------------------------

def child(plan_file: str) -> None:
    """Train the plan's run with file-system operations instrumented; kill itself at the plan's target."""
    import logging

    plan = json.loads(Path(plan_file).read_text())
    logging.basicConfig(level=logging.INFO, filename=plan["log"], format="%(message)s", force=True)
    log = logging.getLogger("fault_injection")

    import keras
    import numpy as np
    import tensorflow as tf

    from diffwave_vocoder.io import atomic
    from diffwave_vocoder.training.checkpoints import CheckpointStore, load_for_export
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings
    from diffwave_vocoder.config import DiffWaveConfig
    from diffwave_vocoder.vocoder import Vocoder

    target = plan.get("target")  # {"phase", "step", "index", "when"}: kill at that operation
    record: list[list] = []
    where = {"phase": None, "step": None, "index": 0, "count": 0}

    def operation(name: str, call):
        def wrapped(*args, **kwargs):
            phase = where["phase"]
            if phase is None:
                return call(*args, **kwargs)
            where["index"] += 1
            record.append([phase, where["step"], where["index"], name])
            hit = False
            if target and phase == target["phase"] and where["step"] >= target["step"]:
                where["count"] += 1  # counted on from the target step: a shorter occurrence carries over
                hit = where["count"] >= target["index"]
            if hit and target["when"] == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = call(*args, **kwargs)
            if hit:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapped

    def in_phase(phase: str, method, step_of):
        def wrapped(self, *args, **kwargs):
            outer = dict(where)
            where.update(phase=phase, step=step_of(self, args), index=0)
            try:
                return method(self, *args, **kwargs)
            finally:
                where.update(phase=outer["phase"], step=outer["step"], index=outer["index"])
        return wrapped

    for module, name in [(os, "replace"), (os, "fsync"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree"),
                         (atomic.tempfile, "mkdtemp"), (atomic.tempfile, "mkstemp"), (atomic, "_exchange"),
                         (Path, "write_text"), (tf.train.Checkpoint, "write"), (keras.Model, "save_weights")]:
        setattr(module, name, operation(f"{getattr(module, '__name__', module)}.{name}", getattr(module, name)))
    Trainer.save = in_phase("save", Trainer.save, lambda self, args: args[0])
    Trainer.export = in_phase("export", Trainer.export, lambda self, args: args[1])
    store = CheckpointStore
    store.rotate = in_phase("rotation", store.rotate, lambda self, args: where["step"])

    make_step, restore = Trainer._make_train_step, Trainer._restore

    def counting_step(self):
        step = make_step(self)

        def run(iterator):
            result = step(iterator)
            self._steps_done += 1
            log.info("stepped %d", self._steps_done)
            return result
        return run

    def restore_and_count(self):
        position = restore(self)
        self._steps_done = position[0]
        return position

    Trainer._make_train_step, Trainer._restore = counting_step, restore_and_count
    trainer = Trainer(plan["run"], plan["data"], config=DiffWaveConfig(**MODEL),
                      settings=TrainingSettings(**plan["settings"]))
    result = trainer.fit()
    log.info("finished at step %d", result.step)
    if plan.get("record"):
        Path(plan["record"]).write_text(json.dumps(record))
    weights = {f"checkpoint_{i}": w for i, w in enumerate(load_for_export(plan["run"]).model.get_weights())}
    weights.update({f"vocoder_{i}": w for i, w in enumerate(
        Vocoder.load(Path(plan["run"]) / "vocoder").model.get_weights())})
    np.savez(plan["weights"], **weights)


# -- the parent -------------------------------------------------------------------------------------

def synthesise_data(directory: Path, clips: int = 4, seconds: float = 3.0, rate: int = 22050) -> Path:
    """Harmonic tones with vibrato and noise: enough structure for a tiny model's loss to move."""
    import numpy as np
    import soundfile

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(clips):
        f0 = 110.0 * (1 + i / 3) * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        audio = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) ** 2
        audio = 0.3 * audio / np.abs(audio).max() + 0.01 * rng.standard_normal(len(t))
        soundfile.write(directory / f"clip-{i}.wav", audio.astype(np.float32), rate, subtype="PCM_16")
    return directory


def disk_used(path: Path) -> int:
    """Bytes allocated on disk under path."""
    return sum(p.lstat().st_blocks * 512 for p in [path, *path.rglob("*")])


def complete_steps(run: Path) -> list[int]:
    """Steps of the checkpoints a resume may use: a step-* directory with its state.json."""
    directory = run / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in directory.iterdir()
                  if p.name.startswith("step-") and (p / "state.json").is_file())


def hidden(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


class Runner:
    def __init__(self, work: Path, data: Path, settings: dict):
        self.work, self.data, self.settings = work, data, settings
        self.starts = 0
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}

    def start(self, run: Path, log: Path, target: dict | None = None, record: Path | None = None,
              settings: dict | None = None, data: Path | None = None) -> subprocess.Popen:
        self.starts += 1
        plan = {"run": str(run), "data": str(data or self.data), "log": str(log), "target": target,
                "settings": settings or self.settings, "record": str(record) if record else None,
                "weights": str(self.work / f"{run.name}-weights.npz")}
        plan_file = self.work / f"plan-{self.starts}.json"
        plan_file.write_text(json.dumps(plan))
        return subprocess.Popen([sys.executable, __file__, "--child", str(plan_file)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=open(f"{log}.stderr", "w"))


def wait_for_line(process: subprocess.Popen, log: Path, predicate, poll: float = 0.005) -> bool:
    """Wait until a line of the log satisfies predicate (True) or the process ends (False)."""
    seen = 0
    while True:
        if log.exists():
            lines = log.read_text().splitlines()
            if any(predicate(line) for line in lines[seen:]):
                return True
            seen = max(len(lines) - 1, 0)
        if process.poll() is not None:
            return False
        time.sleep(poll)


def check_resume(log: Path, latest: int) -> None:
    """The process must have resumed from the newest complete checkpoint (or started afresh without one)."""
    started = 0
    for line in log.read_text().splitlines():
        if line.startswith("resuming from "):
            started = int(line.rsplit("(step ", 1)[1].rstrip(")"))
    if started != latest:
        raise RuntimeError(f"{log}: resumed from step {started}, not from the newest complete checkpoint {latest}")


def max_difference(a: Path, b: Path, prefix: str) -> float:
    import numpy as np

    x, y = np.load(a), np.load(b)
    names = sorted(n for n in x.files if n.startswith(prefix))
    assert names and names == sorted(n for n in y.files if n.startswith(prefix))
    return max(float(np.abs(x[n] - y[n]).max()) for n in names)


def kill_suite(runner: Runner, kills: int, rng: random.Random) -> dict:
    work, settings = runner.work, runner.settings
    max_steps = settings["max_steps"]
    reference = work / "reference"
    record_file = work / "reference-ops.json"
    process = runner.start(reference, work / "reference.log", record=record_file)
    if process.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed: {(work / 'reference.log.stderr').read_text()[-2000:]}")
    operations = json.loads(record_file.read_text())

    run = work / "run"
    delivered, survived, by_kind, leftovers_after_kill, attempts = [], 0, {k: 0 for k in KINDS}, 0, 0
    max_disk, pending = 0, False  # pending: the last kill's run has not been resumed yet
    while len(delivered) < kills:
        attempts += 1
        if attempts > 4 * kills + 10:
            raise RuntimeError(f"only {len(delivered)} of {kills} kills landed in {attempts} attempts")
        durable = complete_steps(run)
        latest = durable[-1] if durable else 0
        training = latest + 1 < max_steps
        # Most kills land in training; the last ones (or all, once training is over) in the export.
        exporting = not training or len(delivered) >= kills - math.ceil(0.15 * kills)
        kinds = [k for k in KINDS if (k == "export") == exporting]
        kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        ahead = lambda step: latest < step <= latest + 6  # noqa: E731 - a few steps past the resume point
        log = work / f"attempt-{attempts:03d}.log"
        if kind == "step":
            stop_after = rng.randint(latest + 1, min(latest + 6, max_steps - 1))
            process = runner.start(run, log)
            wait_for_line(process, log, lambda line: line == f"stepped {stop_after}")
            time.sleep(rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGKILL)
            target = {"phase": "step", "step": stop_after}
        else:
            candidates = [op for op in operations if op[0] == kind and (kind == "export" or ahead(op[1]))] or [
                op for op in operations if op[0] == kind and op[1] > latest]
            if not candidates:
                continue
            phase, step, index, name = rng.choice(candidates)
            target = {"phase": kind, "step": step, "index": index,
                      "when": rng.choice(["before", "after"]), "operation": name}
            process = runner.start(run, log, target=target)
        code = process.wait()
        check_resume(log, latest)
        survived, pending = survived + pending, False
        if code != -signal.SIGKILL:
            if code != 0:
                raise RuntimeError(f"the trainer failed after a kill (exit {code}): "
                                   f"{Path(f'{log}.stderr').read_text()[-2000:]}")
            continue  # the run ended before the target: not a kill
        delivered.append(target)
        pending = True
        by_kind[kind] += 1
        for step in complete_steps(run):  # a checkpoint that looks complete must read back (the next run checks)
            if not (run / "checkpoints" / f"step-{step:09d}" / "variables.index").is_file():
                raise RuntimeError(f"checkpoint step {step} is incomplete after a kill")
        leftovers_after_kill += bool(hidden(run))
        max_disk = max(max_disk, disk_used(run))

    final_log = work / "final.log"
    latest = (complete_steps(run) or [0])[-1]
    process = runner.start(run, final_log)
    if process.wait() != 0:
        raise RuntimeError(f"the final resume failed: {Path(f'{final_log}.stderr').read_text()[-2000:]}")
    check_resume(final_log, latest)
    survived += pending
    final = {
        "kills_injected": len(delivered),
        "kills_survived": survived,
        "kills_by_phase": by_kind,
        "kills": delivered,
        "trainer_starts": runner.starts,
        "max_weight_difference_checkpoint": max_difference(work / "run-weights.npz",
                                                           work / "reference-weights.npz", "checkpoint_"),
        "max_weight_difference_vocoder": max_difference(work / "run-weights.npz",
                                                        work / "reference-weights.npz", "vocoder_"),
        "kills_that_left_temporaries": leftovers_after_kill,
        "temporaries_at_end": hidden(run),
        "checkpoints_kept": complete_steps(run),
        "checkpoints_kept_uninterrupted": complete_steps(reference),
        "disk_used_bytes": disk_used(run),
        "disk_used_max_bytes": max(max_disk, disk_used(run)),
        "disk_used_uninterrupted_bytes": disk_used(reference),
        "max_steps": max_steps,
    }
    final["passed"] = (final["kills_injected"] == kills and final["kills_survived"] == kills
                       and final["max_weight_difference_checkpoint"] <= TOLERANCE
                       and final["max_weight_difference_vocoder"] <= TOLERANCE
                       and not final["temporaries_at_end"]
                       and final["checkpoints_kept"] == final["checkpoints_kept_uninterrupted"])
    return final


def corrupt_suite(runner: Runner, rng: random.Random) -> dict:
    """Break wavs while a run trains on them; the run must name them, skip them and finish."""
    import numpy as np

    work = runner.work
    data = work / "corrupt-data"
    shutil.copytree(runner.data, data)
    wavs = sorted(data.rglob("*.wav"))
    if len(wavs) < 3:
        raise RuntimeError(f"the corrupt-data check needs at least 3 wavs in {runner.data}")
    truncated, overwritten = wavs[0], wavs[1]
    added = truncated.parent / "appeared-during-training.wav"
    settings = {**runner.settings, "max_steps": 30, "checkpoint_every": 5}
    run, log = work / "corrupt-run", work / "corrupt.log"
    process = runner.start(run, log, settings=settings, data=data)
    if not wait_for_line(process, log, lambda line: line == "stepped 5"):
        raise RuntimeError(f"the corrupt-data run ended early: {Path(f'{log}.stderr').read_text()[-2000:]}")
    with open(truncated, "r+b") as f:
        f.truncate(44 + 512)  # the header and 256 samples: every crop reads past the end
    overwritten.write_bytes(np.random.default_rng(rng.randrange(2 ** 32)).bytes(overwritten.stat().st_size))
    added.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot a wav at all")
    metadata = data / "metadata.csv"
    if metadata.is_file():  # an LJSpeech folder lists its clips: the new one is listed too
        with open(metadata, "a", encoding="utf-8") as f:
            f.write(f"{added.stem}|garbage|garbage\n")
    wait_for_line(process, log, lambda line: line == "stepped 20")
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_log = work / "corrupt-resumed.log"
    code = runner.start(run, resumed_log, settings=settings, data=data).wait()
    text = log.read_text() + resumed_log.read_text()
    named = {path.name: str(path) in text for path in (truncated, overwritten, added)}
    finished = f"finished at step {settings['max_steps']}" in resumed_log.read_text()
    return {"files_broken": len(named), "named_in_log": sum(named.values()), "named": named,
            "killed_while_training_on_them": killed, "resume_exit_code": code, "finished": finished,
            "passed": code == 0 and finished and all(named.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs to inject (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    parser.add_argument("--data", type=Path, help="directory of 22.05 kHz wavs (default: synthetic clips)")
    parser.add_argument("--work", type=Path, help="working directory (default: a fresh temporary one, removed)")
    parser.add_argument("--max-steps", type=int, help="length of the run (default: 3 steps per kill, >= 24)")
    parser.add_argument("--no-corrupt", action="store_true", help="skip the corrupt-data check")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    import tempfile

    began = time.monotonic()
    work = args.work or Path(tempfile.mkdtemp(prefix="fault-injection-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = args.data or synthesise_data(work / "data")
        max_steps = args.max_steps or max(24, 3 * args.kills)
        runner = Runner(work, data, {**SETTINGS, "max_steps": max_steps})
        rng = random.Random(args.seed)
        figures = kill_suite(runner, args.kills, rng)
        if args.json:  # the kill figures, before the corrupt-data part runs
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        if not args.no_corrupt:
            figures["corrupt_data"] = corrupt_suite(runner, rng)
            figures["passed"] = figures["passed"] and figures["corrupt_data"]["passed"]
        figures["seconds"] = round(time.monotonic() - began, 1)
        text = json.dumps(figures, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
        return 0 if figures["passed"] else 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
