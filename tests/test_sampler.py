"""The graph-mode sampler equals the reference's loop run step by step over the whole-input Keras model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from diffwave_vocoder import DiffWaveConfig, Vocoder, resolve_schedule
from helpers import audible_vocoder
from diffwave_vocoder.sampler import (SAMPLES_PER_OP_THREAD, InferenceOptions, Sampler, configure_cpu_threads,
                                      op_threads, utterance_noise)

# Receptive field 1 + 2 + ... + 512 + 1 + 2 = 1026 samples per side.
CONFIG = DiffWaveConfig(residual_channels=8, residual_layers=12, dilation_cycle_length=10)


@pytest.fixture(scope="module")
def vocoder():
    return audible_vocoder(CONFIG, seed=7, std=0.3)


def plain_loop(vocoder: Vocoder, steps, mel: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """inference.py's loop in numpy around the Functional model, one whole utterance at a time."""
    schedule = resolve_schedule(vocoder.config, steps)
    audio = noise[0]
    for i in range(len(schedule)):
        n = len(schedule) - 1 - i
        eps = vocoder.model([audio[None], np.array([schedule.steps[n]], np.float32), mel[None]]).numpy()[0]
        audio = schedule.c1[n] * (audio - schedule.c2[n] * eps)
        if n > 0:
            audio = audio + schedule.sigma[n] * noise[i + 1]
        audio = np.clip(audio, -1.0, 1.0)
    return audio


@pytest.mark.parametrize("steps", ["fast", pytest.param("full", marks=pytest.mark.slow)])
def test_sampler_equals_step_by_step_loop_over_the_keras_model(vocoder, steps):
    rng = np.random.default_rng(0)
    frames = [10, 4]
    lengths = np.array(frames) * 256
    mel = np.zeros((2, 10, 80), np.float32)
    for i, f in enumerate(frames):
        mel[i, :f] = rng.uniform(0, 1, (f, 80))
    schedule = resolve_schedule(CONFIG, steps)
    noise = rng.standard_normal((len(schedule), 2, lengths.max())).astype(np.float32)
    sampler = Sampler(vocoder.model, CONFIG, InferenceOptions(chunk_length=512))
    audio = sampler.sample(schedule, lengths, mel=mel, noise=noise)
    for i, (f, n) in enumerate(zip(frames, lengths)):
        expected = plain_loop(vocoder, steps, mel[i, :f], noise[:, i, :n])
        assert np.abs(audio[i, :n] - expected).max() <= 1e-5
        assert np.all(audio[i, n:] == 0)
        assert np.mean(np.abs(expected) < 0.999) > 0.5  # mostly unclipped: not a trivial comparison


def test_noise_depends_only_on_seed_step_and_position():
    seeds = tf.constant([3, 4], tf.int64)
    long = utterance_noise(seeds, 2, 5000).numpy()
    short = utterance_noise(seeds[::-1], 2, 1200).numpy()
    assert np.array_equal(short[1], long[0, :1200]) and np.array_equal(short[0], long[1, :1200])
    assert not np.array_equal(utterance_noise(seeds, 3, 1200).numpy(), short[::-1])
    assert abs(long.std() - 1) < 0.05


def test_seeded_sampling_is_reproducible_and_per_utterance(vocoder):
    mel = np.random.default_rng(1).uniform(0, 1, (6, 80)).astype(np.float32)
    first = vocoder.vocode(mel, seed=21)
    assert np.array_equal(first, vocoder.vocode(mel, seed=21))
    assert np.abs(first - vocoder.vocode(mel, seed=22)).max() > 0.1
    # The same utterance in a batch with a longer one, chunked differently: the same audio.
    other = Vocoder(vocoder.model, CONFIG)
    other.inference_options = InferenceOptions(chunk_length=256, chunk_threshold=256)
    batch = other.vocode([np.zeros((15, 80), np.float32), mel], seed=[5, 21])
    assert np.abs(batch[1] - first).max() <= 1e-5


def test_cpu_thread_setting_sizes_chunks_in_a_fresh_process():
    """Before TensorFlow runs: half the cores per op, and chunks of 4,096 samples per op thread."""
    script = (
        "import json, os, tensorflow as tf\n"
        "from diffwave_vocoder.sampler import InferenceOptions, configure_cpu_threads\n"
        "applied = configure_cpu_threads()\n"
        "print(json.dumps({'applied': applied,\n"
        "                  'threads': tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "                  'chunk': InferenceOptions().resolved_chunk_length(),\n"
        "                  'cores': len(os.sched_getaffinity(0))}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["applied"] is True
    assert report["threads"] == max(1, report["cores"] // 2)
    assert report["chunk"] == SAMPLES_PER_OP_THREAD * report["threads"]


def test_cpu_thread_setting_changes_nothing_once_tensorflow_runs():
    tf.constant(1.0) + 1.0
    before = tf.config.threading.get_intra_op_parallelism_threads()
    already = before == max(1, len(os.sched_getaffinity(0)) // 2)  # then setting it again is a no-op
    assert configure_cpu_threads() is already
    assert tf.config.threading.get_intra_op_parallelism_threads() == before
    assert InferenceOptions().resolved_chunk_length() == SAMPLES_PER_OP_THREAD * op_threads()
