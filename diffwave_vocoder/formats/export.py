"""Export a vocoder for serving: a TensorFlow SavedModel (TF Serving) and a LiteRT/TFLite model.

SavedModel: plain tf.Variables and graph functions, nothing from this package, so plain TensorFlow
(`tf.saved_model.load`) or TF Serving runs it. Signatures take a batch of equal-length mels and one
seed per utterance and give the audio `Vocoder.vocode` gives for the same seeds (same noise, same
chunked network; the mel is upsampled chunk by chunk, so memory stays bounded at any length; an
energy-prior model computes its prior's std from the mel inside the graph):

    vocode / serving_default   mel float32 (batch, frames, n_mels), seed int64 (batch,)
                               -> audio float32 (batch, frames * hop_length), fast schedule
    vocode_full                the same with the training (50-step) schedule
    (unconditional models: generate / generate_full, length int32 (), seed int64 (batch,))

The config (model sizes, mel convention, schedules) is written beside it as
`assets.extra/diffwave_config.json`. For TF Serving, place the directory as MODEL_BASE/1/.

TFLite: the network itself, `denoise` (audio (batch, samples), step (1,), mel (batch, frames,
n_mels) -> predicted noise), and the reverse loop, `vocode` (mel, noise -> audio). LiteRT's
builtin ops have no counter-based Gaussian generator, so the loop takes its noise as an input of
shape (steps, batch, samples), standard normal: noise[0] is x_T, noise[i] is added after the i-th
update (an energy-prior model scales it by its prior's std, computed from the mel). Both run
the whole input at once (no chunking). `quantize="int8"` stores weights as int8 (dynamic-range
quantization: activations stay float); its error and speed are in benchmarks/vocode_speed.py --tflite.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from ..io.atomic import atomic_directory, atomic_file
from ..chunking import ChunkedNetwork, network_weights
from ..prior import prior_std, sample_std, uses_prior
from ..sampler import reverse_diffusion
from ..schedule import Steps, resolve_schedule
from ..vocoder import Vocoder

CONFIG_ASSET = Path("assets.extra") / "diffwave_config.json"
# What tf.saved_model.save and this exporter write at a SavedModel's top level.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra")
FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = (None, "int8")


def _umask() -> int:
    """The process umask (temporary files and directories are created private)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _ServingModule(tf.Module):
    """The vocoder as tf.Variables (by Keras weight path) and signature functions (traced without
    AutoGraph, like the sampler: their loops and branches are explicit)."""

    def __init__(self, vocoder: Vocoder):
        super().__init__(name="diffwave_vocoder")
        config = vocoder.config
        self.weights_by_path = {w.path: tf.Variable(w.numpy(), trainable=False, name=w.path.replace("/", "."))
                                for w in vocoder.model.weights}
        network = ChunkedNetwork(config, vocoder.inference_options.resolved_chunk_length())
        hop = config.hop_length

        schedules = {steps: resolve_schedule(config, steps) for steps in ("fast", "full")}

        def sample(steps: str, mel: tf.Tensor | None, lengths: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
            schedule = schedules[steps]
            weights = network_weights(config, self.weights_by_path.__getitem__)
            constants = (tf.constant(v) for v in (schedule.steps, schedule.c1, schedule.c2, schedule.sigma))
            frame_std = prior_std(mel, config, tnp) if uses_prior(config) else None
            return reverse_diffusion(network, weights, mel, lengths, *constants, seeds=seed, chunked=True,
                                     frame_std=frame_std)

        seed_spec = tf.TensorSpec([None], tf.int64, name="seed")
        if config.unconditional:
            for name, steps in (("generate", "fast"), ("generate_full", "full")):
                def generate(length, seed, steps=steps):
                    lengths = tf.fill(tf.shape(seed), length)
                    return {"audio": sample(steps, None, lengths, seed)}
                setattr(self, name, tf.function(generate, autograph=False, input_signature=[
                    tf.TensorSpec([], tf.int32, name="length"), seed_spec]))
        else:
            mel_spec = tf.TensorSpec([None, None, config.n_mels], tf.float32, name="mel")
            for name, steps in (("vocode", "fast"), ("vocode_full", "full")):
                def vocode(mel, seed, steps=steps):
                    lengths = tf.fill(tf.shape(seed), tf.shape(mel)[1] * hop)
                    return {"audio": sample(steps, mel, lengths, seed)}
                setattr(self, name, tf.function(vocode, autograph=False, input_signature=[mel_spec, seed_spec]))

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        names = ("generate", "generate_full") if hasattr(self, "generate") else ("vocode", "vocode_full")
        functions = {name: getattr(self, name).get_concrete_function() for name in names}
        return {"serving_default": functions[names[0]], **functions}


def export_saved_model(vocoder: Vocoder, path: str | os.PathLike) -> Path:
    """Write a SavedModel directory atomically (see the module docstring for its signatures). An
    existing directory is replaced only when it holds nothing but a SavedModel's entries."""
    module = _ServingModule(vocoder)
    with atomic_directory(path, owned=SAVED_MODEL_ENTRIES) as tmp:
        os.chmod(tmp, 0o777 & ~_umask())  # a server running as another user must read it
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        (tmp / CONFIG_ASSET).parent.mkdir(exist_ok=True)
        (tmp / CONFIG_ASSET).write_text(vocoder.config.to_json() + "\n")
    return Path(path)


class _LiteModule(tf.Module):
    """Whole-input network and loop with the weights as constants, for the TFLite converter."""

    def __init__(self, vocoder: Vocoder, steps: Steps):
        super().__init__(name="diffwave_vocoder_lite")
        config, conditional = vocoder.config, vocoder.conditional
        values = {w.path: w.numpy() for w in vocoder.model.weights}
        network = ChunkedNetwork(config, vocoder.inference_options.resolved_chunk_length())
        schedule = resolve_schedule(config, steps)
        coefficients = [schedule.steps, schedule.c1, schedule.c2, schedule.sigma]

        def denoise(audio, step, mel=None):
            """Predicted noise; one step value for the whole batch, as the reference's loop."""
            weights = network_weights(config, lambda path: tf.constant(values[path]))
            lengths = tf.fill(tf.shape(audio)[:1], tf.shape(audio)[1])
            return network.whole(weights, audio, step[0], lengths, mel)

        def loop(noise, mel=None):
            steps, c1, c2, sigma = (tf.constant(v) for v in coefficients)
            count = len(schedule)
            if uses_prior(config):
                noise = noise * sample_std(prior_std(mel, config, tnp), config.hop_length, tnp)

            def body(i, audio):
                n = count - 1 - i
                audio = c1[n] * (audio - c2[n] * denoise(audio, steps[n:n + 1], mel))
                audio = tf.cond(n > 0, lambda: audio + sigma[n] * noise[i + 1], lambda: audio)
                return i + 1, tf.clip_by_value(audio, -1.0, 1.0)

            return tf.while_loop(lambda i, _: i < count, body, [tf.constant(0), noise[0]])[1]

        audio_spec = tf.TensorSpec([None, None], tf.float32, name="audio")
        step_spec = tf.TensorSpec([1], tf.float32, name="step")
        mel_spec = tf.TensorSpec([None, None, config.n_mels], tf.float32, name="mel")
        noise_spec = tf.TensorSpec([len(schedule), None, None], tf.float32, name="noise")
        if conditional:
            self.denoise = tf.function(lambda audio, step, mel: {"noise": denoise(audio, step, mel)},
                                       autograph=False, input_signature=[audio_spec, step_spec, mel_spec])
            self.vocode = tf.function(lambda mel, noise: {"audio": loop(noise, mel)},
                                      autograph=False, input_signature=[mel_spec, noise_spec])
        else:
            self.denoise = tf.function(lambda audio, step: {"noise": denoise(audio, step)},
                                       autograph=False, input_signature=[audio_spec, step_spec])
            self.vocode = tf.function(lambda noise: {"audio": loop(noise)}, autograph=False,
                                      input_signature=[noise_spec])


def tflite_bytes(vocoder: Vocoder, quantize: str | None = None, steps: Steps = "fast") -> bytes:
    """The TFLite flatbuffer: signatures `denoise` (the network) and `vocode` (the loop, noise in)."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    module = _LiteModule(vocoder, steps)
    with tempfile.TemporaryDirectory(prefix="diffwave-tflite-") as tmp:
        signatures = {"denoise": module.denoise.get_concrete_function(),
                      "vocode": module.vocode.get_concrete_function()}
        tf.saved_model.save(module, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def export_tflite(vocoder: Vocoder, path: str | os.PathLike, quantize: str | None = None,
                  steps: Steps = "fast") -> Path:
    """Write the TFLite model file atomically; `steps` is the schedule baked into `vocode`."""
    data = tflite_bytes(vocoder, quantize, steps)
    with atomic_file(path, suffix=".tflite") as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o666 & ~_umask())
    return Path(path)


def export(vocoder: Vocoder, path: str | os.PathLike, format: str, quantize: str | None = None) -> Path:
    """`diffwave-vocoder export --format saved_model|tflite`."""
    if format == "saved_model":
        if quantize is not None:
            raise ValueError("quantization applies to --format tflite only")
        return export_saved_model(vocoder, path)
    if format == "tflite":
        return export_tflite(vocoder, path, quantize)
    raise ValueError(f"unknown export format {format!r}; expected one of {FORMATS}")


__all__ = ["export", "export_saved_model", "export_tflite", "tflite_bytes", "FORMATS"]
