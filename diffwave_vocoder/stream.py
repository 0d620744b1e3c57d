"""Streaming vocoding: audio in blocks as soon as each is final, equal to `Vocoder.vocode`.

Sample i of the final audio depends on the starting noise and the mel within T x D samples of it
(T steps, D = `DiffWaveConfig.receptive_field` per network evaluation), and near the end of an
utterance on where it ends (every layer zero-pads there, and every step clamps and masks). So the
session runs the reverse process as a wavefront over steps and time: step level k keeps the carried
state of the chunked network (`ChunkedNetwork.span`) at its own input frontier, which runs D samples
behind level k-1's, and each pass moves every level forward over whatever its predecessor has made
final. Every level does the arithmetic `vocode` does on the same samples, once; the noise is drawn
per block of samples (`sampler.utterance_noise`), so a block's noise does not depend on the length.

Incremental input (`StreamSession.push`): with the end not yet known, a sample is final once the mel
frames up to `lookahead_frames` past it have arrived: ceil(T x D / hop) frames for the wavefront
plus `MEL_MARGIN_FRAMES` for the upsampler (74 frames, 0.86 s, for the default model and the
6-step schedule; 602 frames, 7.0 s, for the 50-step one). Memory is bounded by the schedule and
the model, not the input length: per level the network's carried state (3 D x C floats) and D + one
pass of samples, the upsampled mel for T x D + one pass of samples, and the mel frames they need.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from .chunking import MEL_MARGIN_FRAMES, WavefrontState, keras_weight_getter, network_weights, upsample
from .features.input_layout import to_numpy
from .config import DiffWaveConfig
from .prior import prior_std, sample_std
from .sampler import Sampler, utterance_noise
from .schedule import Schedule

# Length used while an utterance's end is not yet known: every position received is valid.
_UNKNOWN_END = 1 << 30
# With the whole mel known, each pass after the first is twice the one before, up to this many blocks:
# fewer passes (less start-up per level and per call) while the first block comes as soon as before.
MAX_PASS_BLOCKS = 8


def lookahead_frames(config: DiffWaveConfig, schedule: Schedule) -> int:
    """Mel frames that must have arrived past a sample before a session with the end of the utterance
    not yet known can return it: the wavefront's len(schedule) x receptive_field samples, in whole
    frames, plus the upsampler's MEL_MARGIN_FRAMES."""
    return math.ceil(len(schedule) * config.receptive_field / config.hop_length) + MEL_MARGIN_FRAMES


class StreamKernels:
    """The graph functions a stream session calls, traced once per sampler (any schedule, any seed)."""

    def __init__(self, sampler: Sampler):
        network, config, model = sampler.network, sampler.config, sampler.model
        if not network.conditional:
            raise ValueError("streaming needs a conditional (mel) vocoder")
        self.sampler = sampler
        d_total, c, m = network.receptive_field, config.residual_channels, config.n_mels
        state_spec = WavefrontState(tuple(tf.TensorSpec([2 * d, 1, c], tf.float32) for d in network.dilations),
                                    tuple(tf.TensorSpec([d, 1, c], tf.float32) for d in network.dilations))
        scalar = tf.TensorSpec([], tf.float32)
        integer = tf.TensorSpec([], tf.int32)

        # autograph=False: as in the sampler, nothing here needs converting (tf.cond, Python loops).
        @tf.function(autograph=False,
                     input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, m], tf.float32),
                                      state_spec, scalar, scalar, scalar, scalar, tf.TensorSpec([], tf.int64),
                                      tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.int64), integer, integer,
                                      integer, tf.TensorSpec([None], tf.float32)])
        def level(x_window, conditioner, state, step, c1, c2, sigma, noise_index, add_noise, seed, start,
                  length, tile, prior):
            """One step level over its input samples [start, start + s): `x_window` holds the previous
            level's samples [start - D, start + s), `conditioner` the upsampled mel there, `prior` the
            prior's std at the outputs. Returns this level's samples [start - D, start + s - D) (zero
            outside [0, length)) and its state."""
            weights = network_weights(config, keras_weight_getter(model))
            s = tf.shape(x_window)[0] - d_total
            lengths = tf.reshape(length, [1])
            window = conditioner[:, None, :]
            projections = network.diffusion_projections(weights, step)
            eps, state = network.span(weights, x_window[d_total:, None], tile, projections, lengths, state,
                                      lambda offset, size, carry: (window[offset:offset + size + d_total], carry),
                                      tf.zeros([0]), start)
            audio = c1 * (x_window[:s] - c2 * eps[:, 0])
            first = start - d_total  # position of this level's first output sample
            skipped = tf.maximum(-first, 0)

            def noisy():
                noise = utterance_noise(seed[None], noise_index, tf.maximum(s - skipped, 0), first + skipped)[0]
                return audio + sigma * prior * tf.concat([tf.zeros([tf.minimum(skipped, s)]), noise], 0)

            audio = tf.cond(add_noise, noisy, lambda: audio)
            positions = first + tf.range(s)
            mask = tf.cast((positions >= 0) & (positions < length), tf.float32)
            return tf.clip_by_value(audio, -1.0, 1.0) * mask, state

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([], tf.int64), integer, integer, integer,
                                                       tf.TensorSpec([None], tf.float32)])
        def initial_noise(seed, start, count, length, prior):
            """x_T for samples [start, start + count) (the prior's std there: `prior`), zero from `length` on."""
            positions = start + tf.range(count)
            mask = tf.cast(positions < length, tf.float32)
            return utterance_noise(seed[None], 0, count, start)[0] * prior * mask

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, m], tf.float32), integer, integer])
        def conditioner(frames, first_frame, frame_length):
            """Upsampled mel for the frames of a window but its first and last MEL_MARGIN_FRAMES,
            (samples, M); `first_frame` is the window's absolute first frame."""
            weights = network_weights(config, keras_weight_getter(model))
            u = upsample(weights, config, frames[None], first_frame, tf.reshape(frame_length, [1]))[0]
            margin = MEL_MARGIN_FRAMES * config.hop_length
            return u[margin:tf.shape(u)[0] - margin]

        self.level, self.initial_noise, self.conditioner = level, initial_noise, conditioner


class StreamSession:
    """Vocodes one utterance whose mel frames arrive in pieces (`push`), returning audio as it becomes
    final; `finish` returns the rest. The concatenated output equals `Vocoder.vocode(mel, steps, seed)`.

    Audio is returned in passes of at least `block_frames` frames' worth of samples (fewer passes,
    less overhead per sample), so up to that many frames more than `lookahead_frames` may be held.
    `Vocoder.stream`, which has the whole mel, grows its passes after the first up to
    `MAX_PASS_BLOCKS` blocks.
    """

    def __init__(self, kernels: StreamKernels, schedule: Schedule, seed: int, block_frames: int):
        if not isinstance(block_frames, (int, np.integer)) or isinstance(block_frames, bool) or block_frames <= 0:
            raise ValueError(f"block_frames must be a positive integer, got {block_frames!r}")
        sampler = kernels.sampler
        self._kernels = kernels
        self._schedule = schedule
        self._seed = tf.constant(int(seed), tf.int64)
        self.block_frames = int(block_frames)
        self._config = sampler.config
        self._hop = sampler.config.hop_length
        self._n_mels = sampler.config.n_mels
        self._d = sampler.network.receptive_field
        self._max_tile = sampler.network.chunk_length
        # Samples level 1 moves in one pass at most: the start-up wavefront plus four chunks or the
        # largest block.
        self._pass_limit = len(schedule) * self._d + max(MAX_PASS_BLOCKS * self.block_frames * self._hop,
                                                         4 * self._max_tile)
        levels = len(schedule)
        self._inputs = [np.zeros(self._d, np.float32) for _ in range(levels)]  # samples [pos - D, ...)
        self._positions = [0] * levels  # each level's input frontier
        self._states = [sampler.network.initial_state(1) for _ in range(levels)]
        self._noise_end = 0  # x_T drawn up to here (it is level 1's input)
        self._frames = np.zeros((0, self._n_mels), np.float32)  # mel frames from _frames_start on
        self._frames_start = 0
        self._received = 0
        self._length: int | None = None  # samples, once the end is known
        self._conditioner = np.zeros((self._d, self._n_mels), np.float32)  # samples [_conditioner_start, ...)
        self._prior = np.ones(self._d, np.float32)  # the prior's std at the same samples
        self._conditioner_start = -self._d
        self._emitted = 0
        self._finished = False

    @property
    def lookahead_frames(self) -> int:
        """Mel frames that must have arrived beyond a sample before it is final (end not yet known)."""
        return lookahead_frames(self._kernels.sampler.config, self._schedule)

    @property
    def emitted(self) -> int:
        """Samples returned so far."""
        return self._emitted

    def push(self, frames: Any) -> np.ndarray:
        """Add mel frames (k, n_mels) (k may be 0); returns the audio that became final (maybe empty)."""
        if self._finished or self._length is not None:
            raise ValueError("this stream session is finished; start a new one")
        frames = to_numpy(frames)
        if frames.ndim != 2 or frames.shape[1] != self._n_mels:
            raise ValueError(f"push takes mel frames of shape (k, n_mels={self._n_mels}), got {frames.shape}")
        if not np.all(np.isfinite(frames)):
            raise ValueError("mel frames contain NaN or Inf")
        self._frames = np.concatenate([self._frames, frames.astype(np.float32)])
        self._received += len(frames)
        usable = (self._received - MEL_MARGIN_FRAMES) * self._hop
        if usable - self._positions[0] < self.block_frames * self._hop:
            return np.zeros(0, np.float32)
        return self._advance(usable)

    def finish(self) -> np.ndarray:
        """The rest of the audio: the utterance ends after the frames pushed so far."""
        if self._finished:
            raise ValueError("this stream session is already finished")
        if self._received == 0:
            raise ValueError("mel has zero frames")
        self._length = self._received * self._hop
        audio = self._advance(self._length + self._d)
        self._finished = True
        return audio

    def _run(self, mel: np.ndarray) -> Iterator[np.ndarray]:
        """All frames known from the start (`Vocoder.stream`): one pass per block, the first one T x D
        samples further, each later one twice the one before up to MAX_PASS_BLOCKS blocks (each pass
        moves every level as far as it can, so the last one flushes the rest)."""
        self._frames, self._received = np.asarray(mel, np.float32), len(mel)
        self._length = len(mel) * self._hop
        end = self._length + self._d
        block = self.block_frames * self._hop
        largest = MAX_PASS_BLOCKS * block
        # The first pass reaches just far enough for the last level to make a block final.
        target = len(self._schedule) * self._d + block
        while self._positions[0] < end:
            audio = self._advance(min(target, end))
            block = min(2 * block, largest)
            target = self._positions[0] + block
            if audio.size:
                yield audio
        self._finished = True

    def _advance(self, target: int) -> np.ndarray:
        """Move level 1's input frontier to `target` and every later level as far as it can go, in
        passes of at most `_pass_limit` samples (bounded memory whatever was pushed at once)."""
        parts = []
        while True:
            step = min(target, self._positions[0] + self._pass_limit)
            parts.append(self._pass(step))
            if step >= target:
                return np.concatenate(parts)

    def _pass(self, target: int) -> np.ndarray:
        """One pass: level 1's input frontier to `target`, every later level as far as it can go."""
        d, kernels, schedule = self._d, self._kernels, self._schedule
        ended = self._length is not None
        length = self._length if ended else _UNKNOWN_END
        self._extend_conditioner(target)
        if target > self._noise_end:
            prior = self._prior[self._noise_end - self._conditioner_start:target - self._conditioner_start]
            noise = kernels.initial_noise(self._seed, self._noise_end, target - self._noise_end, length, prior)
            self._inputs[0] = np.concatenate([self._inputs[0], noise.numpy()])
            self._noise_end = target
        emitted = []
        levels = len(schedule)
        for k in range(levels):
            start = self._positions[k]
            span = len(self._inputs[k]) - d
            if span <= 0:
                continue
            n = levels - 1 - k
            cond_offset = start - d - self._conditioner_start
            tiles = 2 * math.ceil(span / (2 * self._max_tile))  # an even count: two tiles in flight
            out, self._states[k] = kernels.level(
                self._inputs[k], self._conditioner[cond_offset:cond_offset + d + span], self._states[k],
                float(schedule.steps[n]), float(schedule.c1[n]), float(schedule.c2[n]), float(schedule.sigma[n]),
                np.int64(k + 1), n > 0, self._seed, start, length, math.ceil(span / tiles),
                self._prior[cond_offset:cond_offset + span])
            out = out.numpy()[max(0, d - start):]  # samples from max(0, start - D) on
            self._positions[k] = start + span
            self._inputs[k] = self._inputs[k][span:]
            if k + 1 < levels:
                following = np.concatenate([self._inputs[k + 1], out])
                if ended and self._positions[k] == self._length + d:  # zeros past the end feed the last samples
                    following = np.concatenate([following, np.zeros(d, np.float32)])
                self._inputs[k + 1] = following
            else:
                emitted.append(out)
        keep = min(self._positions) - d - self._conditioner_start
        self._conditioner, self._conditioner_start = self._conditioner[keep:], self._conditioner_start + keep
        self._prior = self._prior[keep:]
        audio = np.concatenate(emitted) if emitted else np.zeros(0, np.float32)
        self._emitted += len(audio)
        return audio

    def _extend_conditioner(self, target: int) -> None:
        """Upsampled mel and the prior's std for samples up to `target` (whole frames; past a known
        end zero mel, and std one, which the mask zeroes)."""
        hop, margin = self._hop, MEL_MARGIN_FRAMES
        have = self._conditioner_start + len(self._conditioner)
        if target <= have:
            return
        first, last = have // hop, -(-target // hop)  # frames [first, last), first on a frame boundary
        # Until the end is known the window holds received frames only, so masking from there is a no-op.
        frame_count = self._received
        real_last = min(last, self._received)
        parts, priors = [self._conditioner], [self._prior]
        if real_last > first:
            lo, hi = first - margin, real_last + margin
            window = self._frames[max(lo, self._frames_start) - self._frames_start:
                                  min(hi, self._received) - self._frames_start]
            window = np.pad(window, [(max(self._frames_start, lo) - lo, hi - min(hi, self._received)), (0, 0)])
            parts.append(self._kernels.conditioner(window, lo, frame_count).numpy())
            own = self._frames[first - self._frames_start:real_last - self._frames_start]
            priors.append(sample_std(prior_std(own, self._config), hop))
        if last > real_last:  # past the end: zeros, as vocode pads
            past = (last - max(first, real_last)) * hop
            parts.append(np.zeros((past, self._n_mels), np.float32))
            priors.append(np.ones(past, np.float32))
        self._conditioner, self._prior = np.concatenate(parts), np.concatenate(priors)
        drop = max(0, first - margin - self._frames_start)
        self._frames, self._frames_start = self._frames[drop:], self._frames_start + drop

