"""DiffWave (Kong et al. 2020) as a Keras 3 Functional model, layer for layer lmnt-com/diffwave's model.py.

TF layout throughout: audio (batch, samples), mel (batch, frames, n_mels), activations
(batch, samples, channels). The network's maths is written once, as plain TensorFlow functions on
tensors (`step_embedding`, `upsample_stage`, `residual_layer`): the Keras layers here call them with
their variables, and the chunked inference path (`chunking`) calls them on its tiles, so the two
cannot drift apart.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .config import EMBEDDING_DIM, EMBEDDING_HIDDEN, DiffWaveConfig

PACKAGE = "diffwave_vocoder"


def step_embedding_table(max_steps: int) -> np.ndarray:
    """Sinusoidal step table (max_steps, 128), bit-faithful to the reference's float32 torch ops.

    The sine arguments reach t * 1e4, so one ulp in a float32 frequency moves a sine by up to 0.06.
    torch rounds 10**x correctly to float32 (numpy's float32 power is off by one ulp for 11 of
    the 64 frequencies), multiplies in float32, and evaluates sin/cos accurately for that float32
    argument; we do the same through float64.
    """
    steps = np.arange(max_steps, dtype=np.float32)[:, None]
    exponents = np.arange(EMBEDDING_DIM // 2, dtype=np.float32)[None, :] * np.float32(4.0) / np.float32(63.0)
    frequencies = np.power(10.0, exponents.astype(np.float64)).astype(np.float32)
    table = (steps * frequencies).astype(np.float64)
    return np.concatenate([np.sin(table), np.cos(table)], axis=1).astype(np.float32)


def step_embedding(table: tf.Tensor, step: tf.Tensor,
                   projections: Sequence[tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """(B, 512) embedding of steps (B,): the table row, interpolated linearly between the two
    nearest rows for a fractional step (the reference's fast sampling), through two silu layers.

    `projections`: ((kernel, bias), (kernel, bias)) of the two layers; the result has their dtype.
    """
    step = tf.cast(step, tf.float32)
    low, high = tf.floor(step), tf.math.ceil(step)
    low_row = tf.gather(table, tf.cast(low, tf.int32))
    high_row = tf.gather(table, tf.cast(high, tf.int32))
    x = low_row + (high_row - low_row) * tf.expand_dims(step - low, -1)
    x = tf.cast(x, projections[0][0].dtype)
    for kernel, bias in projections:
        x = tf.nn.silu(tf.matmul(x, kernel) + bias)
    return x


def upsample_stage(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, stride: int) -> tf.Tensor:
    """One upsampler stage on (B, T, M, 1): transposed convolution (kernel (2 stride, 3), stride
    (stride, 1), 'same') to (B, T * stride, M, 1), then leaky ReLU(0.4)."""
    shape = tf.shape(x)
    x = tf.nn.conv_transpose(x, kernel, [shape[0], shape[1] * stride, shape[2], 1], [stride, 1],
                             padding="SAME", data_format="NHWC")
    return tf.nn.leaky_relu(x + bias, alpha=0.4)


class LayerWeights(NamedTuple):
    """One residual layer's weights as `residual_layer` multiplies them: the dilated convolution
    and the conditioner projection as one (3C [+ M], C) matrix per half (gate, filter), the output
    projection split into its residual and skip halves."""

    gate_kernel: tf.Tensor
    gate_bias: tf.Tensor
    filter_kernel: tf.Tensor
    filter_bias: tf.Tensor
    residual_kernel: tf.Tensor
    residual_bias: tf.Tensor
    skip_kernel: tf.Tensor
    skip_bias: tf.Tensor


def layer_weights(dilated_kernel: tf.Tensor, dilated_bias: tf.Tensor, output_kernel: tf.Tensor,
                  output_bias: tf.Tensor, conditioner_kernel: tf.Tensor | None = None,
                  conditioner_bias: tf.Tensor | None = None) -> LayerWeights:
    """Gather a residual layer's weights in their Keras layouts (dilated kernel (3, C, 2C),
    conditioner kernel (M, 2C), output kernel (C, 2C)) into `LayerWeights`."""
    c = int(output_kernel.shape[0])
    kernel = tf.reshape(dilated_kernel, [3 * c, 2 * c])
    bias = dilated_bias
    if conditioner_kernel is not None:
        kernel = tf.concat([kernel, conditioner_kernel], 0)
        bias = bias + conditioner_bias
    return LayerWeights(kernel[:, :c], bias[:c], kernel[:, c:], bias[c:],
                        output_kernel[:, :c], output_bias[:c], output_kernel[:, c:], output_bias[c:])


def _time_slice(tensor: tf.Tensor, start, length, time_axis: int) -> tf.Tensor:
    return tensor[start:start + length] if time_axis == 0 else tensor[:, start:start + length]


def dilated_taps(window: tf.Tensor, dilation: int, length, time_axis: int) -> list[tf.Tensor]:
    """[h(t - d), h(t), h(t + d)] for `length` samples t of a window holding d samples of context
    on each side along `time_axis`: a kernel-3 dilated convolution's inputs, as zero-copy slices."""
    return [_time_slice(window, k * dilation, length, time_axis) for k in range(3)]


def gated_unit(gate: tf.Tensor, filter_: tf.Tensor) -> tf.Tensor:
    """WaveNet's gated activation, sigmoid(gate) * tanh(filter)."""
    return tf.sigmoid(gate) * tf.tanh(filter_)


def residual_and_skip(weights: LayerWeights, gated: tf.Tensor, x: tf.Tensor,
                      skip_sum: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """The output projection of gated rows (N, C) split into residual and skip, for a layer with
    residual input x (..., C) of N samples: ((x + residual) / sqrt(2), skip), both shaped as x.
    `skip_sum` (shaped as x), the earlier layers' skips, is added to the skip while it is still the
    GEMM's (N, C) output, where oneDNN fuses the addition into the product."""
    c = weights.residual_kernel.shape[-1]
    residual = tf.nn.bias_add(tf.matmul(gated, weights.residual_kernel), weights.residual_bias)
    residual = residual + tf.reshape(x, [-1, c])
    skip = tf.nn.bias_add(tf.matmul(gated, weights.skip_kernel), weights.skip_bias)
    if skip_sum is not None:
        skip = skip + tf.reshape(skip_sum, [-1, c])
    shape = tf.shape(x)
    return tf.reshape(residual, shape) / math.sqrt(2.0), tf.reshape(skip, shape)


def residual_layer(weights: LayerWeights, window: tf.Tensor, x: tf.Tensor, conditioner: tf.Tensor | None,
                   dilation: int, time_axis: int, skip_sum: tf.Tensor | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
    """One gated residual layer of the reference: ((x + residual) / sqrt(2), skip), shaped as x.

    x: the layer's residual input, 3-D with time on `time_axis` (0: time-major (T, B, C), 1:
    batch-major (B, T, C)). window: the layer input h = x + step projection, zero outside the
    utterance (the reference's zero padding), with `dilation` samples of context on each side.
    conditioner: the upsampled mel at x's samples, laid out as x, or None (unconditional). The
    dilated convolution and the conditioner projection are one GEMM per half (gate, filter) over
    the rows [h(t - d), h(t), h(t + d), mel(t)], each carrying its bias and activation.
    skip_sum: the earlier layers' skips, returned added to this layer's (`residual_and_skip`), or None.
    """
    columns = dilated_taps(window, dilation, tf.shape(x)[time_axis], time_axis)
    if conditioner is not None:
        columns.append(conditioner)
    taps = tf.reshape(tf.concat(columns, -1), [-1, weights.gate_kernel.shape[0]])
    gated = gated_unit(tf.nn.bias_add(tf.matmul(taps, weights.gate_kernel), weights.gate_bias),
                       tf.nn.bias_add(tf.matmul(taps, weights.filter_kernel), weights.filter_bias))
    return residual_and_skip(weights, gated, x, skip_sum)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiffusionEmbedding(layers.Layer):
    """Step -> 512-d embedding. Non-integer steps interpolate the table linearly (fast sampling)."""

    def __init__(self, max_steps: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.max_steps = max_steps
        self.table = step_embedding_table(max_steps)
        self.projection1 = layers.Dense(EMBEDDING_HIDDEN, name="projection1")
        self.projection2 = layers.Dense(EMBEDDING_HIDDEN, name="projection2")

    def build(self, input_shape):
        self.projection1.build((None, EMBEDDING_DIM))
        self.projection2.build((None, EMBEDDING_HIDDEN))

    def call(self, step):
        projections = [(_compute(self, p.kernel), _compute(self, p.bias)) for p in (self.projection1, self.projection2)]
        return step_embedding(tf.constant(self.table), step, projections)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], EMBEDDING_HIDDEN)

    def get_config(self):
        return {**super().get_config(), "max_steps": self.max_steps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpectrogramUpsampler(layers.Layer):
    """Two transposed 2-D convolutions over (frames, mel bins), each followed by leaky ReLU(0.4).

    Kernel (2*stride, 3), stride (stride, 1), 'same' padding: with 16 x 16 this is the reference's
    ConvTranspose2d([3, 32], stride [1, 16], padding [1, 8]) in a time-first layout.
    """

    def __init__(self, upsample_factors: tuple[int, int] = (16, 16), **kwargs):
        super().__init__(**kwargs)
        self.upsample_factors = tuple(int(f) for f in upsample_factors)
        self.conv1, self.conv2 = (
            layers.Conv2DTranspose(1, (2 * s, 3), strides=(s, 1), padding="same", name=f"conv{i + 1}")
            for i, s in enumerate(self.upsample_factors))

    def build(self, input_shape):
        self.conv1.build((None, None, input_shape[-1], 1))
        self.conv2.build((None, None, input_shape[-1], 1))

    def call(self, mel):
        """mel (B, F, M) -> (B, F * hop, M)."""
        x = tf.expand_dims(mel, -1)
        for conv, stride in zip((self.conv1, self.conv2), self.upsample_factors):
            x = upsample_stage(x, _compute(self, conv.kernel), _compute(self, conv.bias), stride)
        return x[..., 0]

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else input_shape[1] * math.prod(self.upsample_factors)
        return (input_shape[0], frames, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "upsample_factors": list(self.upsample_factors)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DilatedConv1D(layers.Layer):
    """Kernel-3 'same' dilated convolution as one matmul over three shifted copies.

    Keras' dilated Conv1D lowers to SpaceToBatch/BatchToSpace copies on CPU; three slices of a
    padded input concatenated to (B, L, 3C) and multiplied by the (3C, 2C) kernel is the same
    cross-correlation in one GEMM. The kernel keeps Conv1D's (k, in, out) layout.

    Training calls (training=True) take oneDNN's native dilated convolution instead (tf.nn.conv1d
    passes the dilation straight to Conv2D; tf.nn.convolution would use SpaceToBatch): its
    backward pass skips the GEMM path's (B, L, 3C) gradient and its slicing, ~1.3-2x faster
    forward+backward at B=4, L=15,872, C=64 (benchmarks/train_speed.py). `ResidualBlock` calls
    this layer in training only; its inference runs `residual_layer` on this layer's weights.
    Where the native op cannot train in the compute dtype, training takes the GEMM path:
    `native_dilated_conv_trains` finds out once per dtype by trying it. It cannot without oneDNN
    (TensorFlow's own CPU kernels have no dilated Conv2D gradient, and TensorFlow turns oneDNN on by
    default only on CPUs with AVX-512 VNNI or newer: the CLI's `train` turns it on), nor in float16
    with it. (tf.nn.convolution's SpaceToBatch form halves the GEMM form's time for this layer alone
    in float32 without oneDNN, but measured no faster for a whole training step.)
    """

    def __init__(self, filters: int, dilation_rate: int = 1, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.dilation_rate = dilation_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(3, channels, self.filters),
                                      initializer=self.kernel_initializer)
        # PyTorch's default Conv1d bias init: uniform(+-1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(3 * channels)
        self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                    initializer=keras.initializers.RandomUniform(-bound, bound))

    def call(self, x, training=None):
        d = self.dilation_rate
        if training and (d == 1 or native_dilated_conv_trains(x.dtype)):
            kernel = ops.cast(self.kernel, x.dtype)
            return tf.nn.conv1d(x, kernel, stride=1, padding="SAME", dilations=d) + ops.cast(self.bias, x.dtype)
        padded = ops.pad(x, [[0, 0], [d, d], [0, 0]])
        taps = ops.concatenate(dilated_taps(padded, d, ops.shape(x)[1], time_axis=1), axis=-1)
        kernel = ops.reshape(self.kernel, (-1, self.filters))
        return ops.matmul(taps, kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "dilation_rate": self.dilation_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@functools.lru_cache(maxsize=None)
def native_dilated_conv_trains(dtype: tf.DType) -> bool:
    """Whether the native dilated convolution and its two gradients run in `dtype` on the default device.

    Tried once per dtype, eagerly (lifted out of any graph being traced) on a tiny input, with the
    Conv2D ops that tf.nn.conv1d and its gradient lower to.
    """
    args = dict(strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 1, 2, 1])
    with tf.init_scope():
        x, kernel = tf.ones((1, 1, 8, 2), dtype), tf.ones((1, 3, 2, 2), dtype)
        try:
            tf.raw_ops.Conv2D(input=x, filter=kernel, **args).numpy()
            tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel.shape, out_backprop=x, **args).numpy()
            tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=kernel, out_backprop=x, **args).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.NotFoundError):
            return False
    return True


def _kaiming_normal():
    """torch.nn.init.kaiming_normal_: untruncated normal, std sqrt(2 / fan_in)."""
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _compute(layer: layers.Layer, variable) -> tf.Tensor:
    """A variable as a tensor in the layer's compute dtype (float16 under mixed precision)."""
    return tf.cast(tf.convert_to_tensor(variable), layer.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """Gated residual layer: (x + residual) / sqrt(2) and a skip output, as in the reference."""

    def __init__(self, residual_channels: int = 64, dilation: int = 1, conditional: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.residual_channels = residual_channels
        self.dilation = dilation
        self.conditional = conditional
        c = residual_channels
        self.dilated_conv = DilatedConv1D(2 * c, dilation, kernel_initializer=_kaiming_normal(),
                                          name="dilated_conv")
        self.diffusion_projection = layers.Dense(c, name="diffusion_projection")
        self.conditioner_projection = (
            layers.Dense(2 * c, kernel_initializer=_kaiming_normal(), name="conditioner_projection")
            if conditional else None)
        self.output_projection = layers.Dense(2 * c, kernel_initializer=_kaiming_normal(),
                                              name="output_projection")

    def build(self, input_shape):
        c = self.residual_channels
        self.dilated_conv.build((None, None, c))
        self.diffusion_projection.build((None, EMBEDDING_HIDDEN))
        if self.conditional:
            self.conditioner_projection.build(input_shape[2])
        self.output_projection.build((None, None, c))

    def layer_weights(self) -> LayerWeights:
        """This layer's weights, in the compute dtype, arranged for `residual_layer`."""
        weight = functools.partial(_compute, self)
        conditioner = (() if not self.conditional else
                       (weight(self.conditioner_projection.kernel), weight(self.conditioner_projection.bias)))
        return layer_weights(weight(self.dilated_conv.kernel), weight(self.dilated_conv.bias),
                             weight(self.output_projection.kernel), weight(self.output_projection.bias),
                             *conditioner)

    def call(self, inputs, training=None):
        """inputs: [x (B, L, C), step embedding (B, 512), conditioner (B, L, M)] (no conditioner if
        unconditional). Training runs the dilated convolution as `DilatedConv1D` does in training
        (oneDNN's native dilated convolution, faster to differentiate); otherwise `residual_layer`."""
        x, embedding = inputs[0], inputs[1]
        conditioner = inputs[2] if self.conditional else None
        h = x + ops.expand_dims(self.diffusion_projection(embedding), 1)
        weights = self.layer_weights()
        if training:
            y = self.dilated_conv(h, training=True)
            if conditioner is not None:
                y = y + self.conditioner_projection(conditioner)
            gate, filter_ = tf.split(tf.reshape(y, [-1, 2 * self.residual_channels]), 2, axis=-1)
            return residual_and_skip(weights, gated_unit(gate, filter_), x)
        d = self.dilation
        window = tf.pad(h, [[0, 0], [d, d], [0, 0]])
        return residual_layer(weights, window, x, conditioner, d, time_axis=1)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[0])
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "residual_channels": self.residual_channels,
                "dilation": self.dilation, "conditional": self.conditional}


def build_model(config: DiffWaveConfig = DiffWaveConfig()) -> keras.Model:
    """A fresh, randomly initialised DiffWave with the reference's initialisation.

    Inputs: audio (B, L) float32, diffusion step (B,) float32 and, unless unconditional, mel
    (B, F, n_mels) with L = hop_length * F. Output: predicted noise (B, L).
    """
    c = config.residual_channels
    audio = keras.Input((None,), name="audio")
    step = keras.Input((), name="step")
    inputs = [audio, step]
    upsampler = None
    if not config.unconditional:
        mel = keras.Input((None, config.n_mels), name="mel")
        inputs.append(mel)
        upsampler = SpectrogramUpsampler(config.upsample_factors, name="spectrogram_upsampler")
    # Initializers without a seed draw one when they are created, so the layers are created in this
    # order, all before any is built: it fixes which weights a given random seed gives.
    input_projection = layers.Dense(c, kernel_initializer=_kaiming_normal(), name="input_projection")
    diffusion_embedding = DiffusionEmbedding(config.max_steps, name="diffusion_embedding")
    blocks = [ResidualBlock(c, dilation, not config.unconditional, name=f"residual_block_{i}")
              for i, dilation in enumerate(config.dilations)]
    skip_projection = layers.Dense(c, kernel_initializer=_kaiming_normal(), name="skip_projection")
    output_projection = layers.Dense(1, kernel_initializer="zeros", name="output_projection")

    conditioner = [] if upsampler is None else [upsampler(mel)]
    embedding = diffusion_embedding(step)
    x = ops.relu(input_projection(ops.expand_dims(audio, -1)))
    skip = None
    for block in blocks:
        x, layer_skip = block([x, embedding, *conditioner])
        skip = layer_skip if skip is None else skip + layer_skip
    x = ops.relu(skip_projection(skip / math.sqrt(len(blocks))))
    noise = ops.squeeze(output_projection(x), -1)
    name = "diffwave_unconditional" if config.unconditional else "diffwave"
    return keras.Model(inputs, noise, name=name)
