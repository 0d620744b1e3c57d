"""DiffWave (Kong et al. 2020) as a Keras 3 Functional model, layer for layer lmnt-com/diffwave's model.py.

TF layout throughout: audio (batch, samples), mel (batch, frames, n_mels), activations
(batch, samples, channels). The same layers also run outside the Functional graph (see
`DiffWaveLayers.denoise`), with a validity mask, so that a padded batch or a chunk of a long
utterance computes exactly what the whole, unpadded utterance would.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from .config import DiffWaveConfig

PACKAGE = "diffwave_vocoder"
EMBEDDING_DIM = 128
EMBEDDING_HIDDEN = 512


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
        step = ops.cast(step, "float32")
        low = ops.floor(step)
        high = ops.ceil(step)
        table = ops.convert_to_tensor(self.table)
        low_row = ops.take(table, ops.cast(low, "int32"), axis=0)
        high_row = ops.take(table, ops.cast(high, "int32"), axis=0)
        x = low_row + (high_row - low_row) * ops.expand_dims(step - low, -1)
        x = ops.silu(self.projection1(x))
        return ops.silu(self.projection2(x))

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

    def call(self, mel, frame_lengths=None):
        """mel (B, F, M) -> (B, F * hop, M). `frame_lengths` (B,) masks padding frames out."""
        x = ops.expand_dims(mel, -1)
        if frame_lengths is not None:
            x = x * _time_mask(frame_lengths, ops.shape(x)[1])[:, :, None, None]
        x = ops.leaky_relu(self.conv1(x), negative_slope=0.4)
        if frame_lengths is not None:
            x = x * _time_mask(frame_lengths * self.upsample_factors[0], ops.shape(x)[1])[:, :, None, None]
        x = ops.leaky_relu(self.conv2(x), negative_slope=0.4)
        return ops.squeeze(x, -1)

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
    forward+backward at B=4, L=15,872, C=64 (benchmarks/train_speed.py). Inference keeps the GEMM
    path, which chunking.py mirrors exactly. Where the native op cannot train in the compute dtype
    (oneDNN has no float16 dilated Conv2DBackpropFilter, so float16 on most CPUs), training takes
    the GEMM path too: `native_dilated_conv_trains` finds out once per dtype by trying it.
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
        length = ops.shape(x)[1]
        padded = ops.pad(x, [[0, 0], [d, d], [0, 0]])
        taps = ops.concatenate(
            [padded[:, :length], padded[:, d:d + length], padded[:, 2 * d:2 * d + length]], axis=-1)
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


def _time_mask(lengths, max_length):
    """(B, T) float mask, 1 inside each sequence's length."""
    positions = ops.arange(max_length)[None, :]
    return ops.cast(positions < ops.cast(lengths, "int32")[:, None], "float32")


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

    def call(self, inputs, valid=None):
        """inputs: [x (B, L, C), step embedding (B, 512), conditioner (B, L, M)] (no conditioner if
        unconditional). `valid` (B, L, 1) zeroes the dilated conv's input outside the sequence, which
        is what the reference's zero padding does at the utterance's edges."""
        x, embedding = inputs[0], inputs[1]
        h = x + ops.expand_dims(self.diffusion_projection(embedding), 1)
        if valid is not None:
            h = h * valid
        y = self.dilated_conv(h)
        if self.conditional:
            y = y + self.conditioner_projection(inputs[2])
        gate, filt = ops.split(y, 2, axis=-1)
        y = self.output_projection(ops.sigmoid(gate) * ops.tanh(filt))
        residual, skip = ops.split(y, 2, axis=-1)
        return (x + residual) / math.sqrt(2.0), skip

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[0])
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "residual_channels": self.residual_channels,
                "dilation": self.dilation, "conditional": self.conditional}


@dataclass(frozen=True)
class DiffWaveLayers:
    """The named layers of a built model, for running the network piecewise (sampler, chunking)."""

    input_projection: layers.Dense
    diffusion_embedding: DiffusionEmbedding
    spectrogram_upsampler: SpectrogramUpsampler | None
    residual_blocks: tuple[ResidualBlock, ...]
    skip_projection: layers.Dense
    output_projection: layers.Dense

    @classmethod
    def of(cls, model: keras.Model) -> "DiffWaveLayers":
        names = {layer.name for layer in model.layers}
        blocks = []
        while f"residual_block_{len(blocks)}" in names:
            blocks.append(model.get_layer(f"residual_block_{len(blocks)}"))
        return cls(
            input_projection=model.get_layer("input_projection"),
            diffusion_embedding=model.get_layer("diffusion_embedding"),
            spectrogram_upsampler=(model.get_layer("spectrogram_upsampler")
                                   if "spectrogram_upsampler" in names else None),
            residual_blocks=tuple(blocks),
            skip_projection=model.get_layer("skip_projection"),
            output_projection=model.get_layer("output_projection"),
        )

    def denoise(self, audio, embedding, conditioner=None, valid=None):
        """Predicted noise for audio (B, L) given a step embedding (B, 512) and an upsampled mel
        (B, L, M); `valid` (B, L, 1) marks real samples when the batch is padded or chunked."""
        x = ops.relu(self.input_projection(ops.expand_dims(audio, -1)))
        skip = None
        for block in self.residual_blocks:
            inputs = [x, embedding] if conditioner is None else [x, embedding, conditioner]
            x, skip_i = block(inputs, valid=valid)
            skip = skip_i if skip is None else skip + skip_i
        x = skip / math.sqrt(len(self.residual_blocks))
        x = ops.relu(self.skip_projection(x))
        return ops.squeeze(self.output_projection(x), -1)


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
    net = DiffWaveLayers(
        input_projection=layers.Dense(c, kernel_initializer=_kaiming_normal(), name="input_projection"),
        diffusion_embedding=DiffusionEmbedding(config.max_steps, name="diffusion_embedding"),
        spectrogram_upsampler=upsampler,
        residual_blocks=tuple(
            ResidualBlock(c, dilation, not config.unconditional, name=f"residual_block_{i}")
            for i, dilation in enumerate(config.dilations)),
        skip_projection=layers.Dense(c, kernel_initializer=_kaiming_normal(), name="skip_projection"),
        output_projection=layers.Dense(1, kernel_initializer="zeros", name="output_projection"),
    )
    conditioner = None if upsampler is None else upsampler(mel)
    noise = net.denoise(audio, net.diffusion_embedding(step), conditioner)
    name = "diffwave_unconditional" if config.unconditional else "diffwave"
    return keras.Model(inputs, noise, name=name)
