"""Exact, cache-sized, bounded-memory evaluation of the DiffWave network along time.

Why: evaluated layer by layer over a whole utterance, every (samples, 128) intermediate streams
through main memory (11 MB per second of audio, 30 layers, 6 to 50 times per utterance), so the
CPU waits on memory instead of multiplying, and whole-utterance tensors make memory grow with length
(the reference peaks at 10.6 GB for 20 s). Here one network evaluation walks the utterance in
chunks of `chunk_length` samples, a size the CPU caches hold, as a wavefront: residual layer l runs
d_l samples behind layer l-1 (its look-ahead) and keeps the last 2 d_l samples of its input from
the previous chunk. Those carried samples are the halo of the network's receptive field (sum of d_l
= `DiffWaveConfig.receptive_field` samples on each side), kept instead of recomputed, so chunking
adds no arithmetic and every chunk is exactly the corresponding slice of the whole-input
computation. Utterance edges and batch padding are zeroed at every layer's input by absolute sample
position, which is what the reference's zero padding does.

For long inputs (`chunked=True`) the upsampled mel (320 bytes per sample at 80 mels) is not kept
for the whole utterance either: each chunk upsamples its own mel frames plus a margin of frames,
at every step (about 0.05% of a step's arithmetic), so memory stays a few bytes per sample.

Layout is time-major, (time, batch, channels), so that the time shifts of the dilated convolution
are zero-copy slices of one buffer. Per layer and chunk, `model.residual_layer` (the Keras model's
own layer maths): one concat builds [x(t-d), x(t), x(t+d), mel(t)] (the conditioner projection
fused into the dilated convolution's GEMM), the gate and filter GEMMs carry their bias and
sigmoid/tanh (fused by oneDNN), and the residual and skip GEMMs carry their bias; the carried skip
sum is added here.

Everything here is plain TensorFlow on a `NetworkWeights` of tensors, so the same code runs inside
`Sampler` (Keras variables) and inside an exported SavedModel (plain tf.Variables). The step
embedding and the upsampler's stages are `model`'s functions too.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from .config import DiffWaveConfig
from .model import LayerWeights, layer_weights, residual_layer, step_embedding, step_embedding_table, upsample_stage

# Mel frames of margin on each side of a chunk's own frames when it upsamples them: the two
# transposed convolutions (kernel 2*stride, 'same') reach one frame beyond a sample's own.
MEL_MARGIN_FRAMES = 2


class NetworkWeights(NamedTuple):
    embedding_table: tf.Tensor
    embedding: tuple[tuple[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # (kernel, bias) of projection1, 2
    upsampler: tuple[tuple[tf.Tensor, tf.Tensor], ...]  # ((kernel, bias), (kernel, bias)); () if unconditional
    input_projection: tuple[tf.Tensor, tf.Tensor]
    diffusion_kernel: tf.Tensor  # every layer's diffusion projection side by side: (512, layers * C)
    diffusion_bias: tf.Tensor
    layers: tuple[LayerWeights, ...]
    skip_projection: tuple[tf.Tensor, tf.Tensor]
    output_projection: tuple[tf.Tensor, tf.Tensor]


def network_weights(config: DiffWaveConfig, get: Callable[[str], tf.Tensor]) -> NetworkWeights:
    """Arrange a model's weights for the chunked network; `get(path)` returns the weight stored
    under the Keras weight path (e.g. 'residual_block_0/dilated_conv/kernel'). Called inside a
    tf.function, so the tensors are read from the variables at every call."""
    layers = []
    for i in range(config.residual_layers):
        prefix = f"residual_block_{i}/"
        conditioner = () if config.unconditional else (
            get(prefix + "conditioner_projection/kernel"), get(prefix + "conditioner_projection/bias"))
        layers.append(layer_weights(get(prefix + "dilated_conv/kernel"), get(prefix + "dilated_conv/bias"),
                                    get(prefix + "output_projection/kernel"), get(prefix + "output_projection/bias"),
                                    *conditioner))
    diffusion = [(get(f"residual_block_{i}/diffusion_projection/kernel"),
                  get(f"residual_block_{i}/diffusion_projection/bias")) for i in range(config.residual_layers)]
    upsampler = () if config.unconditional else tuple(
        (get(f"spectrogram_upsampler/conv{j}/kernel"), get(f"spectrogram_upsampler/conv{j}/bias")) for j in (1, 2))
    return NetworkWeights(
        embedding_table=tf.constant(step_embedding_table(config.max_steps)),
        embedding=tuple((get(f"diffusion_embedding/projection{j}/kernel"),
                         get(f"diffusion_embedding/projection{j}/bias")) for j in (1, 2)),
        upsampler=upsampler,
        input_projection=(get("input_projection/kernel"), get("input_projection/bias")),
        diffusion_kernel=tf.concat([k for k, _ in diffusion], 1),
        diffusion_bias=tf.concat([b for _, b in diffusion], 0),
        layers=tuple(layers),
        skip_projection=(get("skip_projection/kernel"), get("skip_projection/bias")),
        output_projection=(get("output_projection/kernel"), get("output_projection/bias")),
    )


def keras_weight_getter(model) -> Callable[[str], tf.Tensor]:
    """`get` for `network_weights` over a Keras model's variables."""
    variables: Mapping[str, object] = {w.path: w for w in model.weights}
    return lambda path: tf.convert_to_tensor(variables[path])


def upsample(weights: NetworkWeights, config: DiffWaveConfig, mel: tf.Tensor, first_frame: tf.Tensor,
             frame_lengths: tf.Tensor) -> tf.Tensor:
    """Upsampled mel (B, F_w * hop, M) for a window of mel frames (B, F_w, M) starting at absolute
    frame `first_frame` (may be negative), as SpectrogramUpsampler computes those samples.

    Frames outside [0, frame_lengths) and the first convolution's outputs beyond them are zeroed,
    which makes a window's samples (away from its first and last frame) equal to the whole mel's.
    """
    x = tf.expand_dims(mel, -1)
    rate = 1  # input positions per mel frame
    for (kernel, bias), stride in zip(weights.upsampler, config.upsample_factors):
        # (expand_dims rather than [:, None] indexing: LiteRT cannot lower new-axis slices.)
        positions = tf.expand_dims(first_frame * rate + tf.range(tf.shape(x)[1]), 0)
        valid = (positions >= 0) & (positions < tf.expand_dims(frame_lengths, 1) * rate)
        x = x * tf.reshape(tf.cast(valid, x.dtype), [tf.shape(x)[0], -1, 1, 1])
        x = upsample_stage(x, kernel, bias, stride)
        rate *= stride
    return x[..., 0]


class WavefrontState(NamedTuple):
    """What the wavefront carries from one tile to the next, per residual layer: the last 2 d samples
    of its input (x) and the last d samples of the skip sum (skip), time-major (samples, B, C)."""

    x: tuple[tf.Tensor, ...]
    skip: tuple[tf.Tensor, ...]


def _with_length(tensor: tf.Tensor, length: int) -> tf.Tensor:
    """Declare a carried buffer's (static) length, which slicing by a tensor bound loses."""
    tensor.set_shape([length, *tensor.shape[1:]])
    return tensor


class ChunkedNetwork:
    """One DiffWave network evaluation over a batch of audio, chunk by chunk along time.

    `chunk_length` is the tile length in samples (rounded up to a whole number of mel frames;
    shorter inputs use one tile of their own length). `jit_compile` compiles the per-chunk body
    with XLA (slower on this CPU; see benchmarks/vocode_speed.py --levers).
    """

    def __init__(self, config: DiffWaveConfig, chunk_length: int, jit_compile: bool = False):
        if chunk_length <= 0:
            raise ValueError(f"chunk_length must be positive, got {chunk_length}")
        self.config = config
        hop = config.hop_length
        self.chunk_length = -(-int(chunk_length) // hop) * hop
        self.dilations = config.dilations
        self.lags = np.cumsum(self.dilations).tolist()  # how far layer l's output runs behind the input
        self.receptive_field = int(self.lags[-1])
        self.conditional = not config.unconditional
        self._layers = tf.function(self._layers, jit_compile=True) if jit_compile else self._layers

    def tile_length(self, max_length: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """Samples per chunk for a batch: at most `chunk_length` rows (samples x items) per chunk,
        keeping a chunk's working set the same size whatever the batch, and the input plus the
        receptive field split into equal chunks (whole mel frames), so the last chunk is not mostly
        padding (a 1 s clip: 25,600 samples computed instead of 32,768)."""
        hop = self.config.hop_length
        needed = (max_length + self.receptive_field + hop - 1) // hop  # in mel frames
        largest = tf.maximum(1, self.chunk_length // batch // hop)
        tiles = (needed + largest - 1) // largest
        return (needed + tiles - 1) // tiles * hop

    def padded_length(self, max_length: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """Whole chunks covering the input plus the receptive field (the wavefront's look-ahead)."""
        tile = self.tile_length(max_length, batch)
        return (max_length + self.receptive_field + tile - 1) // tile * tile

    def whole_conditioner(self, weights: NetworkWeights, mel: tf.Tensor, lengths: tf.Tensor,
                          padded_length: tf.Tensor) -> tf.Tensor:
        """Time-major upsampled mel for the whole batch, (D + padded_length, B, M), index i holding
        sample i - D (D = receptive field): computed once per call for inputs below the threshold."""
        hop = self.config.hop_length
        u = upsample(weights, self.config, mel, tf.constant(0), lengths // hop)
        u = tf.transpose(u, [1, 0, 2])
        return tf.pad(u, [[self.receptive_field, padded_length - tf.shape(u)[0]], [0, 0], [0, 0]])

    def initial_state(self, batch: tf.Tensor) -> "WavefrontState":
        """The carried state before an input's first sample: zeros (what precedes sample 0)."""
        c = self.config.residual_channels
        return WavefrontState(tuple(tf.zeros([2 * d, batch, c]) for d in self.dilations),
                              tuple(tf.zeros([d, batch, c]) for d in self.dilations))

    def __call__(self, weights: NetworkWeights, audio: tf.Tensor, step: tf.Tensor, lengths: tf.Tensor,
                 mel: tf.Tensor | None = None, conditioner: tf.Tensor | None = None) -> tf.Tensor:
        """Predicted noise (B, L) for audio (B, L) at one diffusion step (a scalar).

        lengths (B,): valid samples per item. Conditional models take either `conditioner` from
        `whole_conditioner` (computed once per call) or `mel` (B, F, M), upsampled chunk by chunk.
        """
        d_total = self.receptive_field
        batch, length = tf.shape(audio)[0], tf.shape(audio)[1]
        tile = self.tile_length(length, batch)
        padded = self.padded_length(length, batch)
        audio_tm = tf.transpose(tf.pad(audio, [[0, 0], [0, padded - length]]))  # (padded, B)
        chunk_mel = self.conditional and conditioner is None
        if not self.conditional:
            window, carry = (lambda start, size, carry: (None, carry)), tf.zeros([0])
        elif chunk_mel:
            hop, margin = self.config.hop_length, MEL_MARGIN_FRAMES
            frames = tf.shape(mel)[1]
            mel = tf.pad(mel, [[0, 0], [margin, padded // hop + margin - frames], [0, 0]])
            frame_lengths = lengths // hop

            def window(start, size, mel_tail):
                first = start // hop - margin
                u = upsample(weights, self.config, mel[:, start // hop:start // hop + size // hop + 2 * margin],
                             first, frame_lengths)
                u = tf.transpose(u[:, margin * hop:margin * hop + size], [1, 0, 2])
                window = tf.concat([mel_tail, u], 0)  # samples [start - D, start + size)
                return window, _with_length(window[size:], d_total)

            carry = tf.zeros([d_total, batch, self.config.n_mels])
        else:
            window, carry = (lambda start, size, carry: (conditioner[start:start + size + d_total], carry)), \
                tf.zeros([0])
        eps, _ = self.span(weights, audio_tm, tile, self.diffusion_projections(weights, step), lengths,
                           self.initial_state(batch), window, carry)
        # The span's outputs are samples [-D, padded - D).
        return tf.transpose(eps[d_total:d_total + length])

    def span(self, weights: NetworkWeights, audio_tm: tf.Tensor, tile: tf.Tensor, diffusion: Sequence[tf.Tensor],
             lengths: tf.Tensor, state: "WavefrontState", window: Callable, carry: tf.Tensor,
             start: tf.Tensor | int = 0) -> tuple[tf.Tensor, "WavefrontState"]:
        """The wavefront over input samples [start, start + n) (time-major audio (n, B)), continuing
        from `state` (the carried buffers after sample start - 1), in tiles of `tile` samples (the
        last may be shorter). Returns the predicted noise (n, B) for samples [start - D, start + n - D)
        and the state after the span, so that consecutive spans equal one span over both.

        `window(offset, size, carry) -> (window, carry)` gives the time-major conditioner for the tile
        at span offset `offset` of `size` samples, samples [start + offset - D, start + offset + size)
        (None for unconditional models), threading `carry` through the tiles.
        """
        n = tf.shape(audio_tm)[0]
        tiles = (n + tile - 1) // tile

        def tile_step(k, x_buffers, skip_buffers, carry, outputs):
            offset = k * tile
            a = audio_tm[offset:offset + tile]
            mel_window, carry = window(offset, tf.shape(a)[0], carry)
            x_buffers, skip_buffers, out = self._layers(weights, a, mel_window, list(x_buffers), list(skip_buffers),
                                                        diffusion, start + offset, lengths)
            return k + 1, x_buffers, skip_buffers, carry, outputs.write(k, out)

        outputs = tf.TensorArray(tf.float32, size=tiles, infer_shape=False)
        # Two chunks in flight: chunk k+1's layer l runs beside chunk k's layer l+1 (faster than
        # one, and with `sampler.configure_cpu_threads` each on half the cores), while TF's default
        # of ten lets chunks run ahead, each holding its layers' chunk-sized intermediates, which
        # made peak memory erratic (+0.4 GB on a 30 s input).
        _, x_buffers, skip_buffers, _, outputs = tf.while_loop(
            lambda k, *_: k < tiles, tile_step, [tf.constant(0), list(state.x), list(state.skip), carry, outputs],
            parallel_iterations=2)
        eps = outputs.concat()
        eps.set_shape(audio_tm.shape)
        return eps, WavefrontState(tuple(x_buffers), tuple(skip_buffers))

    def whole(self, weights: NetworkWeights, audio: tf.Tensor, step: tf.Tensor, lengths: tf.Tensor,
              mel: tf.Tensor | None = None) -> tf.Tensor:
        """The same evaluation as one chunk spanning the whole input, without a loop: for LiteRT,
        whose converter cannot lower the chunk loop's dynamically shaped TensorArray."""
        d_total = self.receptive_field
        batch, length = tf.shape(audio)[0], tf.shape(audio)[1]
        audio_tm = tf.transpose(tf.pad(audio, [[0, 0], [0, d_total]]))
        window = None if mel is None else self.whole_conditioner(weights, mel, lengths, length + d_total)
        state = self.initial_state(batch)
        _, _, out = self._layers(weights, audio_tm, window, list(state.x), list(state.skip),
                                 self.diffusion_projections(weights, step), tf.constant(0), lengths)
        return tf.transpose(out[d_total:])

    def diffusion_projections(self, weights: NetworkWeights, step: tf.Tensor) -> list[tf.Tensor]:
        """Every layer's diffusion-step projection, (1, 1, C) each (one step for the whole batch)."""
        embedding = step_embedding(weights.embedding_table, tf.reshape(step, [1]), weights.embedding)
        diffusion = tf.matmul(embedding, weights.diffusion_kernel) + weights.diffusion_bias
        return tf.split(tf.reshape(diffusion, [1, 1, -1]), len(self.dilations), axis=-1)

    def _layers(self, weights: NetworkWeights, audio: tf.Tensor, mel_window: tf.Tensor | None,
                x_buffers: Sequence[tf.Tensor], skip_buffers: Sequence[tf.Tensor],
                diffusion: Sequence[tf.Tensor], start: tf.Tensor, lengths: tf.Tensor):
        """The network over one tile of input samples [start, start + T) (time-major audio (T, B)):
        returns the new carried buffers and the predicted noise for samples [start - D, start + T - D)."""
        c = self.config.residual_channels
        tile, batch = tf.shape(audio)[0], tf.shape(audio)[1]
        d_total = self.receptive_field
        in_kernel, in_bias = weights.input_projection
        x = tf.nn.relu(tf.expand_dims(audio, -1) * tf.reshape(in_kernel, [1, 1, c]) + in_bias)
        skip = tf.zeros_like(x)
        new_x_buffers, new_skip_buffers = [], []
        for layer, (d, lag, w) in enumerate(zip(self.dilations, self.lags, weights.layers)):
            # This layer's outputs are samples [start - lag, start - lag + T); its input window,
            # the carried 2d samples and this tile's input, is [start - lag - d, start - lag + d + T).
            x_window = tf.concat([x_buffers[layer], x], 0)
            skip_window = tf.concat([skip_buffers[layer], skip], 0)
            new_x_buffers.append(_with_length(x_window[tile:], 2 * d))
            new_skip_buffers.append(_with_length(skip_window[tile:], d))
            # Zero outside every utterance, as the reference's zero padding. Multiplying interior
            # chunks by ones too costs within measurement noise and keeps the graph (and its
            # tracing time) half the size of a masked/unmasked branch pair.
            positions = start - lag - d + tf.range(tile + 2 * d)
            positions = tf.expand_dims(positions, 1)
            valid = (positions >= 0) & (positions < tf.expand_dims(lengths, 0))
            h = (x_window + diffusion[layer]) * tf.expand_dims(tf.cast(valid, tf.float32), -1)
            conditioner = None if mel_window is None else mel_window[d_total - lag:d_total - lag + tile]
            x, skip = residual_layer(w, h, x_window[d:d + tile], conditioner, d, time_axis=0,
                                     skip_sum=skip_window[:tile])
        out = tf.reshape(skip, [tile * batch, c]) / math.sqrt(len(self.dilations))
        skip_kernel, skip_bias = weights.skip_projection
        out = tf.nn.relu(tf.nn.bias_add(tf.matmul(out, skip_kernel), skip_bias))
        out_kernel, out_bias = weights.output_projection
        out = tf.nn.bias_add(tf.matmul(out, out_kernel), out_bias)
        return new_x_buffers, new_skip_buffers, tf.reshape(out, [tile, batch])
