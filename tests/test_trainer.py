"""The trainer on a real (tiny) Keras model and real speech files: objective, exact resume through
kills, rotation, TensorBoard, export, distribution, mixed precision, CLI."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from diffwave_vocoder.training.data import example_indices, make_dataset
from diffwave_vocoder.training.checkpoints import load_for_export
from diffwave_vocoder.training.trainer import (Progress, Trainer, TrainingSettings, cpu_has_bfloat16,
                                               load_config_file, train)
from diffwave_vocoder.cli import ON_X86
from diffwave_vocoder.config import DiffWaveConfig
from diffwave_vocoder.model import native_dilated_conv_trains
from diffwave_vocoder.vocoder import Vocoder

TINY = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2)
BASE = dict(max_steps=8, batch_size=4, crop_frames=8, checkpoint_every=4, log_every=2, val_fraction=0.0)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def settings(**changes) -> TrainingSettings:
    return TrainingSettings(**{**BASE, **changes})


def max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def checkpoint_weights(path):
    return load_for_export(path).model.get_weights()


@pytest.fixture(scope="module")
def uninterrupted_weights(uninterrupted):
    return checkpoint_weights(uninterrupted)


def read_events(directory):
    """(step, tag, plugin, value) of every summary in a TensorBoard run directory."""
    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                events.append((event.step, value.tag, value.metadata.plugin_data.plugin_name,
                               tf.make_ndarray(value.tensor)))
    return events


@pytest.fixture(scope="module")
def uninterrupted(speech_corpus, tmp_path_factory):
    """8 steps in one go: what every interrupted variant must reproduce."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = Trainer(run, speech_corpus, config=TINY, settings=settings()).fit()
    assert result.finished and result.step == 8
    return run


@pytest.mark.parametrize("loss, clip", [("l1", None), ("l2", 1e-6)])
def test_one_step_is_one_adam_step_on_the_reference_objective(speech_corpus, tmp_path, loss, clip):
    trainer = Trainer(tmp_path / "run", speech_corpus, config=TINY,
                      settings=settings(max_steps=1, loss=loss, max_grad_norm=clip))
    variables = trainer.model.trainable_variables
    before = [v.numpy() for v in variables]
    batch = next(iter(make_dataset(trainer.train_clips, example_indices(0, 4, 4, 0, 1), 4, TINY.max_steps)))
    audio, noise, step, mel = (batch[k].numpy() for k in ("audio", "noise", "step", "mel"))
    # The reference's learner.py, written out: noise level cumprod(1 - beta) in float32.
    level = np.cumprod(1 - np.linspace(1e-4, 0.05, 50)).astype(np.float32)[step][:, None]
    noisy = np.sqrt(level) * audio + np.sqrt(1 - level) * noise
    with tf.GradientTape() as tape:
        error = noise - trainer.model([noisy, step.astype(np.float32), mel])
        objective = tf.reduce_mean(tf.abs(error) if loss == "l1" else tf.square(error))
    grads = tape.gradient(objective, variables)
    if clip:
        grads, _ = tf.clip_by_global_norm(grads, clip)

    result = trainer.fit()

    assert result.last_loss == pytest.approx(float(objective), rel=1e-5)
    # Keras' Adam, first step: w -= lr * g / (|g| + eps / sqrt(1 - beta_2)), lr 2e-4, eps 1e-8.
    expected = [w - 2e-4 * g.numpy() / (np.abs(g.numpy()) + 1e-8 / np.sqrt(1 - 0.999)) for w, g in zip(before, grads)]
    assert max_diff([v.numpy() for v in variables], expected) <= 1e-7
    assert max_diff(before, expected) > 1e-4  # the step did move the weights
    if clip:  # an unclipped step would have moved the small-gradient weights much further
        unclipped = [w - 2e-4 * np.sign(g.numpy()) for w, g in zip(before, grads)]
        assert max_diff(expected, unclipped) > 1e-5


def test_interrupted_and_resumed_run_equals_uninterrupted(speech_corpus, tmp_path, uninterrupted_weights):
    run = tmp_path / "run"
    first = Trainer(run, speech_corpus, config=TINY, settings=settings(max_steps=3, checkpoint_every=100)).fit()
    assert first.step == 3 and first.checkpoint.name == "step-000000003"  # the final step is always saved
    progress = io.StringIO()
    # No config or settings given: the run's own are used; only max_steps changes.
    resumed = Trainer(run, speech_corpus, settings=settings(max_steps=8, checkpoint_every=100),
                      progress_stream=progress).fit()
    assert resumed.step == 8
    assert max_diff(checkpoint_weights(run), uninterrupted_weights) <= 1e-5
    assert progress.getvalue().strip().splitlines()[-1].startswith("step 8/8 (100.0%)")



def test_a_learning_rate_changed_on_resume_takes_effect(speech_corpus, tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(run, speech_corpus, config=TINY, settings=settings(max_steps=4, learning_rate=5e-4)).fit()
    resumed = Trainer(run, speech_corpus, settings=settings(max_steps=8, learning_rate=1e-4))
    resumed.fit()
    assert "['learning_rate'] differ from the run's training.json" in caplog.text
    assert float(resumed.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    logged = {(step, tag): value for step, tag, _, value in read_events(run / "logs" / "train")}
    assert logged[(4, "train/learning_rate")] == pytest.approx(5e-4)
    assert logged[(8, "train/learning_rate")] == pytest.approx(1e-4)
    # The change is provenance: the checkpoints and the export after it record it by step.
    change = [{"step": 4, "learning_rate": [5e-4, 1e-4]}]
    assert load_for_export(run).metadata["setting_changes"] == change
    assert Vocoder.load(run / "vocoder").metadata["setting_changes"] == change
    assert "setting_changes" not in load_for_export(run / "checkpoints" / "step-000000004").metadata
    again = Trainer(run, speech_corpus, settings=settings(max_steps=10, learning_rate=1e-4)).fit()
    assert again.step == 10 and load_for_export(run).metadata["setting_changes"] == change  # nothing new


def test_the_weight_average_follows_its_formula_and_is_what_the_run_exports(speech_corpus, tmp_path):
    trainer = Trainer(tmp_path / "run", speech_corpus, config=TINY, settings=settings(ema_decay=0.9))
    expected = trainer.model.get_weights()  # the average starts at the initial weights
    iterator = iter(trainer._dataset(0))
    for n in range(6):  # TensorFlow's warm-up: decay min(0.9, (1 + n) / (10 + n)) after n updates
        trainer.train_step(iterator)
        decay = min(0.9, (1 + n) / (10 + n))
        expected = [decay * a + (1 - decay) * w for a, w in zip(expected, trainer.model.get_weights())]
    exported = Vocoder.load(trainer.export(tmp_path / "export", 6))
    assert max_diff(exported.model.get_weights(), expected) <= 1e-6
    assert max_diff(trainer.model.get_weights(), expected) > 1e-4  # the raw weights are elsewhere
    assert exported.metadata["weight_average"] == {"decay": 0.9, "updates": 6}


def test_a_run_with_a_weight_average_resumes_exactly_and_trains_the_same_weights(speech_corpus, tmp_path,
                                                                                  uninterrupted_weights):
    whole = Trainer(tmp_path / "whole", speech_corpus, config=TINY, settings=settings(ema_decay=0.9)).fit()
    run = tmp_path / "run"
    Trainer(run, speech_corpus, config=TINY, settings=settings(max_steps=3, ema_decay=0.9)).fit()
    resumed = Trainer(run, speech_corpus, settings=settings(ema_decay=0.9)).fit()
    assert resumed.step == whole.step == 8
    average = Vocoder.load(run / "vocoder")
    assert max_diff(average.model.get_weights(), Vocoder.load(tmp_path / "whole" / "vocoder").model.get_weights()) \
        <= 1e-6
    assert max_diff(load_for_export(run).model.get_weights(), average.model.get_weights()) == 0
    # Averaging only watches: the trained weights are those of a run without it.
    assert max_diff(load_for_export(run, average=False).model.get_weights(), uninterrupted_weights) <= 1e-5
    assert max_diff(average.model.get_weights(), uninterrupted_weights) > 1e-4
    assert "weight_average" not in load_for_export(run, average=False).metadata
    from diffwave_vocoder.cli import main

    assert main(["export", str(run), str(tmp_path / "raw"), "--raw-weights"]) == 0
    assert max_diff(Vocoder.load(tmp_path / "raw").model.get_weights(), uninterrupted_weights) <= 1e-5


def test_a_weight_average_switched_on_and_off_on_resume_is_recorded(speech_corpus, tmp_path, caplog,
                                                                   uninterrupted_weights):
    caplog.set_level("INFO", logger="diffwave_vocoder")
    run = tmp_path / "run"
    Trainer(run, speech_corpus, config=TINY, settings=settings(max_steps=4)).fit()
    Trainer(run, speech_corpus, settings=settings(ema_decay=0.9)).fit()
    assert "weight average (decay 0.9) starts from the weights of step 4" in caplog.text
    raw = load_for_export(run, average=False).model.get_weights()
    assert max_diff(raw, uninterrupted_weights) <= 1e-5
    averaged = Vocoder.load(run / "vocoder")
    assert averaged.metadata["weight_average"] == {"decay": 0.9, "updates": 4}
    assert averaged.metadata["setting_changes"] == [{"step": 4, "ema_decay": [0.0, 0.9]}]
    assert max_diff(averaged.model.get_weights(), raw) > 1e-5
    # Off again: the checkpoint's average is left unread, and the export is the raw weights.
    Trainer(run, speech_corpus, settings=settings(max_steps=8)).fit()
    plain = Vocoder.load(run / "vocoder")
    assert max_diff(plain.model.get_weights(), raw) == 0
    assert "weight_average" not in plain.metadata
    assert plain.metadata["setting_changes"][-1] == {"step": 8, "ema_decay": [0.9, 0.0]}


@pytest.mark.parametrize("before, after", [(None, "float16"), ("float16", None)])
def test_switching_float16_on_resume_is_refused_with_the_way_forward(speech_corpus, tmp_path, before, after):
    """float16 wraps Adam in a loss-scale optimizer, whose checkpoint the plain one cannot read (or back)."""
    run = tmp_path / "run"
    Trainer(run, speech_corpus, config=TINY, settings=settings(max_steps=2, mixed_precision=before)).fit()
    with pytest.raises(ValueError, match=f"mixed_precision {before!r} and cannot resume with {after!r}.*--init-from"):
        Trainer(run, speech_corpus, settings=settings(max_steps=4, mixed_precision=after))
    fine_tuned = Trainer(tmp_path / "new", speech_corpus, settings=settings(
        max_steps=2, mixed_precision=after, init_from=str(run))).fit()
    assert fine_tuned.step == 2
    resumed = Trainer(run, speech_corpus, settings=settings(max_steps=4, mixed_precision=before)).fit()
    assert resumed.step == 4  # the run itself is intact


DRIVER = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
import diffwave_vocoder.training.checkpoints as checkpoints
from diffwave_vocoder.training.trainer import Trainer, TrainingSettings
from diffwave_vocoder.config import DiffWaveConfig

run, data, pause_at, config, settings = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
save = checkpoints.CheckpointStore.save

def save_with_pause(self, step, state, files, write_variables):
    def write(prefix):
        write_variables(prefix)  # the weights are on disk, state.json not yet, nothing renamed yet
        if step == pause_at:
            print("in the middle of a save", flush=True)
            time.sleep(600)
    return save(self, step, state, files, write)

checkpoints.CheckpointStore.save = save_with_pause
Trainer(run, data, config=DiffWaveConfig(**json.loads(config)),
        settings=TrainingSettings(**json.loads(settings))).fit()
"""


def start_driver(run, data, pause_at, **changes):
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(run), str(data), str(pause_at), json.dumps(TINY.to_dict()),
         json.dumps(dataclasses.asdict(settings(**changes)))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV, text=True)


def wait_for(process, text):
    for line in process.stdout:
        if text in line:
            return line
    raise AssertionError(f"the training process ended (rc {process.wait()}) before printing {text!r}")


@pytest.mark.slow
def test_sigkill_during_a_save_resumes_from_the_last_complete_checkpoint(speech_corpus, tmp_path,
                                                                         uninterrupted_weights, caplog):
    run = tmp_path / "run"
    process = start_driver(run, speech_corpus, pause_at=4, checkpoint_every=2)
    wait_for(process, "in the middle of a save")
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["step-000000002"]
    assert [p for p in checkpoints.iterdir() if p.name.startswith(".step-000000004")]  # the half-written save
    with caplog.at_level("INFO"):
        result = Trainer(run, speech_corpus, settings=settings(checkpoint_every=2)).fit()  # no manual step
    assert "resuming from" in caplog.text and "(step 2)" in caplog.text
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # leftovers removed
    assert result.step == 8
    assert max_diff(checkpoint_weights(run), uninterrupted_weights) <= 1e-5


@pytest.mark.slow
def test_sigkill_at_an_arbitrary_moment_resumes_exactly(speech_corpus, tmp_path, uninterrupted_weights):
    run = tmp_path / "run"
    process = start_driver(run, speech_corpus, pause_at=-1, checkpoint_every=1)
    wait_for(process, "step 3: checkpoint")
    time.sleep(random.Random(0).uniform(0.0, 0.3))  # saves every step: the kill may land in one
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = Trainer(run, speech_corpus, settings=settings(checkpoint_every=1)).fit()
    assert result.step == 8
    assert max_diff(checkpoint_weights(run), uninterrupted_weights) <= 1e-5


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(speech_corpus, tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY.to_dict(), "training": {
        "batch_size": 4, "crop_frames": 8, "val_fraction": 0.0, "checkpoint_every": 100_000}}))
    command = ["diffwave-vocoder", "train", str(tmp_path / "run"), str(speech_corpus), "--config", str(config)]
    process = subprocess.Popen([*command, "--max-steps", "100000"], stderr=subprocess.PIPE, env=ENV, text=True)
    for line in process.stderr:
        if line.startswith("training from step 0"):
            break
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    err = process.stderr.read()
    assert process.wait() == 130
    last_line = err.strip().splitlines()[-1]  # stopped as asked: the last word is how to resume, not an error
    assert last_line.endswith("run the same command to resume") and "error:" not in err
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 1  # saved on the signal, not on schedule
    stopped_at = json.loads((checkpoints[0] / "state.json").read_text())["step"]
    assert 0 < stopped_at < 100_000 and f"stopped at step {stopped_at}" in err
    resumed = subprocess.run([*command, "--max-steps", str(stopped_at + 2)], capture_output=True, env=ENV, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"(step {stopped_at})" in resumed.stderr and f"trained to step {stopped_at + 2}" in resumed.stdout


def test_rotation_keeps_the_last_n_and_every_kth(speech_corpus, tmp_path):
    run = tmp_path / "run"
    train(run, speech_corpus, config=TINY, settings=settings(checkpoint_every=1, keep_last=2, keep_every=3))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000000003", "step-000000006", "step-000000007", "step-000000008"]
    state = json.loads((run / "checkpoints" / "step-000000008" / "state.json").read_text())
    assert state["step"] == 8 and state["examples_seen"] == 32 and state["seed"] == 0


def test_tensorboard_gets_losses_grad_norm_learning_rate_and_vocoded_clips(speech_corpus, tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(sorted((speech_corpus / "wavs").glob("*.wav"))[0], val / "held-out.wav")
    run = tmp_path / "run"
    result = Trainer(run, speech_corpus, val=val, config=TINY,
                     settings=settings(max_steps=4, val_every=2, val_vocode_clips=1, val_vocode_seconds=0.5)).fit()
    train_events = read_events(run / "logs" / "train")
    scalars = {(step, tag): float(value) for step, tag, plugin, value in train_events if plugin == "scalars"}
    assert set(scalars) == {(s, t) for s in (2, 4) for t in ("train/loss", "train/grad_norm", "train/learning_rate")}
    assert scalars[(4, "train/learning_rate")] == pytest.approx(2e-4)
    assert 0 < scalars[(4, "train/loss")] < 2 and scalars[(4, "train/grad_norm")] > 0
    val_events = read_events(run / "logs" / "validation")
    losses = [(step, float(v)) for step, tag, _, v in val_events if tag == "validation/loss"]
    assert [s for s, _ in losses] == [2, 4] and losses[-1][1] == pytest.approx(result.validation_loss)
    by_tag = {(tag, step): (plugin, value) for step, tag, plugin, value in val_events}
    plugin, audio = by_tag[("validation/generated_0", 4)]
    assert plugin == "audio"
    decoded, rate = tf.audio.decode_wav(audio[0][0])
    samples = (int(0.5 * 22050) // 256) * 256
    assert int(rate) == 22050 and decoded.shape == (samples, 1) and float(tf.reduce_max(tf.abs(decoded))) > 0
    plugin, image = by_tag[("validation/generated_0_mel", 2)]
    assert plugin == "images" and image[0] == str(samples // 256 + 1).encode() and image[1] == b"80"
    assert tf.io.decode_png(image[2]).shape == (80, samples // 256 + 1, 1)
    assert ("validation/reference_0", 2) in by_tag and ("validation/reference_0", 4) not in by_tag
    for tag in ("validation/logmel_l1", "validation/stoi"):  # the vocoded clip scored against the clip
        plugin, value = by_tag[(tag, 4)]
        assert plugin == "scalars" and 0 < float(value) < 1, tag


def test_progress_is_one_line_redrawn_for_the_whole_run():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(max_steps=1000, first_step=400, stream=stream)
    progress.update(401, 0.5)  # the first step (graph building) only starts the clock
    time.sleep(0.05)
    progress.update(411, 0.25, force=True)
    progress.update(412, 0.2)  # within the redraw interval: not drawn
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r") == 1
    assert "step 411/1000 (41.1%)  loss 0.2500" in text and "steps/s  ETA 0:" in text
    drawn = stream.getvalue()
    progress.clear()  # blanks the line and returns to its start
    cleared = stream.getvalue()[len(drawn):]
    assert cleared.startswith("\r") and cleared.endswith("\r") and not cleared.strip()


def test_export_cli_and_vocode_work_on_any_checkpoint(uninterrupted, tmp_path, capsys):
    from diffwave_vocoder.cli import main

    run = uninterrupted  # checkpoints at steps 4 and 8
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    assert "step 8" in capsys.readouterr().out
    assert max_diff(Vocoder.load(out).model.get_weights(), Vocoder.load(run / "vocoder").model.get_weights()) == 0
    older = tmp_path / "older"
    assert main(["export", str(run / "checkpoints" / "step-000000004"), str(older), "--format", "checkpoint"]) == 0
    assert Vocoder.load(older).metadata["training_step"] == 4
    assert max_diff(load_for_export(out).model.get_weights(), Vocoder.load(out).model.get_weights()) == 0
    mel = tmp_path / "mel.npy"
    np.save(mel, np.random.default_rng(0).uniform(0, 1, (80, 12)).astype(np.float32))  # reference layout
    wav = tmp_path / "out.wav"
    assert main(["vocode", str(mel), "--model", str(older), "-o", str(wav), "--seed", "1"]) == 0
    assert wav.is_file()
    capsys.readouterr()
    assert main(["export", str(tmp_path), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a training run, training checkpoint or vocoder checkpoint" in err
    fresh = tmp_path / "fresh"  # a run stopped before its first save: config.json and training.json only
    fresh.mkdir()
    for name in ("config.json", "training.json"):
        (fresh / name).write_bytes((run / name).read_bytes())
    assert main(["export", str(fresh), str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"training run {fresh} has no complete checkpoint yet" in err


MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from diffwave_vocoder.training.trainer import Trainer, TrainingSettings
from diffwave_vocoder.config import DiffWaveConfig

root, data, config, settings = sys.argv[1:5]
for strategy in ("default", "mirrored"):
    trainer = Trainer(f"{root}/{strategy}", data, config=DiffWaveConfig(**json.loads(config)),
                      settings=TrainingSettings(**json.loads(settings)), strategy=strategy)
    result = trainer.fit()
    np.savez(f"{root}/{strategy}.npz", replicas=trainer.strategy.num_replicas_in_sync, loss=result.last_loss,
             *trainer.model.get_weights())
uneven = TrainingSettings(**{**json.loads(settings), "batch_size": 3})
try:
    Trainer(f"{root}/uneven", data, config=DiffWaveConfig(**json.loads(config)), settings=uneven, strategy="mirrored")
except ValueError as error:
    open(f"{root}/uneven.txt", "w").write(str(error))
"""


def saved_run(path):
    data = np.load(path)
    weights = [data[f"arr_{i}"] for i in range(len(data.files) - 2)]
    return int(data["replicas"]), float(data["loss"]), weights


@pytest.mark.slow
def test_mirrored_on_two_devices_equals_one_device_at_the_same_global_batch(speech_corpus, tmp_path):
    # Clipping at 0.05 is active (grad norms are larger): it must see the global gradient. The weight
    # average is updated on each replica's copy.
    run_settings = settings(max_steps=5, log_every=1, max_grad_norm=0.05, ema_decay=0.9)
    subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path), str(speech_corpus), json.dumps(TINY.to_dict()),
                    json.dumps(dataclasses.asdict(run_settings))], check=True, env=ENV, capture_output=True)
    single, mirrored = saved_run(tmp_path / "default.npz"), saved_run(tmp_path / "mirrored.npz")
    assert single[0] == 1 and mirrored[0] == 2
    assert mirrored[1] == pytest.approx(single[1], abs=1e-5)
    assert max_diff(mirrored[2], single[2]) <= 1e-5
    averages = [Vocoder.load(tmp_path / strategy / "vocoder").model.get_weights()
                for strategy in ("default", "mirrored")]
    assert max_diff(*averages) <= 1e-5 and max_diff(averages[0], single[2]) > 1e-4
    norms = [float(v) for _, tag, _, v in read_events(tmp_path / "mirrored" / "logs" / "train")
             if tag == "train/grad_norm"]
    assert len(norms) == 5 and min(norms) > 0.05
    assert (tmp_path / "uneven.txt").read_text() == "batch size 3 does not split evenly over 2 replicas"


@pytest.mark.slow
def test_multi_worker_cluster_equals_one_device(speech_corpus, tmp_path):
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    args = [json.dumps(TINY.to_dict()), json.dumps(dataclasses.asdict(settings(max_steps=4)))]
    script = DRIVER.replace("Trainer(run, data,", "Trainer(run, data, strategy='multi-worker',")
    workers = [subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "cluster"), str(speech_corpus), "-1", *args],
        env={**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    single = tmp_path / "single"
    Trainer(single, speech_corpus, config=TINY, settings=settings(max_steps=4)).fit()
    assert max_diff(checkpoint_weights(tmp_path / "cluster"), checkpoint_weights(single)) <= 1e-5
    assert sorted(p.name for p in (tmp_path / "cluster" / "checkpoints").iterdir()) == ["step-000000004"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_trains_and_exports_float32(speech_corpus, tmp_path, precision, caplog):
    import keras

    run = tmp_path / "run"
    trainer = Trainer(run, speech_corpus, config=TINY, settings=settings(max_steps=3, mixed_precision=precision))
    # bfloat16 without the CPU's bfloat16 instructions is emulated, slower than float32: the trainer says so.
    emulated = precision == "bfloat16" and cpu_has_bfloat16() is False
    assert ("CPU without bfloat16 instructions" in caplog.text) == emulated
    # And when TensorFlow's oneDNN kernels are off (not asked for), the dilated convolutions' slow path.
    onednn_off = "TF_ENABLE_ONEDNN_OPTS" not in os.environ and not native_dilated_conv_trains(tf.float32)
    assert ("oneDNN kernels are off" in caplog.text) == onednn_off
    result = trainer.fit()
    assert trainer.model.layers[-1].compute_dtype == precision
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "float16")
    assert np.isfinite(result.last_loss) and 0 < result.last_loss < 2
    exported = Vocoder.load(run / "vocoder")
    assert all(w.dtype == np.float32 for w in exported.model.get_weights())
    assert keras.config.dtype_policy().name == "float32"  # not left behind globally
    assert exported.vocode(np.full((4, 80), 0.5, np.float32), seed=0).shape == (1024,)


def test_cpu_bfloat16_instructions_are_read_from_cpuinfo_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    zen3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2 sha_ni vaes\n"
    cpuinfo.write_text(zen3 + zen3.replace(": 0", ": 1"))
    assert cpu_has_bfloat16(cpuinfo) is False
    cpuinfo.write_text(zen3.replace("avx2", "avx2 avx512f avx512_bf16"))
    assert cpu_has_bfloat16(cpuinfo) is True
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16\nCPU implementer\t: 0x41\n")  # Arm
    assert cpu_has_bfloat16(cpuinfo) is True
    cpuinfo.write_text("processor\t: 0\n")  # no flags line: unknown, not "no"
    assert cpu_has_bfloat16(cpuinfo) is None
    assert cpu_has_bfloat16(tmp_path / "missing") is None


def test_unconditional_model_trains_on_audio_crops(speech_corpus, tmp_path):
    run = tmp_path / "run"
    config = TINY.replace(unconditional=True, audio_len=4096)
    result = Trainer(run, speech_corpus, config=config, settings=settings(max_steps=2, crop_samples=3000)).fit()
    assert result.finished and np.isfinite(result.last_loss)
    vocoder = Vocoder.load(run / "vocoder")
    assert not vocoder.conditional and vocoder.generate(seed=0).shape == (1, 4096)


def test_a_diverging_run_stops_with_a_clear_error_and_an_intact_checkpoint(speech_corpus, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(run, speech_corpus, config=TINY,
                      settings=settings(max_steps=50, learning_rate=1e38, checkpoint_every=1))
    with pytest.raises(RuntimeError, match=r"NaN/Inf for 10 steps in a row.*diverged.*step-0000000"):
        trainer.fit()
    assert (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())


def test_cli_train_resumes_and_refuses_a_different_model(speech_corpus, tmp_path, capsys):
    from diffwave_vocoder.cli import main

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY.to_dict(), "training": {
        "batch_size": 4, "crop_frames": 8, "val_fraction": 0.0, "checkpoint_every": 2}}))
    run = tmp_path / "run"
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    assert main(["train", str(run), str(speech_corpus), "--config", str(config), "--max-steps", "2"]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == onednn  # TensorFlow was loaded: too late, left alone
    assert main(["train", str(run), str(speech_corpus), "--max-steps", "3"]) == 0
    captured = capsys.readouterr()
    assert "resuming from" in captured.err and "trained to step 3" in captured.out
    assert json.loads((run / "training.json").read_text())["batch_size"] == 4  # kept from the run
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY.to_dict(), "residual_channels": 16}))
    assert main(["train", str(run), str(speech_corpus), "--config", str(other)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different model" in err and "residual_channels" in err
    assert main(["train", str(tmp_path / "new"), str(tmp_path / "missing")]) == 1
    assert "data set not found" in capsys.readouterr().err


ONEDNN_PROBE = r"""
import sys
from diffwave_vocoder.cli import main
assert main(sys.argv[1:]) == 0
import tensorflow as tf
from diffwave_vocoder.model import native_dilated_conv_trains
print("native", native_dilated_conv_trains(tf.float32))
"""


@pytest.mark.skipif(not ON_X86, reason="oneDNN is asked for on x86")
def test_cli_train_turns_on_onednn_unless_the_user_set_it(speech_corpus, tmp_path):
    # TensorFlow's own CPU kernels have no dilated-convolution gradient; oneDNN's train it natively.
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": TINY.to_dict(), "training": {"batch_size": 4, "crop_frames": 8,
                                                                         "val_fraction": 0.0}}))
    env = {k: v for k, v in ENV.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for setting, native in ((None, True), ("0", False)):
        command = [sys.executable, "-c", ONEDNN_PROBE, "train", str(tmp_path / f"run-{setting}"),
                   str(speech_corpus), "--config", str(config), "--max-steps", "1"]
        extra = {} if setting is None else {"TF_ENABLE_ONEDNN_OPTS": setting}
        result = subprocess.run(command, env={**env, **extra}, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == f"native {native}"


def test_config_files_and_settings_are_validated(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"residual_channels": 32}))
    assert load_config_file(flat) == (DiffWaveConfig(residual_channels=32), {})
    sectioned = tmp_path / "sectioned.json"
    sectioned.write_text(json.dumps({"training": {"batch_size": 8, "loss": "l2"}}))
    assert load_config_file(sectioned) == (None, {"batch_size": 8, "loss": "l2"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": {"batchsize": 8}}))
    with pytest.raises(ValueError, match="unknown training setting.*batchsize"):
        load_config_file(bad)
    for field, value, message in [("loss", "l3", "loss must be"), ("batch_size", 0, "batch_size must be"),
                                  ("mixed_precision", "int8", "mixed_precision must be"),
                                  ("val_fraction", 1.0, "val_fraction must be")]:
        with pytest.raises(ValueError, match=message):
            settings(**{field: value})


def test_strategy_errors_are_clear(monkeypatch):
    from diffwave_vocoder.training.distribute import make_strategy

    with pytest.raises(ValueError, match="unknown strategy 'tpu'; expected one of default, mirrored, multi-worker"):
        make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="multi-worker needs the TF_CONFIG environment variable"):
        make_strategy("multi-worker")


def test_loss_by_step_benchmark_scores_the_trainers_loss_per_diffusion_step(speech_corpus, tmp_path):
    """benchmarks/loss_by_step.py: a fresh model predicts zero noise (its output layer is zero, as the
    reference's), so its loss is E|N(0, 1)| = 0.798 at every step; one that predicts noise unrelated to
    the input's scores worse."""
    from pathlib import Path

    import soundfile
    from helpers import audible_vocoder

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "loss_by_step.py"
    fresh = Vocoder.from_config(TINY, seed=0).save(tmp_path / "fresh")
    unrelated = audible_vocoder(TINY, seed=0, std=0.5).save(tmp_path / "unrelated")
    result = subprocess.run([sys.executable, str(script), str(fresh), str(unrelated), "--data", str(speech_corpus),
                             "--crop-frames", "8", "--steps", "0,49"], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split(" | ")[0].strip("| "): [float(v) for v in line.strip(" |").split(" | ")[1:]]
            for line in result.stdout.splitlines() if line.startswith(f"| {tmp_path}")}
    assert rows[str(fresh)] == pytest.approx([0.798, 0.798, 0.798], abs=0.02)
    assert all(u > f for u, f in zip(rows[str(unrelated)], rows[str(fresh)])), rows
    assert rows[str(unrelated)][0] != rows[str(unrelated)][1]  # each step is scored on its own noisy input

    short = tmp_path / "short"
    short.mkdir()
    soundfile.write(short / "a.wav", np.zeros(300, np.float32), TINY.sample_rate)
    result = subprocess.run([sys.executable, str(script), str(fresh), "--data", str(short)], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == ("loss_by_step.py: --data: none of the 1 files is usable: 1 shorter "
                                              "than one crop (32 mel frames), 0 unreadable")
