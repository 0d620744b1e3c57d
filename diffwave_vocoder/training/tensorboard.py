"""TensorBoard scalars, images and audio written with TensorFlow alone.

`tf.summary.scalar/image/audio` are implemented by the `tensorboard` package, which TensorFlow no
longer installs; the event format and plugin metadata they write are small and stable, so we write
them with `tf.summary.write` (TF core). The `tensorboard` package is then only needed for viewing.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# AudioPluginData{encoding: WAV (= 11)} in protobuf wire format: field 2, varint 11.
_AUDIO_WAV = b"\x10\x0b"


def _metadata(plugin: str, content: bytes = b"") -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content))


class SummaryLog:
    """One TensorBoard run directory (e.g. MODEL_DIR/logs/train)."""

    def __init__(self, directory: str | os.PathLike):
        self.writer = tf.summary.create_file_writer(str(directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                                 metadata=_metadata("scalars"))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """image: (height, width) in [0, 1], row 0 at the top."""
        pixels = tf.constant(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0)
        png = tf.io.encode_png(tf.cast(tf.round(pixels), tf.uint8)[:, :, None])
        height, width = image.shape
        with self.writer.as_default():
            tf.summary.write(tag, tf.stack([tf.constant(str(width)), tf.constant(str(height)), png]),
                             step=step, metadata=_metadata("images"))

    def audio(self, step: int, tag: str, audio: np.ndarray, sample_rate: int) -> None:
        """audio: mono float samples in [-1, 1]."""
        samples = tf.constant(np.clip(np.asarray(audio, np.float32), -1.0, 1.0)[:, None])
        wav = tf.audio.encode_wav(samples, sample_rate)
        with self.writer.as_default():
            tf.summary.write(tag, tf.stack([[wav, tf.constant(b"")]]), step=step,
                             metadata=_metadata("audio", _AUDIO_WAV))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

