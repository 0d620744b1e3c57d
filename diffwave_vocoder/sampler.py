"""Reverse diffusion exactly as lmnt-com/diffwave's inference.py, compiled into one graph-mode loop.

Per call the mel is upsampled once (chunk by chunk per step above `chunk_threshold` samples, so
memory stays bounded); per step only the step embedding and the network run, the network chunked
along time exactly (`chunking`). The noise of an utterance depends only on its own seed (stateless
Philox keyed by seed, step and block of `NOISE_BLOCK` samples), so batching, padding, chunking or
streaming never changes it. For bit-level comparisons with the reference, `Sampler.sample` also
takes injected noise arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from .chunking import ChunkedNetwork, NetworkWeights, keras_weight_getter, network_weights
from .config import DiffWaveConfig
from .prior import prior_std, sample_std, uses_prior
from .schedule import Schedule

# Samples of a chunk per thread of a TensorFlow op: each thread's share of a chunk's (samples, 64)
# float32 intermediates is then 1 MB, within one core's L2 (2 MB here); measured best at 1 and 2
# threads per op (benchmarks/vocode_speed.py --levers).
SAMPLES_PER_OP_THREAD = 4096
# 2**18 samples (11.9 s at 22.05 kHz): below it the upsampled mel (320 B/sample at 80 mels, three
# transient copies while it is laid out) is computed once per call; above it, chunk by chunk at every
# step, so memory stays bounded (README, "Speed, memory and serving").
DEFAULT_CHUNK_THRESHOLD = 1 << 18


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def op_threads() -> int:
    """Threads each TensorFlow op runs on in this process (TF's default, 0, means every core)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or _cores()


def default_chunk_length() -> int:
    return SAMPLES_PER_OP_THREAD * op_threads()


def configure_cpu_threads() -> bool:
    """Run each TensorFlow op on half the cores, so that the chunk loop's two chunks in flight run
    side by side instead of every op splitting over every core and joining again: on two cores
    (one thread per op, 4,096-sample chunks) vocoding is about 10% faster than TF's default (README,
    "Speed, memory and serving"). Process-wide, so it suits a process that vocodes (the CLI calls
    it); it must run before TensorFlow executes anything. Returns False, changing nothing, when
    TensorFlow already runs in this process."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, _cores() // 2))
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class InferenceOptions:
    """How the sampler evaluates the network; none of it changes the audio (beyond float rounding).

    chunk_length: samples per chunk of the cache-sized, exact chunked network evaluation (see
    `chunking`); None sizes it to this process's threads per op (`default_chunk_length`).
    chunk_threshold: inputs longer than this many samples upsample their mel chunk by chunk at every
    step instead of once per call (bounded memory for any length). jit_compile: compile each chunk
    with XLA (measured slower on this CPU, see README).
    """

    chunk_length: int | None = None
    chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD
    jit_compile: bool = False

    def __post_init__(self) -> None:
        for name in ("chunk_length", "chunk_threshold"):
            value = getattr(self, name)
            if name == "chunk_length" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def resolved_chunk_length(self) -> int:
        return self.chunk_length or default_chunk_length()


class Sampler:
    """Runs the reverse process for one model; traced once per input kind, any schedule length."""

    def __init__(self, model: keras.Model, config: DiffWaveConfig, options: InferenceOptions = InferenceOptions()):
        self.config = config
        self.options = options
        self.model = model
        self.network = ChunkedNetwork(config, options.resolved_chunk_length(), options.jit_compile)
        self._functions: dict[tuple[bool, bool], tf.types.experimental.PolymorphicFunction] = {}

    def sample(self, schedule: Schedule, lengths: Sequence[int], mel: np.ndarray | None = None,
               seeds: Sequence[int] | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        """Audio (B, max_length) for a batch; positions past each item's length are zero.

        lengths: samples per item (= hop_length * frames when conditional). mel: (B, F, n_mels),
        zero-padded to the longest item. Give either per-item `seeds` or `noise` of shape
        (len(schedule), B, max_length): noise[0] is x_T, noise[i] is added after the i-th update.
        """
        if (seeds is None) == (noise is None):
            raise ValueError("give exactly one of seeds or noise")
        lengths = np.asarray(lengths, np.int32)
        injected = noise is not None
        chunked = int(lengths.max()) > self.options.chunk_threshold
        key = (injected, chunked)
        if key not in self._functions:
            self._functions[key] = self._compile(injected, chunked)
        if mel is None:
            mel = np.zeros((len(lengths), 0, self.config.n_mels), np.float32)
        source = (tf.constant(noise, tf.float32) if injected
                  else tf.constant(np.asarray(seeds, np.int64)))
        frame_std = (tf.constant(prior_std(mel, self.config)),) if uses_prior(self.config) else ()
        audio = self._functions[key](
            tf.constant(mel, tf.float32), tf.constant(lengths), source,
            tf.constant(schedule.steps), tf.constant(schedule.c1), tf.constant(schedule.c2),
            tf.constant(schedule.sigma), *frame_std)
        return audio.numpy()

    def _compile(self, injected: bool, chunked: bool):
        network, config, model = self.network, self.config, self.model
        source_spec = (tf.TensorSpec([None, None, None], tf.float32) if injected
                       else tf.TensorSpec([None], tf.int64))
        vector = tf.TensorSpec([None], tf.float32)
        prior_spec = [tf.TensorSpec([None, None], tf.float32)] if uses_prior(config) else []

        # autograph=False: the loops are tf.while_loop or Python's, so there is nothing to convert, and
        # AutoGraph converting every function called was most of the trace (6.9 s, against 1.9 s without it,
        # for the shipped model on 2 cores).
        @tf.function(autograph=False,
                     input_signature=[tf.TensorSpec([None, None, config.n_mels], tf.float32),
                                      tf.TensorSpec([None], tf.int32), source_spec,
                                      vector, vector, vector, vector, *prior_spec])
        def run(mel, lengths, source, steps, c1, c2, sigma, frame_std=None):
            weights = network_weights(config, keras_weight_getter(model))
            noise = source if injected else None
            return reverse_diffusion(network, weights, mel, lengths, steps, c1, c2, sigma,
                                     seeds=None if injected else source, noise=noise, chunked=chunked,
                                     frame_std=frame_std)

        return run


# Samples per noise block: the noise of sample i at step index t is element i % NOISE_BLOCK of a
# stateless Philox normal stream keyed by (seed, t * 2**32 + i // NOISE_BLOCK), so any span of an
# utterance's noise is drawn without drawing what comes before it (streaming), and it never depends on
# the utterance's length or its batch.
NOISE_BLOCK = 4096


def utterance_noise(seeds: tf.Tensor, index: tf.Tensor, length: tf.Tensor, start: tf.Tensor | int = 0) -> tf.Tensor:
    """(B, length) standard normal noise for samples [start, start + length) (start >= 0) of every
    utterance, row b keyed by (seeds[b], index): a function of seed, step index and sample position only."""
    start = tf.cast(start, tf.int64)
    length = tf.cast(length, tf.int64)
    first = start // NOISE_BLOCK
    blocks = tf.maximum((start + length + NOISE_BLOCK - 1) // NOISE_BLOCK - first, 0)
    batch = tf.shape(seeds, out_type=tf.int64)[0]
    block_ids = first + tf.range(blocks)
    counters = tf.cast(index, tf.int64) * (1 << 32) + block_ids
    keys = tf.stack([tf.repeat(seeds, blocks), tf.tile(counters, [batch])], axis=1)
    draws = tf.map_fn(lambda key: tf.random.stateless_normal([NOISE_BLOCK], key), keys,
                      fn_output_signature=tf.TensorSpec([NOISE_BLOCK], tf.float32))
    offset = start - first * NOISE_BLOCK
    return tf.reshape(draws, [batch, blocks * NOISE_BLOCK])[:, offset:offset + length]


def reverse_diffusion(network: ChunkedNetwork, weights: NetworkWeights, mel: tf.Tensor, lengths: tf.Tensor,
                      steps: tf.Tensor, c1: tf.Tensor, c2: tf.Tensor, sigma: tf.Tensor,
                      seeds: tf.Tensor | None = None, noise: tf.Tensor | None = None,
                      chunked: bool = False, frame_std: tf.Tensor | None = None) -> tf.Tensor:
    """The reference's sampling loop in graph mode (inside a tf.function); (B, max(lengths)) audio.

    Noise from per-utterance `seeds` (B,) int64 or injected `noise` (len(steps), B, L), standard
    normal; with the energy prior, the prior's std per frame `frame_std` (B, F) scales it.
    `chunked` upsamples the mel chunk by chunk at every step instead of once per call (bounded memory).
    """
    max_length = tf.reduce_max(lengths)
    scale = None if frame_std is None else sample_std(frame_std, network.config.hop_length, tnp)[:, :max_length]
    mask = tf.sequence_mask(lengths, max_length, dtype=tf.float32)
    conditioner = None
    if network.conditional and not chunked:
        padded = network.padded_length(max_length, tf.shape(lengths)[0])
        conditioner = network.whole_conditioner(weights, mel, lengths, padded)

    def draw(index):
        z = noise[index] if seeds is None else utterance_noise(seeds, index, max_length)
        return z if scale is None else z * scale

    num_steps = tf.shape(steps)[0]

    def body(i, audio):
        n = num_steps - 1 - i
        epsilon = network(weights, audio, steps[n], lengths, mel=mel if chunked else None,
                          conditioner=conditioner)
        audio = c1[n] * (audio - c2[n] * epsilon)
        audio = tf.cond(n > 0, lambda: audio + sigma[n] * draw(i + 1), lambda: audio)
        return i + 1, tf.clip_by_value(audio, -1.0, 1.0) * mask

    audio = draw(0) * mask
    # One step at a time: with TF's default, later steps' noise (an utterance-sized tensor each) is
    # drawn ahead of time, and memory grows with length times steps.
    _, audio = tf.while_loop(lambda i, _: i < num_steps, body, [tf.constant(0), audio], parallel_iterations=1)
    return audio
