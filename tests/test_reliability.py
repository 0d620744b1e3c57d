"""Faults a user meets: a second trainer on a run, files others must read, a full disk during a
save, a mel from another toolkit. Real files, the real trainer and model; faults are real
(a lock held by another process, a small tmpfs) or injected into the writer where noted."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
import warnings

import numpy as np
import pytest

from diffwave_vocoder.io.atomic import atomic_directory
from diffwave_vocoder.io.audio import save_audio
from diffwave_vocoder.features.input_layout import MelRangeWarning
from diffwave_vocoder.training.checkpoints import load_for_export
from diffwave_vocoder.training.trainer import StorageError, Trainer, TrainingSettings
from diffwave_vocoder.features.mel import MelConvention, compute_mel
from diffwave_vocoder.config import DiffWaveConfig
from diffwave_vocoder.training.run_lock import RunLock, RunLockedError
from diffwave_vocoder.vocoder import Vocoder

TINY = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def settings(**changes) -> TrainingSettings:
    base = dict(max_steps=2, batch_size=4, crop_frames=8, checkpoint_every=2, log_every=1000, val_fraction=0.0)
    return TrainingSettings(**{**base, **changes})


def hidden(path):
    return sorted(p.relative_to(path) for p in path.rglob(".*"))


# -- one trainer per run ------------------------------------------------------------------------

HOLDER = r"""
import sys, time
from diffwave_vocoder.training.run_lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_trainer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(
        speech_corpus, tmp_path, capsys):
    from diffwave_vocoder.cli import main

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, env=ENV, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"run directory {run} is in use by another trainer "
                                                 rf"\(pid {holder.pid} on host \S+, started 20\d\d-"):
            Trainer(run, speech_corpus, config=TINY, settings=settings()).fit()
        assert not (run / "config.json").exists() and not (run / "checkpoints").exists()  # nothing touched
        assert main(["train", str(run), str(speech_corpus), "--max-steps", "1", "--batch-size", "4",
                     "--crop-frames", "8", "--val-fraction", "0"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by another trainer (pid {holder.pid} on host" in err
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops its lock
        holder.wait()
    result = Trainer(run, speech_corpus, config=TINY, settings=settings()).fit()
    assert result.finished and result.step == 2
    with RunLock(run):  # released when fit returned
        pass


def test_the_lock_excludes_a_second_holder_in_the_same_process_too(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on host"):
            RunLock(tmp_path / "run").acquire()
        assert lock.path.name == "trainer.lock"
    RunLock(tmp_path / "run").acquire().release()


# -- permissions --------------------------------------------------------------------------------

@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root):
    """Permission bits of root and everything below it, by kind."""
    found = {"dir": set(), "file": set()}
    for path in [root, *root.rglob("*")]:
        found["dir" if path.is_dir() else "file"].add(stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_written_files_get_the_permissions_the_umask_gives(speech_corpus, tmp_path, small_vocoder, mask, dir_mode,
                                                           file_mode, capsys):
    from diffwave_vocoder.cli import main

    with umask(mask):
        saved = small_vocoder.save(tmp_path / "checkpoint")
        save_audio(tmp_path / "out.wav", np.zeros(256, np.float32), 22050)
        np.save(tmp_path / "mel.npy", np.full((80, 4), 0.5, np.float32))
        assert main(["vocode", str(tmp_path / "mel.npy"), "--model", str(saved), "-o", str(tmp_path / "cli.wav"),
                     "--seed", "0"]) == 0
        with atomic_directory(tmp_path / "nested") as tmp:  # a SavedModel's layout: subdirectories
            (tmp / "variables").mkdir()
            (tmp / "variables" / "data").write_bytes(b"x")
        run = tmp_path / "run"
        Trainer(run, speech_corpus, config=TINY, settings=settings()).fit()
    assert modes(saved) == {"dir": {dir_mode}, "file": {file_mode}}
    assert modes(tmp_path / "nested") == {"dir": {dir_mode}, "file": {file_mode}}
    for wav in ("out.wav", "cli.wav"):
        assert stat.S_IMODE((tmp_path / wav).stat().st_mode) == file_mode
    for part in ("checkpoints", "vocoder", "config.json", "training.json", "trainer.lock"):
        assert modes(run / part) == ({"dir": {dir_mode}, "file": {file_mode}} if (run / part).is_dir()
                                     else {"dir": set(), "file": {file_mode}})


# -- a user's folder as the output ---------------------------------------------------------------

@pytest.mark.parametrize("command", [["export"], ["export", "--format", "saved_model"],
                                     ["grow", "--residual-layers", "8"]])
def test_writers_refuse_to_replace_a_folder_holding_the_users_files(tmp_path, small_vocoder, command, capsys):
    from diffwave_vocoder.cli import main

    source = small_vocoder.save(tmp_path / "checkpoint")
    folder = tmp_path / "my folder"
    (folder / "drafts").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "config.json").write_text("{}")  # a checkpoint's name among the user's files changes nothing
    assert main([command[0], str(source), str(folder), *command[1:]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to replace it" in err and "drafts, notes.txt" in err
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "drafts", "notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine" and hidden(tmp_path) == []


def test_writers_replace_their_own_output(tmp_path, small_vocoder):
    first = small_vocoder.save(tmp_path / "checkpoint")
    again = Vocoder.load(first)
    again.metadata["note"] = "second"
    again.save(first)  # a checkpoint over a checkpoint: the user asked for the same path twice
    assert Vocoder.load(first).metadata["note"] == "second"
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty", owned=()) as tmp:  # an empty folder holds nothing to lose
        (tmp / "a").write_text("a")
    assert (tmp_path / "empty" / "a").read_text() == "a" and hidden(tmp_path) == []


# -- disk full ----------------------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(path, size):
    """A tmpfs of `size` bytes mounted at path (None if this machine cannot mount one)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory, leave):
    """Fill a file system until `leave` bytes (rounded to pages) are free."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:
        while os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize > leave:
            try:
                f.write(b"\0" * 4096)
                f.flush()
            except OSError:
                break
    return filler


class FullDiskCheckpoint:
    """A tf.train.Checkpoint whose write stops with ENOSPC after writing part of its files."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def __getattr__(self, name):  # reading works as usual
        return getattr(self.checkpoint, name)

    def write(self, prefix):
        self.checkpoint.write(prefix)
        with open(f"{prefix}.data-00000-of-00001", "r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fault, ema_decay", [("tmpfs", 0.0), ("injected", 0.0), ("injected", 0.9)])
def test_a_full_disk_during_a_save_stops_with_one_message_and_keeps_the_previous_checkpoint(
        speech_corpus, tmp_path, monkeypatch, fault, ema_decay):
    with small_disk(tmp_path / "disk", 16 * 2 ** 20) as disk:
        if fault == "injected" or disk is None:  # no mount here (not root): inject ENOSPC into the writer
            root = tmp_path
            original = Trainer._checkpoint
            inject = {"on": False}
            monkeypatch.setattr(Trainer, "_checkpoint", lambda self, **parts: (
                FullDiskCheckpoint(original(self, **parts)) if inject["on"] else original(self, **parts)))
        else:
            root = disk
        run = root / "run"
        Trainer(run, speech_corpus, config=TINY, settings=settings(ema_decay=ema_decay)).fit()
        before = load_for_export(run / "checkpoints" / "step-000000002").model.get_weights()
        if root is disk:
            filler = fill(disk, leave=12 * 1024)  # the run files fit, a checkpoint (4 MB) does not
        else:
            inject["on"] = True
        trainer = Trainer(run, speech_corpus, settings=settings(max_steps=4, ema_decay=ema_decay))
        with pytest.raises(StorageError) as caught:
            trainer.fit()
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"cannot write checkpoint step-000000004 in {run / 'checkpoints'}: "
                                  "No space left on device; it needs about ")
        value, unit = message.split("it needs about ")[1].split(",")[0].split()
        needed = float(value) * {"KB": 1e3, "MB": 1e6}[unit]
        previous = sum(p.stat().st_size for p in (run / "checkpoints" / "step-000000002").iterdir())
        assert 0.9 * previous < needed < 1.1 * previous + 5000  # the size a checkpoint of this run takes
        assert " free there. " in message
        assert f"The previous checkpoint {run / 'checkpoints' / 'step-000000002'} is intact" in message
        assert "run the same command to resume" in message
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000000002"]
        assert hidden(run) == []  # the temporary was removed
        after = load_for_export(run / "checkpoints" / "step-000000002").model.get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(before, after))
        if root is disk:
            filler.unlink()
        else:
            inject["on"] = False
        resumed = Trainer(run, speech_corpus, settings=settings(max_steps=4)).fit()  # space is back
        assert resumed.finished and resumed.step == 4


# -- mels from another toolkit ------------------------------------------------------------------

def test_each_convention_knows_its_value_range_and_real_mels_lie_in_it(speech_corpus):
    from diffwave_vocoder.adapters.conventions import CONVENTIONS

    audio, _ = __import__("soundfile").read(sorted((speech_corpus / "wavs").glob("*.wav"))[0], dtype="float32")
    loud = np.clip(audio / np.abs(audio).max(), -1, 1)
    assert MelConvention().value_range() == (0.0, 1.0)
    for name, factory in CONVENTIONS.items():
        convention = factory()
        low, high = convention.value_range()
        mel = compute_mel(loud, convention)
        assert low <= mel.min() and mel.max() <= high, name
        silence = compute_mel(np.zeros(4096, np.float32), convention)
        assert np.isclose(silence.min(), low, atol=1e-4), name
    sine = np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050).astype(np.float32)  # full scale: near the top
    log_mel = compute_mel(sine, CONVENTIONS["tacotron2"]())
    assert CONVENTIONS["tacotron2"]().value_range()[1] - log_mel.max() < 1.5


@pytest.mark.parametrize("value", [-5.0, 1e30])
def test_a_mel_far_outside_the_convention_gets_one_warning_in_python_and_one_line_in_the_cli(
        small_vocoder, tmp_path, capsys, value):
    from diffwave_vocoder.cli import main

    mel = np.full((6, 80), value, np.float32)
    with pytest.warns(MelRangeWarning) as caught:
        small_vocoder.vocode(mel, seed=0)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert f"mel values span [{value:.4g}, {value:.4g}]" in text and "expects mels in [0, 1]" in text
    assert "--adapter" in text and caught[0].filename == __file__
    checkpoint = small_vocoder.save(tmp_path / "checkpoint")
    np.save(tmp_path / "mel.npy", mel)
    assert main(["vocode", str(tmp_path / "mel.npy"), "--model", str(checkpoint), "-o",
                 str(tmp_path / "out.wav")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: mel values span") and "--adapter" in err


def test_mels_in_range_or_slightly_over_give_no_warning_and_nan_is_still_an_error(small_vocoder):
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MelRangeWarning)
        small_vocoder.vocode([rng.uniform(0, 1, (5, 80)).astype(np.float32),
                              rng.uniform(-0.1, 1.1, (7, 80)).astype(np.float32)], seed=0)
    bad = np.full((4, 80), 0.5, np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        small_vocoder.vocode(bad)


def test_a_full_disk_at_the_export_stops_with_one_message_and_the_same_command_exports_later(
        speech_corpus, tmp_path, monkeypatch):
    with small_disk(tmp_path / "disk", 16 * 2 ** 20) as disk:
        root = disk or tmp_path
        run = root / "run"
        Trainer(run, speech_corpus, config=TINY, settings=settings()).fit()
        shutil.rmtree(run / "vocoder")
        if disk is not None:
            filler = fill(disk, leave=200 * 1024)  # less than the vocoder's 1.5 MB
        else:  # no mount here: the writer fails instead
            def full(self, path):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(Vocoder, "save", full)
        with pytest.raises(StorageError, match=rf"^cannot write the vocoder checkpoint vocoder in {run}: No space "
                                               r"left on device; it needs about 1\.\d MB, .* free there\. The "
                                               r"checkpoints in .* are intact"):
            Trainer(run, speech_corpus, settings=settings()).fit()
        assert hidden(run) == [] and not (run / "vocoder").exists()
        if disk is not None:
            filler.unlink()
        else:
            monkeypatch.undo()
        assert Trainer(run, speech_corpus, settings=settings()).fit().exported == run / "vocoder"
