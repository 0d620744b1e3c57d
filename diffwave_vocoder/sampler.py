"""Reverse diffusion exactly as lmnt-com/diffwave's inference.py, compiled into one graph-mode loop.

Per call the mel is upsampled once; per step only the step embedding and the network run. The
noise of an utterance depends only on its own seed (stateless Philox, one stream per step, and a
shorter stream is a prefix of a longer one), so batching, padding or chunking never changes it.
For bit-level comparisons with the reference, `Sampler.sample` also takes injected noise arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from .model import DiffWaveLayers
from .params import DiffWaveConfig

Steps = Union[str, Sequence[float]]


@dataclass(frozen=True)
class Schedule:
    """An inference schedule aligned to the training schedule (reference inference.py, fast sampling).

    `steps[n]` is the (possibly fractional) training step whose noise level matches inference step
    n; c1, c2 and sigma are the per-step update coefficients, rounded to float32 as torch does.
    """

    betas: np.ndarray
    steps: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    sigma: np.ndarray

    def __len__(self) -> int:
        return len(self.betas)


def make_schedule(training_betas: Sequence[float], betas: Sequence[float]) -> Schedule:
    train_alpha_cum = np.cumprod(1.0 - np.asarray(training_betas, np.float64))
    beta = np.asarray(betas, np.float64)
    if beta.ndim != 1 or beta.size == 0 or not np.all((beta > 0) & (beta < 1)):
        raise ValueError(f"an inference schedule must be a non-empty list of betas in (0, 1), got {list(betas)}")
    alpha = 1.0 - beta
    alpha_cum = np.cumprod(alpha)
    steps = []
    for s, level in enumerate(alpha_cum):
        for t in range(len(train_alpha_cum) - 1):
            if train_alpha_cum[t + 1] <= level <= train_alpha_cum[t]:
                twiddle = ((train_alpha_cum[t] ** 0.5 - level ** 0.5)
                           / (train_alpha_cum[t] ** 0.5 - train_alpha_cum[t + 1] ** 0.5))
                steps.append(t + twiddle)
                break
        else:
            # The reference silently drops such a step and misaligns the rest.
            raise ValueError(
                f"inference step {s} reaches noise level alpha_cum={level:.6g}, outside the training "
                f"schedule's range [{train_alpha_cum[-1]:.6g}, {train_alpha_cum[0]:.6g}]; "
                "use betas whose cumulative product stays inside it")
    sigma = np.zeros_like(beta)
    sigma[1:] = np.sqrt((1.0 - alpha_cum[:-1]) / (1.0 - alpha_cum[1:]) * beta[1:])
    return Schedule(betas=beta, steps=np.asarray(steps, np.float32),
                    c1=(1.0 / np.sqrt(alpha)).astype(np.float32),
                    c2=(beta / np.sqrt(1.0 - alpha_cum)).astype(np.float32),
                    sigma=sigma.astype(np.float32))


def resolve_schedule(config: DiffWaveConfig, steps: Steps) -> Schedule:
    """'fast' (the config's inference schedule), 'full' (the training schedule) or explicit betas."""
    if isinstance(steps, str):
        if steps == "fast":
            betas = config.inference_noise_schedule
        elif steps == "full":
            betas = config.noise_schedule
        else:
            raise ValueError(f"steps must be 'fast', 'full' or a list of betas, got {steps!r}")
    else:
        betas = [float(b) for b in steps]
    return make_schedule(config.noise_schedule, betas)


def _time_mask(lengths: tf.Tensor, max_length: tf.Tensor) -> tf.Tensor:
    return tf.sequence_mask(lengths, max_length, dtype=tf.float32)


class Sampler:
    """Runs the reverse process for one model; traced once per input kind, any schedule length."""

    def __init__(self, model: keras.Model, config: DiffWaveConfig):
        self.config = config
        self.net = DiffWaveLayers.of(model)
        self._functions: dict[tuple[bool, bool], tf.types.experimental.PolymorphicFunction] = {}

    def sample(self, schedule: Schedule, lengths: Sequence[int], mel: np.ndarray | None = None,
               seeds: Sequence[int] | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        """Audio (B, max_length) for a batch; positions past each item's length are zero.

        lengths: samples per item (= hop_length * frames when conditional). mel: (B, F, n_mels),
        zero-padded to the longest item. Give either per-item `seeds` or `noise` of shape
        (len(schedule), B, max_length): noise[0] is x_T, noise[i] is added after the i-th update.
        """
        lengths = np.asarray(lengths, np.int32)
        padded = bool(np.any(lengths != lengths.max()))
        injected = noise is not None
        key = (padded, injected)
        if key not in self._functions:
            self._functions[key] = self._compile(padded, injected)
        if (seeds is None) == (noise is None):
            raise ValueError("give exactly one of seeds or noise")
        if mel is None:
            mel = np.zeros((len(lengths), 0, self.config.n_mels), np.float32)
        source = (tf.constant(noise, tf.float32) if injected
                  else tf.constant(np.asarray(seeds, np.int64)))
        audio = self._functions[key](
            tf.constant(mel, tf.float32), tf.constant(lengths), source,
            tf.constant(schedule.steps), tf.constant(schedule.c1), tf.constant(schedule.c2),
            tf.constant(schedule.sigma))
        return audio.numpy()

    def _compile(self, padded: bool, injected: bool):
        net, hop = self.net, self.config.hop_length
        conditional = net.spectrogram_upsampler is not None
        source_spec = (tf.TensorSpec([None, None, None], tf.float32) if injected
                       else tf.TensorSpec([None], tf.int64))
        vector = tf.TensorSpec([None], tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, self.config.n_mels], tf.float32),
                                      tf.TensorSpec([None], tf.int32), source_spec,
                                      vector, vector, vector, vector])
        def run(mel, lengths, source, steps, c1, c2, sigma):
            batch = tf.shape(lengths)[0]
            max_length = tf.reduce_max(lengths)
            conditioner = None
            if conditional:
                conditioner = net.spectrogram_upsampler(mel, lengths // hop if padded else None)
            mask = _time_mask(lengths, max_length)
            valid = mask[:, :, None] if padded else None

            def noise(index):
                if injected:
                    return source[index]
                seeds = tf.stack([source, tf.fill([batch], tf.cast(index, tf.int64))], axis=1)
                return tf.map_fn(lambda seed: tf.random.stateless_normal([max_length], seed),
                                 seeds, fn_output_signature=tf.float32)

            num_steps = tf.shape(steps)[0]

            def body(i, audio):
                n = num_steps - 1 - i
                embedding = net.diffusion_embedding(tf.fill([batch], steps[n]))
                epsilon = net.denoise(audio, embedding, conditioner, valid)
                audio = c1[n] * (audio - c2[n] * epsilon)
                audio = tf.cond(n > 0, lambda: audio + sigma[n] * noise(i + 1), lambda: audio)
                return i + 1, tf.clip_by_value(audio, -1.0, 1.0) * mask

            audio = noise(0) * mask
            _, audio = tf.while_loop(lambda i, _: i < num_steps, body, [tf.constant(0), audio])
            return audio

        return run
