"""The `Vocoder` a TTS pipeline calls, saved as a checkpoint directory (`vocoder_format`).

Loading rebuilds the model from the config and reads the weights; nothing in it is executed.
Saving a version 1 checkpoint again writes version 2.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union

import keras
import numpy as np

from . import __version__  # noqa: F401 (defined before any submodule import)
from .io.atomic import atomic_directory
from .features.input_layout import as_mel_list, check_weights_fit
from .features.mel import MelConvention
from .model import build_model
from .config import DiffWaveConfig
from .sampler import InferenceOptions, Sampler
from .schedule import Steps, resolve_schedule
from .vocoder_format import (CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION, METADATA_FILE, WEIGHTS_FILE, description,
                             read_checkpoint)

if TYPE_CHECKING:
    from .stream import StreamKernels, StreamSession

Seed = Union[int, Sequence[int], None]
MelInput = Any  # numpy array, tf.Tensor, torch tensor, or a list of them


def _seeds(seed: Seed, count: int) -> list[int]:
    """One seed per utterance: an int applies to every item, a sequence gives each its own."""
    if seed is None:
        return [int(s) for s in np.random.SeedSequence().generate_state(count, np.uint32)]
    if isinstance(seed, (int, np.integer)):
        return [int(seed)] * count
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} utterances")
    return seeds


class Vocoder:
    """DiffWave mel-to-waveform vocoder.

    `model` is the Keras Functional model, called as `model([audio, step, mel])` (unconditional:
    `model([audio, step])`). `metadata` carries provenance, e.g. what a conversion assumed.
    """

    def __init__(self, model: keras.Model, config: DiffWaveConfig, metadata: dict[str, Any] | None = None):
        self.model = model
        self.config = config
        self.metadata = dict(metadata or {})
        self._sampler = Sampler(model, config)
        self._stream_kernels: StreamKernels | None = None

    @classmethod
    def from_config(cls, config: DiffWaveConfig = DiffWaveConfig(), seed: int | None = None) -> "Vocoder":
        """A randomly initialised vocoder (for training from scratch and for tests)."""
        if seed is not None:
            keras.utils.set_random_seed(seed)
        return cls(build_model(config), config)

    @property
    def inference_options(self) -> InferenceOptions:
        """Chunk length, the length above which the mel is upsampled chunk by chunk (bounded
        memory), XLA: how the network is evaluated, never what it computes."""
        return self._sampler.options

    @inference_options.setter
    def inference_options(self, options: InferenceOptions) -> None:
        self._sampler = Sampler(self.model, self.config, options)
        self._stream_kernels = None

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def n_mels(self) -> int:
        return self.config.n_mels

    @property
    def conditional(self) -> bool:
        return not self.config.unconditional

    @property
    def mel_convention(self) -> MelConvention:
        """The mel this vocoder takes: `compute_mel(audio, vocoder.mel_convention)` is its input."""
        return self.config.mel

    def vocode(self, mel: MelInput, steps: Steps = "fast", seed: Seed = None, layout: str = "tf",
               adapter: str | Callable[..., Any] | None = None) -> np.ndarray | list[np.ndarray]:
        """Waveform(s) float32 in [-1, 1] at `sample_rate`, hop_length samples per mel frame.

        mel: one (frames, n_mels) mel -> 1-D audio; a (batch, frames, n_mels) array -> (batch,
        samples); a list of mels of any lengths -> a list of 1-D arrays. `layout` 'torch' takes
        (n_mels, frames) instead, 'auto' decides by the axis equal to n_mels. `steps`: 'fast'
        (6 steps), 'full' (the training schedule) or a list of betas. `seed`: an int (used for every
        utterance) or one per utterance; each utterance's audio depends only on its own seed.
        `adapter`: a registered adapter name or an adapter object converting mels from another
        acoustic model's convention to this vocoder's.
        """
        if not self.conditional:
            raise ValueError("this vocoder is unconditional: it takes no mel; use generate()")
        if adapter is not None:
            mel, layout = self._adapt(mel, adapter, layout), "tf"
        mels, single = as_mel_list(mel, self.n_mels, layout, self.mel_convention.value_range())
        frames = np.array([m.shape[0] for m in mels])
        batch = np.zeros((len(mels), frames.max(), self.n_mels), np.float32)
        for i, m in enumerate(mels):
            batch[i, :len(m)] = m
        lengths = frames * self.hop_length
        audio = self._sampler.sample(resolve_schedule(self.config, steps), lengths, mel=batch,
                                     seeds=_seeds(seed, len(mels)))
        if single:
            return audio[0]
        if isinstance(mel, (list, tuple)):
            return [a[:n] for a, n in zip(audio, lengths)]
        return audio

    def stream(self, mel: MelInput, steps: Steps = "fast", seed: int | None = None, layout: str = "tf",
               adapter: str | Callable[..., Any] | None = None, block_frames: int | None = None
               ) -> Iterator[np.ndarray]:
        """Vocode one mel as a sequence of float32 audio blocks, each yielded as soon as it is final;
        concatenated they equal `vocode(mel, steps, seed)`. The first block comes after a bounded
        amount of work that does not grow with the input's length (see `diffwave_vocoder.stream`).
        `block_frames`: mel frames' worth of samples in the first block (default
        `default_block_frames`); later blocks double, up to `stream.MAX_PASS_BLOCKS` times that.
        """
        if adapter is not None:
            mel, layout = self._adapt(mel, adapter, layout), "tf"
        mels, single = as_mel_list(mel, self.n_mels, layout)
        if not single:
            raise ValueError(f"stream() takes one mel (frames, n_mels), got a batch of {len(mels)}")
        session = self.stream_session(steps, seed, block_frames)
        return session._run(mels[0])

    def stream_session(self, steps: Steps = "fast", seed: int | None = None,
                       block_frames: int | None = None) -> StreamSession:
        """A session for mel frames that arrive in pieces (an acoustic model emitting frames as it
        goes): `push(frames)` returns the audio that became final, `finish()` the rest; together they
        equal `vocode(mel, steps, seed)` for all the frames pushed. `session.lookahead_frames` says how
        many frames past a sample must have arrived before it is returned."""
        from .stream import StreamKernels, StreamSession

        if not self.conditional:
            raise ValueError("this vocoder is unconditional: it takes no mel; use generate()")
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"a stream takes one int seed, got {seed!r}")
        if self._stream_kernels is None:
            self._stream_kernels = StreamKernels(self._sampler)
        return StreamSession(self._stream_kernels, resolve_schedule(self.config, steps), _seeds(seed, 1)[0],
                             self.default_block_frames if block_frames is None else block_frames)

    @property
    def default_block_frames(self) -> int:
        """Frames per streaming pass: four chunks of the chunked network (two in flight, twice)."""
        return math.ceil(4 * self._sampler.network.chunk_length / self.hop_length)

    def generate(self, num_samples: int | None = None, batch_size: int = 1, steps: Steps = "fast",
                 seed: Seed = None) -> np.ndarray:
        """Unconditional samples, shape (batch_size, num_samples) (default length: config.audio_len)."""
        if self.conditional:
            raise ValueError("this vocoder is conditional: it needs a mel; use vocode()")
        num_samples = self.config.audio_len if num_samples is None else int(num_samples)
        if num_samples <= 0 or batch_size <= 0:
            raise ValueError(f"num_samples and batch_size must be positive, got {num_samples}, {batch_size}")
        return self._sampler.sample(resolve_schedule(self.config, steps), [num_samples] * batch_size,
                                    seeds=_seeds(seed, batch_size))

    def _adapt(self, mel: MelInput, adapter: str | Callable[..., Any], layout: str) -> Any:
        if isinstance(adapter, str):
            from .registry import get_adapter

            adapter = get_adapter(adapter, target=self.mel_convention)
        elif getattr(adapter, "target", self.mel_convention) != self.mel_convention:
            raise ValueError(f"adapter {adapter!r} converts to another mel convention than this vocoder's; "
                             "build it with target=vocoder.mel_convention or pass its registered name")
        return adapter(mel, layout=layout)

    def info(self) -> dict[str, Any]:
        """Sizes, parameter count, mel convention and schedules, for people and the `info` command."""
        return description(self.config, self.metadata, int(self.model.count_params()))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint directory atomically (a crash never leaves a half-written one). An
        existing directory is replaced only when it holds nothing but a checkpoint's files."""
        metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                    "package_version": __version__, **self.metadata}
        with atomic_directory(path, owned=(CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE)) as tmp:
            (tmp / CONFIG_FILE).write_text(self.config.to_json() + "\n")
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
            self.model.save_weights(tmp / WEIGHTS_FILE)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocoder":
        """Read a checkpoint directory written by `save` (or by conversion or training export)."""
        config, metadata = read_checkpoint(path)
        model = build_model(config)
        weights = Path(path) / WEIGHTS_FILE
        check_weights_fit([tuple(w.shape) for w in model.weights], weights)
        try:
            model.load_weights(weights)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load weights from {weights}: {error}") from None
        return cls(model, config, metadata)
