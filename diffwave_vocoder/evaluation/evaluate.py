"""Objective evaluation: vocode each clip's own mel and compare the result with the clip.

Systems: the vocoder under test ("diffwave", one per checkpoint step when a training run is
scored), the Griffin-Lim baseline from the same mel ("griffin-lim", griffin_lim.py) and the clip
itself ("ground-truth": the ceiling of every metric; for the reference-based ones it is the scale's
best value by construction, for DNSMOS it is the clean recording's score).

Metrics (`METRICS`), each a number per clip and system:

- ``pesq``: PESQ wide band (ITU-T P.862.2) at 16 kHz, -0.5 .. 4.64, higher is better (`pesq`).
- ``stoi``, ``estoi``: (extended) short-time objective intelligibility, 0 .. 1, higher is better
  (`pystoi`).
- ``mcd``: mel-cepstral distance over the 13 cepstra c1..c13 of 20 mel bands, 32 ms frames every
  8 ms at 16 kHz, frames aligned by position (`mel-cepstral-distance`), lower is better.
- ``mrstft``: multi-resolution STFT distance (spectral convergence + mean absolute log-magnitude
  difference, averaged over three resolutions), lower is better.
- ``logmel_l1``: mean absolute difference between the output's mel and the clip's mel in the
  vocoder's own convention (the units of its features; 1 lmnt unit = 100 dB), lower is better.
- ``f0_rmse``: RMS error of F0 in Hz over frames voiced in both (librosa pyin, 60-500 Hz), and
  ``vuv_error``: share of frames whose voiced/unvoiced decision differs; lower is better.
- ``voiced``: share of frames pyin finds voiced, 0 .. 1; the recording's own share (the ground
  truth row) is the target: a vocoder that has not learned periodic excitation scores near 0.
- ``dnsmos_p808``: DNSMOS P.808 (reference-free MOS estimate, 1 .. 5; `speechmos` on
  onnxruntime, models shipped in the package), higher is better.

Metric packages are imported on first use; a missing one is an `ImportError` naming the package
and the ``eval`` extra.
"""
from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..io.atomic import atomic_file
from ..features.mel import MelConvention, compute_mel
from ..vocoder_format import read_checkpoint, total_training_steps

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("pesq", "stoi", "estoi", "mcd", "mrstft", "logmel_l1", "f0_rmse", "vuv_error",
                            "voiced", "dnsmos_p808")
# None: neither direction; the ground truth's value is the target.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "pesq": True, "stoi": True, "estoi": True, "mcd": False, "mrstft": False, "logmel_l1": False,
    "f0_rmse": False, "vuv_error": False, "voiced": None, "dnsmos_p808": True}
ARROWS = {True: "↑", False: "↓", None: "≈"}  # the table's "which direction is better" marks
OURS, GRIFFIN_LIM, GROUND_TRUTH = "diffwave", "griffin-lim", "ground-truth"
BASELINES = ("griffin-lim",)
METRIC_RATE = 16_000  # PESQ wide band, STOI, MCD, pyin and DNSMOS run on 16 kHz audio
F0_RANGE = (60.0, 500.0)  # Hz, pyin's search range
# (n_fft, hop, window) of the multi-resolution STFT distance (ParallelWaveGAN's resolutions).
STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
# metric -> (module to import, pip name) of what it needs beyond the core dependencies.
_PACKAGES = {"pesq": ("pesq", "pesq"), "stoi": ("pystoi", "pystoi"), "estoi": ("pystoi", "pystoi"),
             "mcd": ("mel_cepstral_distance", "mel-cepstral-distance"),
             "dnsmos_p808": ("speechmos.dnsmos", "speechmos (with onnxruntime and requests)")}


def require(metric: str) -> Any:
    """The module a metric needs (None for those computed with the core dependencies)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if metric not in _PACKAGES:
        return None
    module, package = _PACKAGES[metric]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"metric {metric} needs {package} ({error}); install the eval extra: "
                          "pip install 'diffwave-vocoder[eval]'") from None


# -- metrics of one signal pair -------------------------------------------------------------------

def log_mel_distance(audio: np.ndarray, mel: np.ndarray, convention: MelConvention) -> float:
    """Mean |mel(audio) - mel| in the convention's feature units, over the frames both have."""
    generated = compute_mel(audio, convention)
    frames = min(len(generated), len(mel))
    return float(np.mean(np.abs(generated[:frames] - np.asarray(mel)[:frames])))


def _stft_magnitudes(audio: np.ndarray) -> list[np.ndarray]:
    import librosa

    return [np.sqrt(np.maximum(np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop, win_length=win)) ** 2,
                               1e-7)) for n_fft, hop, win in STFT_RESOLUTIONS]


def multi_resolution_stft_distance(reference: np.ndarray | list[np.ndarray], audio: np.ndarray) -> float:
    """Mean over STFT_RESOLUTIONS of spectral convergence ||R - A||_F / ||R||_F plus the mean absolute
    difference of log magnitudes (as ParallelWaveGAN's loss). `reference`: audio, or its magnitudes."""
    references = _stft_magnitudes(reference) if isinstance(reference, np.ndarray) else reference
    total = 0.0
    for ref, out in zip(references, _stft_magnitudes(audio)):
        convergence = np.linalg.norm(ref - out) / np.linalg.norm(ref)
        total += float(convergence + np.mean(np.abs(np.log(ref) - np.log(out))))
    return total / len(STFT_RESOLUTIONS)


def pitch_track(audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F0 in Hz, NaN where unvoiced; voiced flags) per 16 ms frame: pyin over F0_RANGE, as the pitch metrics."""
    import librosa

    f0, voiced, _ = librosa.pyin(audio16k, fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=METRIC_RATE,
                                 frame_length=1024, hop_length=256)
    return f0, voiced


def _pitch_scores(reference: tuple[np.ndarray, np.ndarray], audio16k: np.ndarray) -> dict[str, float]:
    f0_ref, voiced_ref = reference
    f0, voiced = pitch_track(audio16k)
    both = voiced_ref & voiced
    rmse = float(np.sqrt(np.mean((f0_ref[both] - f0[both]) ** 2))) if both.any() else math.nan
    return {"f0_rmse": rmse, "vuv_error": float(np.mean(voiced_ref != voiced)), "voiced": float(np.mean(voiced))}


def _mcd(reference16k: np.ndarray, audio16k: np.ndarray) -> float:
    import tempfile

    from scipy.io import wavfile

    mcd = require("mcd")
    if not np.any(audio16k):  # the package scales each signal by its peak
        return math.nan
    with tempfile.TemporaryDirectory() as scratch:
        paths = [os.path.join(scratch, name) for name in ("reference.wav", "audio.wav")]
        for path, signal in zip(paths, (reference16k, audio16k)):
            wavfile.write(path, METRIC_RATE, signal)
        value, _ = mcd.compare_audio_files(*paths, sample_rate=METRIC_RATE, n_fft=32, win_len=32, hop_len=8,
                                           M=20, s=1, D=14, aligning="pad")
    return float(value)


def _pesq(reference16k: np.ndarray, audio16k: np.ndarray) -> float:
    module = require("pesq")
    try:
        return float(module.pesq(METRIC_RATE, reference16k, audio16k, "wb"))
    except Exception as error:  # noqa: BLE001 - e.g. no utterance detected: the clip has no score
        log.debug("PESQ failed: %s", error)
        return math.nan


@dataclass
class _Reference:
    """What the metrics need of one clip, computed once however many systems are scored."""

    audio16k: np.ndarray
    stft: list[np.ndarray] | None = None
    pitch: tuple[np.ndarray, np.ndarray] | None = None


class Scorer:
    """Computes the chosen metrics of a system's audio against a clip (caching the clip's side)."""

    def __init__(self, convention: MelConvention, metrics: Sequence[str] | None = None):
        self.convention = convention
        self.metrics = tuple(METRICS if metrics is None else metrics)
        for metric in self.metrics:
            require(metric)  # fail before any vocoding
        self._references: dict[str, _Reference] = {}

    def _to16k(self, audio: np.ndarray) -> np.ndarray:
        import librosa

        resampled = librosa.resample(np.asarray(audio, np.float32), orig_sr=self.convention.sample_rate,
                                     target_sr=METRIC_RATE)
        return np.clip(resampled, -1.0, 1.0).astype(np.float32)

    def _reference(self, clip: "EvaluationClip") -> _Reference:
        ref = self._references.get(clip.key)
        if ref is None:
            ref = self._references[clip.key] = _Reference(self._to16k(clip.audio))
        return ref

    def score(self, clip: "EvaluationClip", audio: np.ndarray) -> dict[str, float]:
        """metric -> value for `audio` (trimmed or zero-padded to the clip's length)."""
        audio = np.asarray(audio, np.float32)[:len(clip.audio)]
        audio = np.pad(audio, (0, len(clip.audio) - len(audio)))
        ref = self._reference(clip)
        audio16k = self._to16k(audio)
        wanted, values = set(self.metrics), {}
        if "pesq" in wanted:
            values["pesq"] = _pesq(ref.audio16k, audio16k)
        for name, extended in (("stoi", False), ("estoi", True)):
            if name in wanted:
                values[name] = float(require(name).stoi(ref.audio16k, audio16k, METRIC_RATE, extended=extended))
        if "mcd" in wanted:
            values["mcd"] = _mcd(ref.audio16k, audio16k)
        if "mrstft" in wanted:
            if ref.stft is None:
                ref.stft = _stft_magnitudes(clip.audio)
            values["mrstft"] = multi_resolution_stft_distance(ref.stft, audio)
        if "logmel_l1" in wanted:
            values["logmel_l1"] = log_mel_distance(audio, clip.mel, self.convention)
        if wanted & {"f0_rmse", "vuv_error", "voiced"}:
            if ref.pitch is None:
                ref.pitch = pitch_track(ref.audio16k)
            values.update({k: v for k, v in _pitch_scores(ref.pitch, audio16k).items() if k in wanted})
        if "dnsmos_p808" in wanted:
            values["dnsmos_p808"] = float(require("dnsmos_p808").run(audio16k, METRIC_RATE)["p808_mos"])
        return {metric: values[metric] for metric in self.metrics}


# -- clips ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluationClip:
    """One clip: its audio at the vocoder's rate and its mel in the vocoder's convention; its voice
    where it comes from a corpus `diffwave-vocoder corpus` made."""

    name: str
    path: Path
    audio: np.ndarray
    mel: np.ndarray
    voice: str | None = None

    @property
    def key(self) -> str:
        return str(self.path)


def clip_paths(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Audio files of `data`: files as given, directories (wavs below them, or an LJSpeech folder's
    listed clips, as for training)."""
    from ..io.audio import find_wavs

    roots = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    paths: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            paths.extend(find_wavs(root))
        elif root.exists():
            paths.append(root)
        else:
            raise ValueError(f"evaluation data not found: {root}")
    if not paths:
        raise ValueError("no evaluation data given")
    return paths


def clip_names(paths: Sequence[Path]) -> list[str]:
    """Each clip's name in a report: its file stem, with its folder where two folders share a stem."""
    stems = [path.stem for path in paths]
    return [path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}/{path.stem}" for path in paths]


def read_voice_map(path: str | os.PathLike) -> dict[Path, str]:
    """A speaker map for data not made by `corpus`: a CSV of `wav,voice` rows, each wav path absolute
    or relative to the CSV's folder; returned resolved. A malformed row is a ValueError naming it."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"cannot read the voice map {path}: {error}") from None
    voices = {}
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path} line {number}: expected 'wav path,voice', got {','.join(row)!r}")
        voices[(path.parent / row[0].strip()).resolve()] = row[1].strip()
    if not voices:
        raise ValueError(f"the voice map {path} has no rows; expected 'wav path,voice' lines")
    return voices


def clip_voices(paths: Sequence[Path], voice_map: dict[Path, str] | None = None) -> list[str | None]:
    """The voice speaking each clip: from `voice_map` (`read_voice_map`) where it names the clip, else
    for wavs in the wavs/ folder of a corpus `corpus` made; else None."""
    from .corpus import corpus_voices

    resolved = [path.resolve() for path in paths]
    corpora: dict[Path, dict[Path, str]] = {}
    for root in {path.parent.parent for path in resolved}:
        try:
            corpora[root] = corpus_voices(root) if (root / "corpus.json").is_file() else {}
        except ValueError as error:
            log.warning("no voices for the clips of %s: %s", root, error)
            corpora[root] = {}
    voice_map = voice_map or {}
    return [voice_map.get(path) or corpora[path.parent.parent].get(path) for path in resolved]


def load_clips(data: str | os.PathLike | Sequence[str | os.PathLike], convention: MelConvention,
               max_seconds: float | None = None, voice_map: dict[Path, str] | None = None,
               ) -> tuple[list[EvaluationClip], list[dict[str, str]]]:
    """(clips, skipped): each readable file at the convention's rate (resampled if need be), cut
    to `max_seconds`, with its mel and voice (`clip_voices`); a file that cannot be read is logged
    by name and skipped."""
    from ..io.audio import load_audio

    clips, skipped, resampled = [], [], 0
    paths = clip_paths(data)
    for path, name, voice in zip(paths, clip_names(paths), clip_voices(paths, voice_map)):
        try:
            audio, rate = load_audio(path)
            if rate != convention.sample_rate:
                audio, rate = load_audio(path, convention.sample_rate, resample=True)
                resampled += 1
            if max_seconds is not None:
                audio = audio[:max(1, int(max_seconds * rate))]
            mel = compute_mel(audio, convention)
        except ValueError as error:
            log.warning("skipped %s: %s", path, error)
            skipped.append({"path": str(path), "reason": " ".join(str(error).split())})
            continue
        clips.append(EvaluationClip(name, path, audio, mel, voice))
    if resampled:
        log.warning("resampled %d of %d clips to %d Hz, the vocoder's rate", resampled, len(paths),
                    convention.sample_rate)
    if not clips:
        raise ValueError(f"none of the {len(paths)} evaluation files could be read")
    return clips, skipped


# -- the report -------------------------------------------------------------------------------------

def _number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass
class EvaluationReport:
    """Per-clip scores (`rows`: clip, system, step, seconds and one value per metric), the skipped
    files and the settings of the evaluation."""

    metrics: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def has_voices(self) -> bool:
        return any(row.get("voice") for row in self.rows)

    def summary(self, by_voice: bool = False) -> list[dict[str, Any]]:
        """Mean of each metric per system (and step; and voice, `by_voice`), over the clips where it
        is defined."""
        groups: dict[tuple[str, Any, Any], list[dict[str, Any]]] = {}
        for row in self.rows:
            groups.setdefault((row["system"], row["step"], row.get("voice") if by_voice else None), []).append(row)
        summary = []
        for (system, step, voice), rows in groups.items():
            entry: dict[str, Any] = {"system": system, "step": step, **({"voice": voice} if by_voice else {}),
                                     "clips": len(rows)}
            for metric in self.metrics:
                values = [r[metric] for r in rows if r[metric] is not None and math.isfinite(r[metric])]
                entry[metric] = float(np.mean(values)) if values else math.nan
            summary.append(entry)
        return summary

    def to_dict(self) -> dict[str, Any]:
        clean = lambda rows: [{k: _number(v) for k, v in r.items()} for r in rows]  # noqa: E731 (NaN -> null)
        by_voice = {"summary_by_voice": clean(self.summary(by_voice=True))} if self.has_voices() else {}
        return {"settings": self.settings, "metrics": list(self.metrics), "summary": clean(self.summary()),
                **by_voice, "clips": clean(self.rows), "skipped": self.skipped}

    def write_json(self, path: str | os.PathLike) -> Path:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> "EvaluationReport":
        """A report `write_json` wrote (undefined values, null there, come back as NaN)."""
        try:
            data = json.loads(Path(path).read_text())
            metrics = tuple(data["metrics"])
            rows = [{k: (math.nan if v is None and k in metrics else v) for k, v in row.items()}
                    for row in data["clips"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"cannot read evaluation report {path}: {error}") from None
        return cls(metrics, rows, data.get("skipped", []), data.get("settings", {}))

    def _write_csv(self, path: str | os.PathLike, rows: list[dict[str, Any]], columns: list[str]) -> Path:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if _number(v) is None else v for k, v in row.items()})
        with atomic_file(path, suffix=".csv") as tmp:
            tmp.write_text(buffer.getvalue())
        return Path(path)

    def write_csv(self, path: str | os.PathLike) -> Path:
        """One row per clip and system (with its voice, where known)."""
        voice = ["voice"] if self.has_voices() else []
        return self._write_csv(path, self.rows, ["clip", *voice, "system", "step", "seconds", *self.metrics])

    def write_summary_csv(self, path: str | os.PathLike, by_voice: bool = False) -> Path:
        """One row per system (and step; and voice, `by_voice`): the means of `summary`."""
        voice = ["voice"] if by_voice else []
        return self._write_csv(path, self.summary(by_voice), ["system", "step", *voice, "clips", *self.metrics])

    def table(self, by_voice: bool = False) -> str:
        """The summary as a Markdown table (arrows: which direction is better; ≈: nearest the ground truth)."""
        voice = ["voice"] if by_voice else []
        header = ["system", "step", *voice, "clips"] + [f"{m} {ARROWS[HIGHER_IS_BETTER[m]]}" for m in self.metrics]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for entry in self.summary(by_voice):
            cells = [entry["system"], "-" if entry["step"] is None else str(entry["step"]),
                     *([entry["voice"] or "-"] if by_voice else []), str(entry["clips"])]
            cells += ["-" if not math.isfinite(entry[m]) else f"{entry[m]:.3f}" for m in self.metrics]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


# -- evaluation -------------------------------------------------------------------------------------

def _as_clips(data: Any, convention: MelConvention, max_seconds: float | None,
              voice_map: dict[Path, str] | None) -> tuple[list[EvaluationClip], list[dict[str, str]]]:
    if isinstance(data, (list, tuple)) and data and all(isinstance(c, EvaluationClip) for c in data):
        return list(data), []
    return load_clips(data, convention, max_seconds, voice_map)


def _progress(total: int, enabled: bool | None) -> Any:
    """A tqdm bar on stderr (None: only on a terminal); a no-op without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or enabled is False:
        return _NoProgress()
    return tqdm(total=total, unit="clip", disable=None if enabled is None else not enabled, leave=False)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _System:
    """A way of making audio for each clip: synthesise(clip, clip index); prepare() runs first."""

    name: str
    step: int | None
    synthesise: Callable[[EvaluationClip, int], np.ndarray]
    prepare: Callable[[], None] | None = None


def _run(systems: Sequence[_System], clips: Sequence[EvaluationClip], scorer: Scorer,
         progress: bool | None) -> list[dict[str, Any]]:
    rows = []
    bar = _progress(len(systems) * len(clips), progress)
    try:
        for system in systems:
            bar.set_description(system.name if system.step is None else f"{system.name} step {system.step}")
            if system.prepare is not None:
                system.prepare()
            for index, clip in enumerate(clips):
                audio = system.synthesise(clip, index)
                rows.append({"clip": clip.name, **({"voice": clip.voice} if clip.voice else {}),
                             "system": system.name, "step": system.step,
                             "seconds": round(len(clip.audio) / scorer.convention.sample_rate, 3),
                             **scorer.score(clip, audio)})
                bar.update(1)
    finally:
        bar.close()
    return rows


def _reference_systems(convention: MelConvention, baseline: str | None, ground_truth: bool, seed: int):
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")
    systems = []
    if baseline == "griffin-lim":
        from .griffin_lim import griffin_lim

        systems.append(_System(GRIFFIN_LIM, None, lambda clip, i: griffin_lim(clip.mel, convention, seed=seed + i)))
    if ground_truth:
        systems.append(_System(GROUND_TRUTH, None, lambda clip, i: clip.audio))
    return systems


def _vocoding(current: Callable[[], Any], steps: Any, seed: int) -> Callable[[EvaluationClip, int], np.ndarray]:
    """Clip i vocoded with seed + i by the vocoder `current()` returns (a run's points swap it)."""
    return lambda clip, i: current().vocode(clip.mel, steps=steps, seed=seed + i)


def evaluate(vocoder: Any, clips: Any, steps: Any = "fast", baseline: str | None = "griffin-lim",
             metrics: Sequence[str] | None = None, seed: int = 0, max_seconds: float | None = None,
             ground_truth: bool = True, progress: bool | None = None,
             voice_map: dict[Path, str] | None = None) -> EvaluationReport:
    """Vocode each clip's own mel with `vocoder` (a `Vocoder`) and score it against the clip.

    clips: wav files, directories or LJSpeech folders (or `EvaluationClip`s); unreadable files are
    skipped and listed in the report. steps: the vocoder's schedule ('fast', 'full' or betas).
    baseline: 'griffin-lim' or None. ground_truth: also score the clip itself (the ceiling).
    seed: clip i is vocoded with seed + i. max_seconds: score only the start of long clips.
    progress: a progress bar on stderr (None: when stderr is a terminal). voice_map: each clip's
    voice, for data not made by `corpus` (`read_voice_map`).
    """
    convention = vocoder.mel_convention
    scorer = Scorer(convention, metrics)
    loaded, skipped = _as_clips(clips, convention, max_seconds, voice_map)
    systems = [_System(OURS, total_training_steps(vocoder.metadata), _vocoding(lambda: vocoder, steps, seed)),
               *_reference_systems(convention, baseline, ground_truth, seed)]
    rows = _run(systems, loaded, scorer, progress)
    settings = {"steps": steps, "seed": seed, "baseline": baseline, "max_seconds": max_seconds,
                "sample_rate": convention.sample_rate, "metadata": dict(vocoder.metadata)}
    return EvaluationReport(scorer.metrics, rows, skipped, settings)


def evaluate_run(run_dir: str | os.PathLike, clips: Any, steps: Any = "fast", baseline: str | None = "griffin-lim",
                 metrics: Sequence[str] | None = None, seed: int = 0, max_seconds: float | None = None,
                 ground_truth: bool = True, progress: bool | None = None,
                 earlier: Sequence[str | os.PathLike] = (), skip_steps: Sequence[int] = (),
                 voice_map: dict[Path, str] | None = None) -> EvaluationReport:
    """Score every checkpoint of a training run (`checkpoints/step-*`, oldest first) on the same
    clips, seeds and metrics: rows of system 'diffwave' carry their step, so `summary()` has one
    entry per step (quality over training). The baseline and ground truth are scored once.

    Steps count from the start of training. A fine-tuning run's steps include those of the checkpoint
    it started from (`settings["steps_before_run"]`), and that checkpoint, where it still exists, is
    scored as the run's first point. earlier: more vocoder checkpoints of the same network (the exports a
    chain of fine-tuning runs went through, whose prior may differ), each scored at its own total step.
    skip_steps: total steps not to score (those a stored report already has). `settings["setting_changes"]`
    lists the settings the run was resumed with, at their total steps (a learning rate lowered by hand)."""
    from ..training.checkpoints import CHECKPOINTS_DIR, CheckpointStore, load_for_export, read_state
    from ..training.trainer import init_mismatch

    store = CheckpointStore(Path(run_dir) / CHECKPOINTS_DIR)
    steps_found = store.steps()
    if not steps_found:
        raise ValueError(f"{run_dir} has no training checkpoints ({CHECKPOINTS_DIR}/step-*)")
    first = load_for_export(store.path(steps_found[0]))
    steps_before_run = total_training_steps(first.metadata) - steps_found[0]
    points = [(steps_before_run + step, store.path(step)) for step in steps_found]
    init = first.metadata.get("init_from")
    if init is not None and Path(init["path"]).exists():
        points.append((steps_before_run, Path(init["path"])))
    for path in earlier:
        step = total_training_steps(read_checkpoint(path)[1])
        if step is None:
            raise ValueError(f"{path} records no training step (metadata.json has no training_step)")
        points.append((step, Path(path)))
    points = sorted({path.resolve(): (step, path) for step, path in points}.values(), key=lambda point: point[0])
    skip = set(skip_steps)
    points = [(step, path) for step, path in points if step not in skip]
    vocoder = first
    convention = vocoder.mel_convention
    scorer = Scorer(convention, metrics)
    loaded, skipped = _as_clips(clips, convention, max_seconds, voice_map)
    current = [vocoder]  # the vocoder of the point being scored

    def loader(path: Path) -> Callable[[], None]:
        def load() -> None:
            checkpoint = load_for_export(path)
            mismatch = init_mismatch(checkpoint.config, vocoder.config)
            if mismatch:
                raise ValueError(f"checkpoint {path} is another network than the run's: {mismatch}")
            if checkpoint.config == vocoder.config:  # into the same model, so that its traced sampler is reused
                vocoder.model.set_weights(checkpoint.model.get_weights())
                current[0] = vocoder
            else:  # another prior (a chain that switched to the energy prior): its own sampler
                current[0] = checkpoint
        return load

    # The run's first checkpoint is loaded already: scored first, it needs no loading.
    synthesise = _vocoding(lambda: current[0], steps, seed)
    systems = [_System(OURS, step, synthesise, None if i == 0 and path == store.path(steps_found[0]) else loader(path))
               for i, (step, path) in enumerate(points)]
    systems += _reference_systems(convention, baseline, ground_truth, seed)
    rows = _run(systems, loaded, scorer, progress)
    changes = [{**change, "step": steps_before_run + change["step"]}
               for change in read_state(store.path(steps_found[-1])).get("setting_changes", [])]
    settings = {"run": str(run_dir), "checkpoints": [str(path) for _, path in points],
                "steps_before_run": steps_before_run, "setting_changes": changes, "steps": steps, "seed": seed,
                "baseline": baseline, "max_seconds": max_seconds, "sample_rate": convention.sample_rate}
    return EvaluationReport(scorer.metrics, rows, skipped, settings)


__all__ = ["evaluate", "evaluate_run", "EvaluationReport", "EvaluationClip", "Scorer", "load_clips", "clip_paths",
           "clip_names", "log_mel_distance", "multi_resolution_stft_distance", "METRICS", "HIGHER_IS_BETTER", "require"]
