"""Training data: a directory of wavs (or an LJSpeech folder) -> deterministic tf.data crops.

Every training example has a global index k (k = 0, 1, 2, ... over the whole run). The clip it
comes from, where it is cropped, its diffusion step and its noise are all functions of (seed, k)
alone: clip = a per-epoch permutation keyed by (seed, k // clips), crop and noise keyed by
(seed, k). Nothing depends on how many examples were drawn before, so a resumed run, or a global
batch split over replicas, sees exactly the examples an uninterrupted single-device run sees.

Mels come from the `diffwave-vocoder preprocess` cache (`X.wav.spec.npy`, the reference's
(n_mels, frames) layout) when present, else they are computed on the fly from the crop's own
window of audio (the same frames the whole-file mel would have). Only the crop is read from disk.

`preprocess DIR` also writes `DIR/mel_convention.json`, the record of the convention its caches
are in. A wav's caches are governed by the nearest record in its folder or a folder above it:
they are used only when that record is complete and names the run's convention. Without any
record (caches of the reference's preprocess.py or of older versions) a cache is used when its
shape fits, as the reference does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import soundfile

from ..adapters.conventions import CONVENTIONS
from ..config import DiffWaveConfig
from ..features.mel import MelConvention, compute_mel
from ..io.atomic import atomic_file
from ..io.audio import find_wavs, load_audio
from ..prior import prior_std, uses_prior

log = logging.getLogger(__name__)

SPEC_SUFFIX = ".spec.npy"
# Written by `preprocess DIR` at DIR: which convention the caches below DIR are in.
MEL_RECORD_NAME = "mel_convention.json"
# Domains that keep the independent random streams of one example apart.
_EPOCH_ORDER, _CROP, _STEP, _NOISE, _EVAL = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Clip:
    """One usable audio file: its length and, when valid, its cached mel."""

    path: Path
    num_samples: int
    mel_cache: Path | None = None


def _cached_mel_path(path: Path, convention: MelConvention, frames: int, n_mels: int) -> Path | None:
    """`X.wav.spec.npy` if it exists and has the (n_mels, frames) shape this clip needs."""
    cache = Path(f"{path}{SPEC_SUFFIX}")
    if not cache.is_file():
        return None
    try:
        shape = np.load(cache, mmap_mode="r").shape
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable mel cache %s (%s); computing mels on the fly", cache, error)
        return None
    if shape != (n_mels, frames):
        log.warning("ignoring mel cache %s: shape %s, expected (%d, %d) for this clip and mel convention; "
                    "computing mels on the fly (rerun `diffwave-vocoder preprocess`)", cache, shape, n_mels, frames)
        return None
    return cache


def _write_mel_record(directory: Path, convention: MelConvention, complete: bool) -> None:
    with atomic_file(directory / MEL_RECORD_NAME) as tmp:
        tmp.write_text(json.dumps({"mel_convention": convention.to_dict(), "complete": complete}, indent=1) + "\n")


def write_mel_caches(root: str | os.PathLike, convention: MelConvention,
                     resample: bool = False) -> tuple[int, list[tuple[Path, str]]]:
    """Cache the mel of every wav below `root` as `X.wav.spec.npy` and record the convention.

    Returns (caches written, [(wav, why it failed)]). The order keeps a crash safe: first the
    record at root says its caches are being rewritten (so no record above still vouches for
    them), then the records below root, which these caches supersede, are removed, then the
    caches are written (a failed wav loses its old cache) and last the record says they are done.
    """
    root = Path(root)
    wavs = sorted(root.rglob("*.wav"))
    if not wavs:
        raise ValueError(f"no .wav files under {root}")
    _write_mel_record(root, convention, complete=False)
    for record in root.rglob(MEL_RECORD_NAME):
        if record.parent != root:
            record.unlink()
    failed = []
    for wav in wavs:
        cache = Path(f"{wav}{SPEC_SUFFIX}")
        try:
            audio, rate = load_audio(wav, convention.sample_rate, resample=resample)
            mel = compute_mel(audio, convention, sample_rate=rate)
        except ValueError as error:
            failed.append((wav, str(error)))
            cache.unlink(missing_ok=True)
            continue
        with atomic_file(cache, suffix=".npy") as tmp:
            np.save(tmp, mel.T)  # the reference preprocess.py's name and (n_mels, frames) layout
    _write_mel_record(root, convention, complete=True)
    return len(wavs) - len(failed), failed


def _nearest_mel_record(folder: Path, found: dict[Path, Path | None]) -> Path | None:
    """The mel record in `folder` or the nearest folder above it; `found` remembers folders seen."""
    walked = []
    record = None
    for directory in (folder, *folder.parents):
        if directory in found:
            record = found[directory]
            break
        walked.append(directory)
        if (directory / MEL_RECORD_NAME).is_file():
            record = directory / MEL_RECORD_NAME
            break
    for directory in walked:
        found[directory] = record
    return record


def _show(value) -> str:
    """A convention field for a message: long statistics vectors shortened to their length."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return f"<{len(value)} values>" if isinstance(value, list) and len(value) > 8 else repr(value)


def _mel_record_problem(record: Path, convention: MelConvention) -> str | None:
    """Why the caches under a mel record must not be used for `convention` (None: they may)."""
    try:
        data = json.loads(record.read_text())
        recorded = MelConvention.from_dict(data["mel_convention"])
        complete = data["complete"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        return f"their record {record} is unreadable ({error})"
    if complete is not True:
        return f"the `preprocess` that wrote them did not finish (record {record})"
    if recorded == convention:
        return None
    cached, wanted = recorded.to_dict(), convention.to_dict()
    fields = ", ".join(f"{name}={_show(cached[name])} (cache) vs {_show(wanted[name])} (run)"
                       for name in wanted if cached[name] != wanted[name])
    return f"they are in another mel convention than this run's (record {record}: {fields})"


def _preprocess_hint(directory: Path, convention: MelConvention) -> str:
    name = next((name for name, make in CONVENTIONS.items() if make() == convention), None)
    option = f"--mel-convention {name}" if name else "--mel-convention FILE.json (this run's MelConvention fields)"
    return f"re-run `diffwave-vocoder preprocess {directory} {option}` to cache this run's mels"


def crop_lengths(config: DiffWaveConfig, crop_frames: int, crop_samples: int | None) -> tuple[int, int]:
    """(samples per example, shortest usable clip).

    Conditional: crop_frames * hop samples; a clip needs crop_frames mel frames (the reference
    drops shorter ones), i.e. (crop_frames - 1) * hop samples in lmnt's convention, as many as
    `MelConvention.samples_for` says in others. Unconditional: crop_samples
    (default: the config's audio_len, as the reference) and clips at least that long.
    """
    if crop_frames <= 0 or (crop_samples is not None and crop_samples <= 0):
        raise ValueError(f"crop sizes must be positive, got crop_frames={crop_frames}, crop_samples={crop_samples}")
    if not config.unconditional:
        return crop_frames * config.hop_length, config.mel.samples_for(crop_frames)
    samples = int(config.audio_len if crop_samples is None else crop_samples)
    return samples, samples


class ClipSet:
    """The usable clips of a data set and how to cut training examples out of them.

    conditional: examples are `crop_frames` mel frames and the matching crop_frames * hop samples
    (the reference's 62 frames / 15,872 samples); unconditional: `crop_samples` samples of audio.
    Clips shorter than one example are left out (counted in the log), unreadable files are reported
    by name and left out, a sample rate other than the model's is an error.
    """

    def __init__(self, clips: Sequence[Clip], config: DiffWaveConfig, crop_frames: int = 62,
                 crop_samples: int | None = None, seed: int = 0, name: str = "data"):
        if not clips:
            raise ValueError(f"{name}: no usable clips")
        self.clips = tuple(clips)
        self.config = config
        self.convention = config.mel
        self.conditional = not config.unconditional
        self.crop_frames = int(crop_frames)
        self.crop_samples, self.min_samples = crop_lengths(config, crop_frames, crop_samples)
        self.seed = int(seed)
        self.name = name
        self._unreadable: set[Path] = set()
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def scan(cls, data: str | os.PathLike | Sequence[str | os.PathLike], config: DiffWaveConfig,
             crop_frames: int = 62, crop_samples: int | None = None, seed: int = 0,
             use_mel_cache: bool = True, name: str = "data") -> "ClipSet":
        """Index a data set (reads headers and cache shapes only, no audio)."""
        roots = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        paths = [wav for root in roots for wav in find_wavs(root)]
        convention = config.mel
        conditional = not config.unconditional
        crop, min_samples = crop_lengths(config, crop_frames, crop_samples)
        clips, short, unreadable, wrong_rate = [], 0, [], []
        records: dict[Path, Path | None] = {}
        problems: dict[Path, str | None] = {}  # per record: why its caches are ignored
        ignored: dict[Path, int] = {}  # per ignored record: clips it governs
        for path in paths:
            try:
                info = soundfile.info(str(path))
            except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
                unreadable.append(path)
                log.warning("skipping unreadable audio file %s: %s", path, error)
                continue
            if info.samplerate != config.sample_rate:
                wrong_rate.append((path, info.samplerate))
                continue
            if info.frames < min_samples:
                short += 1
                continue
            cache = None
            if use_mel_cache and conditional:
                record = _nearest_mel_record(path.absolute().parent, records)
                if record is not None and record not in problems:
                    problems[record] = _mel_record_problem(record, convention)
                if record is not None and problems[record] is not None:
                    ignored[record] = ignored.get(record, 0) + 1
                else:
                    frames = convention.frames_for(info.frames)
                    cache = _cached_mel_path(path, convention, frames, config.n_mels)
            clips.append(Clip(path, int(info.frames), cache))
        for record, count in ignored.items():
            log.warning("%s: ignoring the mel caches of %d clip(s) under %s: %s; computing mels from audio "
                        "instead (%s)", name, count, record.parent, problems[record],
                        _preprocess_hint(record.parent, convention))
        if wrong_rate:
            path, rate = wrong_rate[0]
            raise ValueError(
                f"{len(wrong_rate)} of {len(paths)} files in {name} are not at the model's {config.sample_rate} Hz "
                f"(first: {path} at {rate} Hz); resample the data set (e.g. `sox in.wav -r {config.sample_rate} "
                f"out.wav`) or train a model for {rate} Hz (sample_rate in --config)")
        unit = f"{crop_frames} mel frames" if conditional else f"{crop} samples"
        if short:
            log.info("%s: skipped %d of %d clips shorter than one crop (%s)", name, short, len(paths), unit)
        if unreadable:
            log.warning("%s: skipped %d unreadable file(s)", name, len(unreadable))
        if not clips:
            raise ValueError(f"{name}: none of the {len(paths)} files is usable: {short} shorter than one crop "
                             f"({unit}), {len(unreadable)} unreadable")
        cached = sum(c.mel_cache is not None for c in clips)
        if conditional:
            log.info("%s: %d clips, mels: %d cached, %d computed on the fly", name, len(clips), cached,
                     len(clips) - cached)
        return cls(clips, config, crop_frames, crop_samples, seed, name)

    def __len__(self) -> int:
        return len(self.clips)

    def fingerprint(self) -> str:
        """Identifies the clip list (names and lengths), to notice a data set changed under a run."""
        digest = hashlib.sha256()
        for clip in self.clips:
            digest.update(f"{clip.path.name}:{clip.num_samples};".encode())
        return digest.hexdigest()[:16]

    def split(self, fraction: float) -> tuple["ClipSet", "ClipSet | None"]:
        """(train, validation): a clip goes to validation by a hash of its file name, so the split
        is stable when files are added or the directory moves."""
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
        held = [int(hashlib.sha256(c.path.name.encode()).hexdigest(), 16) % 1_000_000 < fraction * 1_000_000
                for c in self.clips]
        train = [c for c, h in zip(self.clips, held) if not h]
        val = [c for c, h in zip(self.clips, held) if h]
        if not train:
            raise ValueError(f"validation fraction {fraction} leaves no training clips out of {len(self.clips)}")
        return (self._with(train, self.name),
                self._with(val, f"{self.name} (validation)") if val else None)

    def _with(self, clips: Sequence[Clip], name: str) -> "ClipSet":
        return ClipSet(clips, self.config, self.crop_frames, self.crop_samples, self.seed, name)

    def with_config(self, config: DiffWaveConfig) -> "ClipSet":
        """The same clips and crops for a config that differs in what an example carries (its prior)."""
        return ClipSet(self.clips, config, self.crop_frames, self.crop_samples, self.seed, self.name)

    def mels(self) -> Iterator[np.ndarray]:
        """Every clip's whole mel (frames, n_mels), in clip order."""
        for index in range(len(self.clips)):
            yield self.load(index)[1]

    # -- examples -------------------------------------------------------------------------------

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The clip order of one epoch (cached: consecutive examples share it)."""
        with self._lock:
            order = self._orders.get(epoch)
            if order is None:
                order = np.random.default_rng([self.seed, _EPOCH_ORDER, epoch]).permutation(len(self.clips))
                self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
                self._orders[epoch] = order
            return order

    def clip_index(self, k: int) -> int:
        """Which clip training example k comes from: each epoch visits every clip once."""
        n = len(self.clips)
        return int(self._epoch_order(k // n)[k % n])

    def _crop_start(self, clip: Clip, key: Sequence[int]) -> int:
        """Uniform crop position: a start frame (conditional) or sample (unconditional)."""
        rng = np.random.default_rng([self.seed, *key])
        if self.conditional:
            frames = self.convention.frames_for(clip.num_samples)
            return int(rng.integers(0, max(frames - self.crop_frames, 0) + 1))
        return int(rng.integers(0, clip.num_samples - self.crop_samples + 1))

    def example(self, k: int, evaluation: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(audio (crop_samples,), mel (crop_frames, n_mels) or None) of example k.

        Training: k is the global example index. Evaluation: k is the clip index and the crop is a
        fixed one, so validation loss is comparable between evaluations. An unreadable clip is
        reported once and replaced by the next readable clip of the same order.
        """
        n = len(self.clips)
        if evaluation:
            order, position, key = None, k % n, (_EVAL, k)
        else:
            order, position, key = self._epoch_order(k // n), k % n, (_CROP, k)
        for attempt in range(n):
            index = (position + attempt) % n
            clip = self.clips[index if order is None else int(order[index])]
            if clip.path in self._unreadable:
                continue
            try:
                return self._crop(clip, self._crop_start(clip, key))
            except (soundfile.LibsndfileError, RuntimeError, OSError, ValueError) as error:
                with self._lock:
                    self._unreadable.add(clip.path)
                log.warning("skipping unreadable clip %s from now on: %s", clip.path, error)
        raise ValueError(f"{self.name}: no clip is readable any more")

    def _crop(self, clip: Clip, start: int) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.conditional:
            return _read(clip.path, start, start + self.crop_samples), None
        hop, frames = self.config.hop_length, self.crop_frames
        audio = np.zeros(self.crop_samples, np.float32)
        piece = _read(clip.path, start * hop, min((start + frames) * hop, clip.num_samples))
        audio[:len(piece)] = piece  # the reference zero-pads the last frame's partial hop
        if clip.mel_cache is not None:
            mel = np.array(np.load(clip.mel_cache, mmap_mode="r")[:, start:start + frames].T, np.float32)
            if not np.all(np.isfinite(mel)):
                raise ValueError(f"mel cache {clip.mel_cache} holds NaN or Inf")
        else:
            mel = mel_window(clip.path, clip.num_samples, start, frames, self.convention)
        return audio, mel

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A whole clip: audio and (conditional) its mel (frames, n_mels), for vocoding samples."""
        clip = self.clips[index]
        audio = _read(clip.path, 0, clip.num_samples)
        if not self.conditional:
            return audio, None
        if clip.mel_cache is not None:
            return audio, np.load(clip.mel_cache).T.astype(np.float32)
        return audio, compute_mel(audio, self.convention)


def _read(path: Path, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of the first channel, float32 clipped to [-1, 1] (as load_audio)."""
    data, _ = soundfile.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    if len(data) != stop - start:
        raise ValueError(f"{path} is truncated: read {len(data)} of {stop - start} samples at {start}")
    return np.clip(data[:, 0], -1.0, 1.0)


# np.pad modes whose padded samples are copies of the signal's (or zeros): a crop's mel needs only
# the samples its frames see. Each maps positions outside [0, length) to the one they copy, -1 for zero.
def _reflect(i: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return np.zeros_like(i)
    i = np.mod(i, 2 * (length - 1))
    return np.where(i >= length, 2 * (length - 1) - i, i)


def _symmetric(i: np.ndarray, length: int) -> np.ndarray:
    i = np.mod(i, 2 * length)
    return np.where(i >= length, 2 * length - 1 - i, i)


_PAD_SOURCES = {
    "reflect": _reflect,
    "symmetric": _symmetric,
    "edge": lambda i, length: np.clip(i, 0, length - 1),
    "wrap": lambda i, length: np.mod(i, length),
    "constant": lambda i, length: np.where((i >= 0) & (i < length), i, -1),
}


def _padded_source(positions: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Which sample of a `length`-sample signal each position of it padded with np.pad's `mode`
    holds (positions relative to the unpadded start; -1: a zero)."""
    if positions.min() >= 0 and positions.max() < length:
        return positions
    return _PAD_SOURCES[mode](positions, length)


def mel_window(path: Path, num_samples: int, start: int, frames: int, convention: MelConvention) -> np.ndarray:
    """Mel frames [start, start + frames) of a file, reading only the audio they see.

    Frame j's window is n_fft samples from j * hop + `convention.first_frame_start()` of the file
    padded as the convention pads it: first `pad` samples per side with `pad_mode`, then, when
    `center`, n_fft // 2 more with `pad_mode` again (librosa's centring). Positions in that padding
    are mapped back to the samples they copy the same way, so the result equals the whole-file
    mel's rows (up to float rounding) for every padding convention; for pad modes that compute new
    values (mean, linear_ramp, ...) the whole file is read instead.
    """
    hop, n_fft = convention.hop_length, convention.n_fft
    if convention.pad_mode not in _PAD_SOURCES:
        return compute_mel(_read(path, 0, num_samples), convention)[start:start + frames]
    first = start * hop + convention.first_frame_start()
    positions = np.arange(first, first + (frames - 1) * hop + n_fft)
    padded_length = num_samples + 2 * convention.pad
    # Outer (centre) padding acts on the pad-padded signal, whose sample 0 is the file's -pad.
    in_padded = _padded_source(positions + convention.pad, padded_length, convention.pad_mode)
    zero = in_padded < 0
    in_file = _padded_source(in_padded - convention.pad, num_samples, convention.pad_mode)
    zero |= in_file < 0
    in_file = np.where(zero, 0, in_file)
    lo, hi = int(in_file.min()), int(in_file.max()) + 1
    window = np.where(zero, np.float32(0.0), _read(path, lo, hi)[in_file - lo])
    return compute_mel(window, convention.replace(center=False, pad=0))[:frames]


def example_indices(first_example: int, global_batch: int, replica_batch: int, replica_offset: int,
                    local_replicas: int) -> "tf.data.Dataset":  # noqa: F821 (tf imported lazily)
    """Global example indices in the order one input pipeline must deliver them.

    A pipeline feeding `local_replicas` replicas (global replica ids replica_offset, ...) hands out
    per-replica batches round robin: step t, replica r gets examples
    first_example + t * global_batch + r * replica_batch + [0, replica_batch).
    """
    import tensorflow as tf

    per_step = local_replicas * replica_batch

    def to_example(n):
        step, within = n // per_step, n % per_step
        replica = replica_offset + within // replica_batch
        return first_example + step * global_batch + replica * replica_batch + within % replica_batch

    return tf.data.Dataset.range(2 ** 62).map(to_example)


def make_dataset(clips: ClipSet, indices: "tf.data.Dataset", batch_size: int, max_steps: int,  # noqa: F821
                 evaluation: bool = False, drop_remainder: bool = True,
                 step_logits: np.ndarray | None = None) -> "tf.data.Dataset":  # noqa: F821
    """Batches of {audio, mel (conditional), step, noise, prior_std (per frame, energy prior only)}
    for the example indices given.

    The diffusion step (uniform integer in [0, max_steps), the reference's randint, or drawn with
    the log-probabilities `step_logits` (max_steps,) when given) and the Gaussian noise of an example
    are drawn from stateless Philox streams keyed by (seed, k).
    """
    import tensorflow as tf

    conditional = clips.conditional
    length, frames, n_mels = clips.crop_samples, clips.crop_frames, clips.config.n_mels
    domain = _EVAL if evaluation else 0
    with_prior = uses_prior(clips.config)

    def load(k):
        audio, mel = clips.example(int(k), evaluation)
        if with_prior:
            return audio, mel, prior_std(mel, clips.config)
        return (audio, mel) if conditional else audio

    def draw_step(key):
        if step_logits is None:
            return tf.random.stateless_uniform([], key, minval=0, maxval=max_steps, dtype=tf.int32)
        return tf.random.stateless_categorical(tf.constant(step_logits, tf.float32)[None], 1, key, dtype=tf.int32)[0, 0]

    def to_example(k):
        types = [tf.float32] * (3 if with_prior else 2) if conditional else tf.float32
        out = tf.numpy_function(load, [k], types, stateful=False)
        seed = tf.stack([tf.constant(clips.seed, tf.int64), tf.cast(k, tf.int64)])
        example = {
            "audio": tf.ensure_shape(out[0] if conditional else out, [length]),
            "step": draw_step(tf.random.experimental.stateless_fold_in(seed, _STEP + 16 * domain)),
            "noise": tf.random.stateless_normal(
                [length], tf.random.experimental.stateless_fold_in(seed, _NOISE + 16 * domain)),
        }
        if conditional:
            example["mel"] = tf.ensure_shape(out[1], [frames, n_mels])
        if with_prior:
            example["prior_std"] = tf.ensure_shape(out[2], [frames])
        return example

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return (indices.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=drop_remainder)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def evaluation_dataset(clips: ClipSet, batch_size: int, max_steps: int) -> "tf.data.Dataset":  # noqa: F821
    """One fixed crop, step and noise per validation clip, in clip order."""
    import tensorflow as tf

    return make_dataset(clips, tf.data.Dataset.range(len(clips)), batch_size, max_steps,
                        evaluation=True, drop_remainder=False)


__all__ = ["Clip", "ClipSet", "MEL_RECORD_NAME", "write_mel_caches", "mel_window", "example_indices", "make_dataset",
           "evaluation_dataset"]
