"""Training DiffWave: the reference learner's objective with resumable, distributable bookkeeping.

The objective is lmnt-com/diffwave's learner.py: a step t uniform in [0, T), noisy audio
sqrt(a_t) x0 + sqrt(1 - a_t) eps with a_t = cumprod(1 - beta)[t] in float32, and the L1 distance
between eps and the predicted noise (L2 optional), Adam 2e-4 with torch's epsilon 1e-8.

What the reference (and the earlier TF port) lacked is around it: every random choice is a
function of the global example index (data.py), checkpoints are atomic and carry the data
position (checkpoints.py), so a run killed at any moment resumes from its last checkpoint
and ends with the weights an uninterrupted run would have; one progress line covers the whole run;
any checkpoint exports to the inference format `Vocoder.save` writes (a run may keep a moving
average of its weights, weight_average.py, and export that). One trainer at a time works on
a run directory (run_lock.py), and a save that fails for lack of space or an I/O error stops the
run with one message saying what was needed where, the previous checkpoint intact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import keras
import numpy as np
import tensorflow as tf

from ..config import DiffWaveConfig, stored_config, strict_from_dict
from ..features.mel import compute_mel
from ..io.atomic import atomic_file, remove_leftovers
from ..io.progress import progress_line
from ..model import build_model, native_dilated_conv_trains
from ..prior import energy_range, sample_std, uses_prior
from ..schedule import drawable_levels, noise_levels
from ..vocoder import CONFIG_FILE, Vocoder
from .checkpoints import (CHECKPOINTS_DIR, SETTINGS_FILE, VARIABLES_PREFIX, CheckpointStore, dtype_policy,
                          load_for_export, read_state, training_metadata)
from .data import ClipSet, evaluation_dataset, example_indices, make_dataset
from .distribute import is_chief, make_strategy
from .run_lock import RunLock
from .tensorboard import SummaryLog
from .weight_average import CHECKPOINT_KEY as AVERAGE_KEY, WeightAverage

log = logging.getLogger(__name__)

EXPORT_DIR = "vocoder"
LOGS_DIR = "logs"
ADAM_EPSILON = 1e-8  # torch.optim.Adam's default (Keras' is 1e-7)
MAX_NONFINITE_STEPS = 10
MIXED_PRECISION = {None: "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: x86 AVX-512 BF16, AMX, AVX-NE-CONVERT; Arm BF16.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert", "bf16")
# Fields a fine-tuning run may change from its init checkpoint's config (everything else is the
# network's sizes, its mel convention or the diffusion it was trained for).
# The prior may change too: the weights fit either, and fine-tuning adapts them to the run's noise
# (PriorGrad from a standard-prior model such as a converted lmnt checkpoint).
_FINE_TUNING_FREE_FIELDS = ("inference_noise_schedule", "audio_len", "prior", "prior_energy_range",
                            "prior_std_min")
# Settings that change which examples, noise or updates a step sees, or which weights the run exports:
# changing them on resume is allowed, but the run is then no longer identical to an uninterrupted one.
_TRAJECTORY_FIELDS = ("batch_size", "learning_rate", "loss", "max_grad_norm", "crop_frames", "crop_samples",
                      "seed", "mixed_precision", "val_fraction", "low_noise_emphasis", "fast_schedule_share",
                      "ema_decay")


def cpu_has_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU has bfloat16 instructions, from Linux's cpuinfo flags; None where they cannot be
    read. Without them TensorFlow emulates bfloat16, which trains slower than float32."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, Arm
            flags.update(value.split())
    return bool(flags.intersection(BFLOAT16_CPU_FLAGS)) if flags else None


@dataclass(frozen=True)
class TrainingSettings:
    """How to train; stored as training.json in the run directory. Defaults follow the reference."""

    max_steps: int = 1_000_000
    batch_size: int = 16  # global: split across replicas
    learning_rate: float = 2e-4
    loss: str = "l1"  # the reference's; "l2" is the paper's
    max_grad_norm: float | None = None  # None: no clipping (the reference's default)
    crop_frames: int = 62  # conditional: 62 frames = 15,872 samples at hop 256
    crop_samples: int | None = None  # unconditional: None = the config's audio_len
    seed: int = 0  # initial weights, data order, crops, steps and noise
    checkpoint_every: int = 1000
    keep_last: int = 3
    keep_every: int = 100_000  # also keep every checkpoint whose step is a multiple; 0: none
    log_every: int = 50
    val_every: int | None = None  # None: once per epoch
    val_fraction: float = 0.02  # held-out share when no separate validation set is given
    val_vocode_clips: int = 2
    val_vocode_seconds: float = 4.0
    mixed_precision: str | None = None  # "float16" (with loss scaling) or "bfloat16"
    # Diffusion steps are drawn with probability proportional to (noise std at the step) ** -emphasis:
    # 0 is the reference's uniform draw; larger values train the low-noise steps (the waveform's fine
    # structure, the last steps of sampling) more often. Validation keeps the uniform draw.
    low_noise_emphasis: float = 0.0
    # Share of the examples drawn at the inference (fast) schedule's noise levels instead, each equally
    # often, with the network's step input at the fractional step fast sampling gives it: trains the
    # network where the default sampler runs it. 0: the draw above alone. Validation is unchanged.
    fast_schedule_share: float = 0.0
    # > 0: validate and export an exponential moving average of the weights, updated after each step
    # with this decay (weight_average.py; 0.999 averages over about the last thousand steps).
    # 0: the weights themselves, as the reference.
    ema_decay: float = 0.0
    # Fine-tuning: a vocoder checkpoint, training checkpoint or run whose weights a new run starts
    # from (with a fresh optimizer); ignored once the run has checkpoints of its own.
    init_from: str | None = None

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "crop_frames", "checkpoint_every", "keep_last", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("crop_samples", "val_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        if not isinstance(self.keep_every, int) or self.keep_every < 0:
            raise ValueError(f"keep_every must be an integer >= 0, got {self.keep_every!r}")
        if not (isinstance(self.low_noise_emphasis, (int, float)) and 0 <= self.low_noise_emphasis <= 4):
            raise ValueError(f"low_noise_emphasis must be a number in [0, 4], got {self.low_noise_emphasis!r}")
        if not (isinstance(self.fast_schedule_share, (int, float)) and 0 <= self.fast_schedule_share <= 1):
            raise ValueError(f"fast_schedule_share must be a number in [0, 1], got {self.fast_schedule_share!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {self.loss!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or null, got {self.max_grad_norm!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be null, 'float16' or 'bfloat16', got {self.mixed_precision!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ValueError(f"init_from must be a checkpoint path or null, got {self.init_from!r}")
        if self.val_vocode_clips < 0 or not self.val_vocode_seconds > 0:
            raise ValueError("val_vocode_clips must be >= 0 and val_vocode_seconds > 0, got "
                             f"{self.val_vocode_clips!r} and {self.val_vocode_seconds!r}")

    def replace(self, **changes: Any) -> "TrainingSettings":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingSettings":
        return strict_from_dict(cls, data, "training setting")


def trajectory_changes(then: TrainingSettings, now: TrainingSettings) -> dict[str, list[Any]]:
    """The settings that change which examples, noise or updates a step sees, {field: [then, now]}."""
    return {field: [getattr(then, field), getattr(now, field)] for field in _TRAJECTORY_FIELDS
            if getattr(then, field) != getattr(now, field)}


def init_mismatch(init: DiffWaveConfig, config: DiffWaveConfig) -> str | None:
    """What keeps a run of `config` from starting from a checkpoint of `init` (None: nothing), as
    'sizes: residual_channels 64 (checkpoint) vs 16 (run); mel convention: fmax None (checkpoint) vs ...'."""
    def fields(c: DiffWaveConfig) -> dict[tuple[str, str], Any]:
        data = c.to_dict()
        mel = data.pop("mel")
        return {**{("model", k): v for k, v in data.items() if k not in _FINE_TUNING_FREE_FIELDS},
                **{("mel", k): v for k, v in mel.items()}}

    theirs, ours = fields(init), fields(config)
    differ = [k for k in theirs if theirs[k] != ours[k]]
    if not differ:
        return None

    def show(key: tuple[str, str], value: Any) -> str:
        if key[1] == "noise_schedule":
            return f"{len(value)} betas {value[0]:g}..{value[-1]:g}"
        return repr(value)

    groups = {"sizes": [k for k in differ if k[0] == "model" and k[1] != "noise_schedule"],
              "mel convention": [k for k in differ if k[0] == "mel"],
              "training noise schedule": [k for k in differ if k[1] == "noise_schedule"]}
    return "; ".join(f"{group}: " + ", ".join(f"{k[1]} {show(k, theirs[k])} (checkpoint) vs {show(k, ours[k])} (run)"
                                                 for k in keys)
                     for group, keys in groups.items() if keys)


def load_config_file(path: str | os.PathLike) -> tuple[DiffWaveConfig | None, dict[str, Any]]:
    """A --config JSON: a model config (the fields of DiffWaveConfig, as in a checkpoint's
    config.json), or {"model": {...}, "training": {...}} with either part optional.
    Returns the model config (None if absent) and the training settings it overrides."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read config {path}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must hold a JSON object, got {type(data).__name__}")
    if set(data) <= {"model", "training"}:
        model, training = data.get("model"), data.get("training", {})
    else:
        model, training = data, {}
    config = None if model is None else stored_config(model)
    TrainingSettings.from_dict(training)  # validates names and values now
    return config, dict(training)


def stored_run(model_dir: str | os.PathLike) -> tuple[DiffWaveConfig | None, TrainingSettings | None]:
    """The model config and settings a run directory was started with (None where absent)."""
    root = Path(model_dir)
    config = settings = None
    if (root / CONFIG_FILE).is_file():
        config = stored_config(json.loads((root / CONFIG_FILE).read_text()))
    if (root / SETTINGS_FILE).is_file():
        settings = TrainingSettings.from_dict(json.loads((root / SETTINGS_FILE).read_text()))
    return config, settings


def _with_measured_prior(config: DiffWaveConfig, measured: DiffWaveConfig) -> DiffWaveConfig:
    """`config` with the energy range of a run or checkpoint that measured it, where `config` leaves
    it to be measured (a recipe's --config on resume or fine-tuning)."""
    if config.prior_energy_range is None and config.prior == measured.prior:
        return config.replace(prior_energy_range=measured.prior_energy_range)
    return config


def step_probabilities(config: DiffWaveConfig, low_noise_emphasis: float,
                       fast_schedule_share: float = 0.0) -> np.ndarray:
    """How often training draws each entry of `schedule.drawable_levels`: the training steps in
    proportion to their noise std ** -emphasis (`TrainingSettings.low_noise_emphasis`; uniform at 0),
    scaled to 1 - share, then the inference schedule's levels at share / their number each. Without a
    share, the training steps alone."""
    noise_std = np.sqrt(1.0 - noise_levels(config).astype(np.float64))
    weights = noise_std ** -float(low_noise_emphasis)
    steps = weights / weights.sum()
    if not fast_schedule_share:
        return steps
    fast = len(config.inference_noise_schedule)
    return np.concatenate([(1.0 - fast_schedule_share) * steps, np.full(fast, fast_schedule_share / fast)])


def diffusion_loss(model: keras.Model, batch: dict[str, tf.Tensor], levels: tf.Tensor, loss: str,
                   hop_length: int, training: bool, network_steps: tf.Tensor | None = None) -> tf.Tensor:
    """Per-example loss (B,): mean |eps - model(noisy, t, mel)| (or squared) over the samples.

    `batch["step"]` indexes `levels` and `network_steps` (the network's step input; default the index
    itself): `schedule.drawable_levels` gives both.

    With the energy prior (a `prior_std` per frame in the batch, holding for hop_length samples) the
    noise is s * eps and the error is measured in the prior's units, (noise - predicted) / s
    (PriorGrad's weighted loss)."""
    audio, noise, step = batch["audio"], batch["noise"], batch["step"]
    std = None
    if "prior_std" in batch:
        std = sample_std(batch["prior_std"], hop_length, tf)
        noise = noise * std
    level = tf.gather(levels, step)[:, None]
    noisy = tf.sqrt(level) * audio + tf.sqrt(1.0 - level) * noise
    network_step = tf.cast(step, tf.float32) if network_steps is None else tf.gather(network_steps, step)
    inputs = [noisy, network_step] + ([batch["mel"]] if "mel" in batch else [])
    error = noise - tf.cast(model(inputs, training=training), tf.float32)
    if std is not None:
        error = error / std
    return tf.reduce_mean(tf.abs(error) if loss == "l1" else tf.square(error), axis=1)


class Progress:
    """One status line for the whole run: global step of max steps, loss, steps/s, ETA.

    On a terminal it is redrawn in place; otherwise a line is printed every `interval` seconds
    (`progress.progress_line`, as batch vocoding's).
    """

    def __init__(self, max_steps: int, first_step: int, stream: TextIO | None = None, interval: float = 30.0,
                 enabled: bool = True):
        self.max_steps = max_steps
        self.start_step = first_step
        self.start_time: float | None = None
        # delay > 0: nothing is drawn before the first finished step.
        self.bar = progress_line(max_steps, stream, interval, initial=first_step, delay=1e-9, leave=False,
                                 disable=not enabled, bar_format="step {n}/{total} ({percentage:.1f}%)  {desc}")

    def update(self, step: int, loss: float, force: bool = False) -> None:
        now = time.monotonic()
        if self.start_time is None:  # time from the first finished step: excludes graph building
            self.start_time, self.start_step = now, step
            self.bar.n = self.bar.last_print_n = step
            return
        rate = (step - self.start_step) / max(now - self.start_time, 1e-9)
        eta = (self.max_steps - step) / rate if rate > 0 else float("inf")
        self.bar.set_description_str(f"loss {loss:.4f}  {rate:.2f} steps/s  ETA {_duration(eta)}", refresh=False)
        if force:
            self.bar.n = step
            self.bar.refresh()
        else:
            self.bar.update(step - self.bar.n)

    def clear(self) -> None:
        """Make room for a log message below the status line."""
        self.bar.clear()


def _optional_stoi():
    """pystoi's stoi (the eval extra) if it is installed, else None."""
    try:
        from pystoi import stoi
    except ImportError:
        return None
    return stoi


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


@dataclass(frozen=True)
class TrainingResult:
    step: int
    finished: bool  # False: stopped early by a signal (a checkpoint was saved)
    checkpoint: Path | None
    exported: Path | None
    last_loss: float | None
    validation_loss: float | None


class StorageError(RuntimeError):
    """A save failed (no space left, quota, I/O error); what was saved before is intact."""


def _size(num_bytes: float) -> str:
    power = min(int(math.log10(max(num_bytes, 1.0))) // 3, 3)
    if power == 0:
        return f"{num_bytes:.0f} bytes"
    return f"{num_bytes / 1000 ** power:.1f} {('KB', 'MB', 'GB')[power - 1]}"


def _variable_bytes(variables: Sequence[Any]) -> int:
    return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in variables)


def _storage_error(error: Exception, what: str, directory: Path, needed: int, intact: str) -> StorageError:
    """One message for a failed write: why, how much it needed, how much is free, what is intact."""
    known = [os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES)]
    if isinstance(error, OSError) and error.errno:
        reason = os.strerror(error.errno)
    else:  # TensorFlow's file errors carry the C library's message inside their own
        message = " ".join(str(error).split())
        reason = next((text for text in known if text in message), message)
    try:
        free = f"{_size(shutil.disk_usage(directory).free)} free there"
    except OSError:
        free = "free space unknown"
    return StorageError(f"cannot write {what} in {directory}: {reason}; it needs about {_size(needed)}, {free}. "
                        f"{intact} and no partial file was left: free space and run the same command to resume")


class _StopRequest:
    """SIGINT/SIGTERM -> stop at the next step boundary with a checkpoint; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains one run directory; constructing it on an existing run resumes that run.

    data / val: a directory of wavs or an LJSpeech folder (or several). Without `val`, a held-out
    `settings.val_fraction` of `data` validates. `config` (model) and `settings` default to what the
    run was started with, else to the reference's. `strategy`: 'default', 'mirrored',
    'multi-worker' or a tf.distribute.Strategy.
    """

    def __init__(self, model_dir: str | os.PathLike, data: str | os.PathLike | Sequence[str | os.PathLike],
                 val: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 config: DiffWaveConfig | None = None, settings: TrainingSettings | None = None,
                 strategy: str | tf.distribute.Strategy | None = None, progress_stream: TextIO | None = None):
        self.model_dir = Path(model_dir)
        if self.model_dir.exists() and not self.model_dir.is_dir():
            raise ValueError(f"model directory {self.model_dir} is a file")
        self.store = CheckpointStore(self.model_dir / CHECKPOINTS_DIR)
        self.config, self.settings, init = self._resolve_run(config, settings)
        # Settings changed when resuming, as [{"step": N, field: [old, new], ...}], carried by every
        # checkpoint and export after it, so a run whose learning rate was lowered by hand says so.
        self.setting_changes: list[dict[str, Any]] = []
        # Provenance of a fine-tuning run's starting weights (from its checkpoints once it has any).
        self.init_provenance: dict[str, Any] | None = None
        if init is not None:
            self.init_provenance = {"path": self.settings.init_from, "metadata": init.metadata}
        self.strategy = make_strategy(strategy)
        self.chief = is_chief(self.strategy)
        if self.chief:
            RunLock(self.model_dir).check()  # refuse before reading data; fit() takes the lock
        replicas = self.strategy.num_replicas_in_sync
        if self.settings.batch_size % replicas:
            raise ValueError(f"batch size {self.settings.batch_size} does not split evenly over {replicas} replicas")
        self.progress_stream = progress_stream

        s = self.settings
        scan = dict(config=self.config, crop_frames=s.crop_frames, crop_samples=s.crop_samples, seed=s.seed)
        self.train_clips = ClipSet.scan(data, name="training data", **scan)
        self.val_clips: ClipSet | None = None
        if val is not None:
            self.val_clips = ClipSet.scan(val, name="validation data", **scan)
        elif s.val_fraction > 0:
            self.train_clips, self.val_clips = self.train_clips.split(s.val_fraction)
        log.info("training on %d clips, validating on %d", len(self.train_clips),
                 0 if self.val_clips is None else len(self.val_clips))
        if uses_prior(self.config) and self.config.prior_energy_range is None:
            # Fixed for the run (stored in its config.json): the prior of every example and of the export.
            self.config = self.config.replace(
                prior_energy_range=energy_range(self.train_clips.mels(), self.config.mel))
            log.info("energy prior: frame energies of the training data span %.4g to %.4g",
                     *self.config.prior_energy_range)
            self.train_clips = self.train_clips.with_config(self.config)
            if self.val_clips is not None:
                self.val_clips = self.val_clips.with_config(self.config)

        if self.store.latest() is None:
            keras.utils.set_random_seed(s.seed)  # the same seed gives the same initial weights
        with self.strategy.scope(), dtype_policy(MIXED_PRECISION[s.mixed_precision]):
            self.model = build_model(self.config)
            optimizer = keras.optimizers.Adam(s.learning_rate, epsilon=ADAM_EPSILON)
            if s.mixed_precision == "float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            if init is not None:
                self.model.set_weights(init.model.get_weights())
                log.info("fine-tuning: starting from the weights of %s (fresh optimizer)", self.settings.init_from)
            self.weight_average = WeightAverage(self.model.trainable_variables, s.ema_decay) if s.ema_decay else None
        if not tf.config.list_logical_devices("GPU"):
            self._warn_of_slow_cpu_paths()
        # A float32, single-device twin for validation, sample vocoding and export.
        with dtype_policy("float32"):
            self.vocoder = Vocoder(build_model(self.config), self.config)
        # The inference levels only when drawn: an inference schedule that does not align to the training
        # one fails there, and needs to fail only where training uses it.
        levels, network_steps = (drawable_levels(self.config) if s.fast_schedule_share
                                 else (noise_levels(self.config), None))
        self._levels = tf.constant(levels)
        self._network_steps = None if network_steps is None else tf.constant(network_steps)
        self._references_logged = False  # ground-truth clips go to TensorBoard once per process
        self.train_step = self._make_train_step()
        self._eval_step = tf.function(lambda batch: diffusion_loss(
            self.vocoder.model, batch, self._levels, s.loss, self.config.hop_length, training=False))

    # -- run directory ----------------------------------------------------------------------------

    def _resolve_run(self, config: DiffWaveConfig | None, settings: TrainingSettings | None,
                     ) -> tuple[DiffWaveConfig, TrainingSettings, Vocoder | None]:
        """(config, settings, the vocoder to start from when fine-tuning a run without checkpoints)."""
        stored_config, stored_settings = stored_run(self.model_dir)
        if stored_config is not None and config is not None:
            config = _with_measured_prior(config, stored_config)
        if stored_config is not None and config is not None and config != stored_config:
            changed = [k for k, v in config.to_dict().items() if stored_config.to_dict()[k] != v]
            raise ValueError(f"{self.model_dir} holds a run of a different model (fields {changed} differ from "
                             f"its config.json); train it with its own config or use a new model directory")
        settings = settings or stored_settings or TrainingSettings()
        init = None
        if settings.init_from is not None and self.store.latest() is None:
            if not Path(settings.init_from).exists():
                raise ValueError(f"init checkpoint not found: {settings.init_from}")
            init = load_for_export(settings.init_from)
        # A fine-tuning run without a config of its own takes its init checkpoint's.
        config = config or stored_config or (init.config if init is not None else DiffWaveConfig())
        if init is not None:
            config = _with_measured_prior(config, init.config)
            mismatch = init_mismatch(init.config, config)
            if mismatch:
                raise ValueError(f"cannot fine-tune from {settings.init_from}: it differs from the run's config in "
                                 f"{mismatch}; drop --config to use the checkpoint's own")
        if stored_settings is not None and self.store.latest() is not None \
                and (settings.mixed_precision == "float16") != (stored_settings.mixed_precision == "float16"):
            raise ValueError(
                f"{self.model_dir} was trained with mixed_precision {stored_settings.mixed_precision!r} and cannot "
                f"resume with {settings.mixed_precision!r}: float16 keeps a loss scale in the optimizer's state. "
                f"Resume with its own setting, or start a new run from it with --init-from {self.model_dir} "
                "(weights kept, fresh optimizer)")
        if stored_settings is not None:
            changed = trajectory_changes(stored_settings, settings)
            if changed:
                log.warning("settings %s differ from the run's training.json: the resumed run will not match an "
                            "uninterrupted one", list(changed))
        return config, settings, init

    def _write_run_files(self) -> None:
        texts = {CONFIG_FILE: self.config.to_json() + "\n", SETTINGS_FILE: self.settings.to_json() + "\n"}
        for name, text in texts.items():
            try:
                with atomic_file(self.model_dir / name) as tmp:
                    tmp.write_text(text)
            except OSError as error:
                raise _storage_error(error, name, self.model_dir, len(text.encode()),
                                    "The run's previous files are intact") from None

    def _warn_of_slow_cpu_paths(self) -> None:
        if self.settings.mixed_precision == "bfloat16" and cpu_has_bfloat16() is False:
            log.warning("mixed_precision 'bfloat16' on a CPU without bfloat16 instructions (none of %s among its "
                        "flags): TensorFlow emulates it, which trains slower than float32 (`--mixed-precision "
                        "float32` turns it off when resuming)", ", ".join(BFLOAT16_CPU_FLAGS))
        if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and not native_dilated_conv_trains(tf.float32):
            log.warning("TensorFlow's oneDNN kernels are off on this CPU, so the dilated convolutions train in "
                        "their slower GEMM form; set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported "
                        "(the CLI's train does)")

    # -- graph-mode steps ---------------------------------------------------------------------------

    def _make_train_step(self):
        model, optimizer, s, average = self.model, self.optimizer, self.settings, self.weight_average
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        replicas = self.strategy.num_replicas_in_sync
        global_batch = float(s.batch_size)
        levels, network_steps, hop = self._levels, self._network_steps, self.config.hop_length

        def replica_step(batch):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(diffusion_loss(model, batch, levels, s.loss, hop, training=True,
                                                         network_steps=network_steps)) / global_batch
                objective = optimizer.scale_loss(loss) if scaled else loss
            grads = tape.gradient(objective, variables)
            if replicas > 1:  # the global gradient, so that its norm and clipping are the single-device ones
                context = tf.distribute.get_replica_context()
                grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                loss = context.all_reduce(tf.distribute.ReduceOp.SUM, loss)
            scale = tf.cast(optimizer.dynamic_scale, tf.float32) if scaled else tf.constant(1.0)
            scaled_norm = tf.linalg.global_norm(grads)
            finite = tf.math.is_finite(loss) & tf.math.is_finite(scaled_norm)
            if s.max_grad_norm is not None:
                grads, _ = tf.clip_by_global_norm(grads, s.max_grad_norm * scale, use_norm=scaled_norm)
            if not scaled:  # the loss-scale optimizer skips non-finite steps itself
                grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
            if replicas > 1:  # the optimizer sums over replicas again
                grads = [g / replicas for g in grads]
            optimizer.apply(grads, variables)
            if average is not None:
                average.update(variables)
            return loss, scaled_norm / scale, tf.math.is_finite(loss)

        @tf.function
        def train_step(iterator):
            """One optimisation step on the next global batch of a distributed-dataset iterator;
            returns (loss, gradient norm, loss is finite)."""
            results = self.strategy.run(replica_step, args=(next(iterator),))
            return [self.strategy.experimental_local_results(r)[0] for r in results]

        return train_step

    def _dataset(self, first_example: int):
        s, clips, steps = self.settings, self.train_clips, self.config.max_steps

        def per_pipeline(context: tf.distribute.InputContext):
            local = context.num_replicas_in_sync // context.num_input_pipelines
            replica_batch = context.get_per_replica_batch_size(s.batch_size)
            indices = example_indices(first_example, s.batch_size, replica_batch,
                                      context.input_pipeline_id * local, local)
            return make_dataset(clips, indices, replica_batch, steps, step_logits=self._step_logits())

        return self.strategy.distribute_datasets_from_function(per_pipeline)

    def _step_logits(self) -> np.ndarray | None:
        """Log-probabilities of the training draw of diffusion steps (None: the uniform draw)."""
        s = self.settings
        if not s.low_noise_emphasis and not s.fast_schedule_share:
            return None
        with np.errstate(divide="ignore"):  # a share of 1 draws no training step: a large negative logit
            logits = np.log(step_probabilities(self.config, s.low_noise_emphasis, s.fast_schedule_share))
        return np.maximum(logits, -1e9).astype(np.float32)

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint(self, with_average: bool = True) -> tf.train.Checkpoint:
        parts = {"model": self.model, "optimizer": self.optimizer}
        if with_average and self.weight_average is not None:
            parts[AVERAGE_KEY] = self.weight_average
        return tf.train.Checkpoint(**parts)

    def _average_provenance(self) -> dict[str, Any]:
        return {"decay": self.weight_average.decay, "updates": int(self.weight_average.updates.numpy())}

    def _restore(self) -> tuple[int, int]:
        """(global step, examples seen) of the newest readable checkpoint, or (0, 0)."""
        for step in reversed(self.store.steps()):
            path = self.store.path(step)
            try:
                state = read_state(path)
                averaged = AVERAGE_KEY in state  # a checkpoint of a run with ema_decay > 0 keeps its average
                self._checkpoint(with_average=averaged).read(str(path / VARIABLES_PREFIX)) \
                    .assert_existing_objects_matched().expect_partial()
            except (ValueError, IndexError, tf.errors.OpError, AssertionError) as error:  # IndexError: a short file
                log.warning("cannot restore %s (%s); trying an older checkpoint", path, " ".join(str(error).split()))
                continue
            if state.get("data_fingerprint") != self.train_clips.fingerprint():
                log.warning("the training data differ from the checkpoint's (%s clips then, %d now): the data "
                            "order after resuming differs from an uninterrupted run", state.get("clips"),
                            len(self.train_clips))
            # The checkpoint holds the optimizer's rate; a rate changed on resume is the settings'.
            self.optimizer.learning_rate.assign(self.settings.learning_rate)
            log.info("resuming from %s (step %d)%s", path, state["step"],
                     " of a fine-tuning run" if state.get("init_from") else "")
            self.init_provenance = state.get("init_from")
            if self.weight_average is not None and not averaged:
                self.weight_average.reset(self.model.trainable_variables)
                log.info("weight average (decay %g) starts from the weights of step %d", self.settings.ema_decay,
                         state["step"])
            self.setting_changes = list(state.get("setting_changes", []))
            trained_with = TrainingSettings.from_dict(json.loads((path / SETTINGS_FILE).read_text()))
            changed = trajectory_changes(trained_with, self.settings)
            if changed:
                self.setting_changes.append({"step": int(state["step"]), **changed})
            return int(state["step"]), int(state["examples_seen"])
        if self.store.steps():
            raise ValueError(f"none of the checkpoints in {self.store.directory} can be restored (see warnings); "
                             "move them away to start the run afresh")
        return 0, 0

    def save(self, step: int, examples_seen: int, loss: float | None) -> Path:
        """Write checkpoint `step` (all workers take part; only the chief's copy is kept) and rotate."""
        state = {"step": step, "examples_seen": examples_seen, "seed": self.settings.seed,
                 "clips": len(self.train_clips), "data_fingerprint": self.train_clips.fingerprint(),
                 "loss": loss, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if self.init_provenance is not None:
            state["init_from"] = self.init_provenance
        if self.setting_changes:
            state["setting_changes"] = self.setting_changes
        if self.weight_average is not None:
            state[AVERAGE_KEY] = self._average_provenance()
        files = {CONFIG_FILE: self.config.to_json() + "\n", SETTINGS_FILE: self.settings.to_json() + "\n"}
        checkpoint = self._checkpoint()
        if not self.chief:
            with tempfile.TemporaryDirectory() as scratch:
                checkpoint.write(os.path.join(scratch, VARIABLES_PREFIX))
            return self.store.path(step)
        path = self.store.path(step)
        if not path.exists():
            try:
                self.store.save(step, state, files, checkpoint.write)
            except (OSError, tf.errors.OpError) as error:
                needed = _variable_bytes(list(self.model.variables) + list(self.optimizer.variables)
                                         + list(self.weight_average.variables if self.weight_average else [])) + sum(
                    len(text.encode()) for text in files.values()) + 4096
                latest = self.store.latest()
                intact = f"The previous checkpoint {latest} is intact" if latest else "No checkpoint was written yet"
                raise _storage_error(error, f"checkpoint {path.name}", self.store.directory, needed, intact) from None
        deleted = self.store.rotate(self.settings.keep_last, self.settings.keep_every)
        if deleted:
            log.debug("deleted checkpoints of steps %s", deleted)
        return path

    # -- validation -------------------------------------------------------------------------------

    def _sync_vocoder(self) -> None:
        """The float32 twin gets the weights the run exports: the average where one is kept."""
        self.vocoder.model.set_weights([np.asarray(w, np.float32) for w in self.model.get_weights()])
        if self.weight_average is not None:
            self.weight_average.copy_to(self.vocoder.model.trainable_variables)

    def validate(self, step: int, summaries: SummaryLog | None) -> float | None:
        """Validation loss (fixed crops, steps and noise) and a few vocoded clips for TensorBoard."""
        if self.val_clips is None:
            return None
        self._sync_vocoder()
        total, count = 0.0, 0
        for batch in evaluation_dataset(self.val_clips, self.settings.batch_size, self.config.max_steps):
            losses = self._eval_step(batch).numpy()
            total, count = total + float(losses.sum()), count + len(losses)
        loss = total / count
        if summaries is not None:
            summaries.scalars(step, {"validation/loss": loss})
            self._log_samples(step, summaries)
            summaries.flush()
        return loss

    def _log_samples(self, step: int, summaries: SummaryLog) -> None:
        s, config = self.settings, self.config
        count = min(s.val_vocode_clips, len(self.val_clips))
        max_samples = int(s.val_vocode_seconds * config.sample_rate)
        convention = config.mel
        stoi = _optional_stoi() if self.vocoder.conditional else None
        scores: dict[str, list[float]] = {"validation/logmel_l1": [], "validation/stoi": []}
        for i in range(count):
            audio, mel = self.val_clips.load(i)
            if mel is not None:
                frames = max(1, min(len(mel), max_samples // config.hop_length))
                mel, audio = mel[:frames], audio[:frames * config.hop_length]
                generated = self.vocoder.vocode(mel, seed=s.seed + i)
            else:
                audio = audio[:max_samples]
                generated = self.vocoder.generate(len(audio), seed=s.seed + i)[0]
            reference = compute_mel(audio, convention)
            generated_mel = compute_mel(generated, convention)
            low, high = float(reference.min()), float(reference.max())
            image = lambda m: ((m.T[::-1] - low) / max(high - low, 1e-6))  # noqa: E731 (low bins at the bottom)
            summaries.audio(step, f"validation/generated_{i}", generated, config.sample_rate)
            summaries.image(step, f"validation/generated_{i}_mel", image(generated_mel))
            if not self._references_logged:
                summaries.audio(step, f"validation/reference_{i}", audio, config.sample_rate)
                summaries.image(step, f"validation/reference_{i}_mel", image(reference))
            if mel is not None:  # the clip's own mel was vocoded: score the result against the clip
                scores["validation/logmel_l1"].append(float(np.mean(np.abs(generated_mel - reference))))
                if stoi is not None:
                    scores["validation/stoi"].append(float(stoi(audio, generated, config.sample_rate)))
        self._references_logged = True
        summaries.scalars(step, {tag: float(np.mean(values)) for tag, values in scores.items() if values})

    # -- the loop -----------------------------------------------------------------------------------

    def fit(self) -> TrainingResult:
        """Train to settings.max_steps (resuming if the run has checkpoints), then export.

        The chief holds the run directory's lock throughout: a second trainer on the same run
        directory is refused with `RunLockedError` naming this one's process."""
        if not self.chief:
            return self._fit()
        with RunLock(self.model_dir):
            for leftover in self.store.remove_partial() + remove_leftovers(
                    self.model_dir, (CONFIG_FILE, SETTINGS_FILE, EXPORT_DIR)):
                log.info("removed %s left by an interrupted save", leftover)
            self._write_run_files()
            return self._fit()

    def _fit(self) -> TrainingResult:
        s = self.settings
        step, examples_seen = self._restore()
        summaries = {name: SummaryLog(self.model_dir / LOGS_DIR / name) for name in ("train", "validation")} \
            if self.chief else {}
        steps_per_epoch = math.ceil(len(self.train_clips) / s.batch_size)
        val_every = s.val_every or steps_per_epoch
        last_loss = val_loss = None
        finished = step >= s.max_steps
        checkpoint = self.store.latest()
        if not finished:
            log.info("training from step %d to %d (%d steps per epoch, global batch %d on %d replica(s))",
                     step, s.max_steps, steps_per_epoch, s.batch_size, self.strategy.num_replicas_in_sync)
            iterator = iter(self._dataset(examples_seen))
            progress = Progress(s.max_steps, step, self.progress_stream, enabled=self.chief)
            window: list[tuple[float, float]] = []
            nonfinite = 0
            with _StopRequest() as stop:
                while step < s.max_steps and not stop.requested:
                    loss, grad_norm, finite = (t.numpy() for t in self.train_step(iterator))
                    step, examples_seen = step + 1, examples_seen + s.batch_size
                    last_loss = float(loss)
                    nonfinite = 0 if finite else nonfinite + 1
                    if nonfinite:
                        progress.clear()
                        log.warning("non-finite loss at step %d: update skipped", step)
                        if nonfinite >= MAX_NONFINITE_STEPS:
                            raise RuntimeError(
                                f"loss was NaN/Inf for {nonfinite} steps in a row up to step {step}; training has "
                                f"diverged. The last checkpoint ({self.store.latest()}) is intact: lower the learning "
                                "rate or set max_grad_norm and resume from it")
                    window.append((last_loss, float(grad_norm)))
                    progress.update(step, last_loss)
                    if step % s.log_every == 0 and summaries:
                        losses, norms = zip(*[w for w in window if math.isfinite(w[0])] or [(math.nan, math.nan)])
                        summaries["train"].scalars(step, {
                            "train/loss": float(np.mean(losses)), "train/grad_norm": float(np.mean(norms)),
                            "train/learning_rate": float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))})
                        window.clear()
                    if step % s.checkpoint_every == 0 or step == s.max_steps or stop.requested:
                        progress.clear()
                        checkpoint = self.save(step, examples_seen, last_loss)
                        log.info("step %d: checkpoint %s", step, checkpoint)
                    if self.chief and (step % val_every == 0 or step == s.max_steps) and self.val_clips:
                        progress.clear()
                        val_loss = self.validate(step, summaries["validation"])
                        log.info("step %d: validation loss %.4f", step, val_loss)
                progress.update(step, last_loss if last_loss is not None else math.nan, force=True)
                progress.clear()
            finished = step >= s.max_steps
        for log_ in summaries.values():
            log_.close()
        exported = None
        if finished and self.chief:
            exported = self.export(self.model_dir / EXPORT_DIR, step)
            log.info("exported the trained vocoder to %s", exported)
        return TrainingResult(step=step, finished=finished, checkpoint=checkpoint, exported=exported,
                              last_loss=last_loss, validation_loss=val_loss)

    def export(self, path: str | os.PathLike, step: int) -> Path:
        """The current weights in the inference format (float32, whatever the training precision)."""
        self._sync_vocoder()
        self.vocoder.metadata = training_metadata(
            step, self.init_provenance, self.setting_changes,
            None if self.weight_average is None else self._average_provenance())
        what, where = f"the vocoder checkpoint {Path(path).name}", Path(path).parent
        needed = int(1.1 * _variable_bytes(self.vocoder.model.weights)) + 65536  # HDF5's overhead included
        intact = f"The checkpoints in {self.store.directory} are intact"
        # Checked first: HDF5 can crash its process when a write fails for want of space.
        with contextlib.suppress(OSError):
            if where.is_dir() and shutil.disk_usage(where).free < needed:
                raise _storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), what, where, needed, intact)
        try:
            return self.vocoder.save(path)
        except (OSError, tf.errors.OpError) as error:
            raise _storage_error(error, what, where, needed, intact) from None


def train(model_dir: str | os.PathLike, data: str | os.PathLike | Sequence[str | os.PathLike],
          val: str | os.PathLike | Sequence[str | os.PathLike] | None = None, config: DiffWaveConfig | None = None,
          settings: TrainingSettings | None = None, strategy: str | tf.distribute.Strategy | None = None,
          **overrides: Any) -> TrainingResult:
    """Train (or resume) the run in model_dir; keyword overrides change single settings, e.g.
    `train("runs/a", "LJSpeech-1.1", max_steps=10_000, batch_size=8)`."""
    if overrides:
        base = settings or stored_run(model_dir)[1] or TrainingSettings()
        settings = base.replace(**overrides)
    return Trainer(model_dir, data, val, config, settings, strategy).fit()


__all__ = ["TrainingSettings", "Trainer", "TrainingResult", "StorageError", "train",
           "load_config_file", "stored_run", "diffusion_loss", "init_mismatch", "step_probabilities"]
