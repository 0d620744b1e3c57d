"""Vocoding many files in one process (`vocode`/`resynth` with several inputs and `-o OUT_DIR`).

TensorFlow and the model load once; inputs are sized first, sorted by length and vocoded in batches
of similar lengths (padding never changes an utterance, so each output equals vocoding its file
alone with the same seed). Each output is written atomically, and outputs that exist are skipped
unless `overwrite`, so a run that was interrupted (even by `kill -9`) continues where it stopped
when started again; temporaries a killed run left beside its outputs are removed. A file that cannot
be read or vocoded is reported by name and the others continue.
"""
from __future__ import annotations

import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np

from .io.audio import save_audio
from .io.progress import progress_line

MEL_SUFFIXES = (".npy",)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
# A batch's longest item may be this much longer than its shortest (padding is computed, then masked).
LENGTH_TOLERANCE = 1.1


def output_name(path: Path) -> str:
    """x.npy -> x.wav, x.wav.spec.npy (the reference's preprocess) -> x.wav, x.flac -> x.wav."""
    name = path.name
    for suffix in (".spec.npy", ".npy"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    else:
        name = path.stem
    return name if name.endswith(".wav") else name + ".wav"


def expand_inputs(inputs: Sequence[str], suffixes: Sequence[str]) -> list[tuple[Path, Path]]:
    """(source file, output path relative to the output directory) for each file, directory (searched
    recursively for `suffixes`, keeping its sub-directories) or glob pattern, in order, without duplicates."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(tuple(suffixes)))
            if not files:
                raise ValueError(f"no {'/'.join(suffixes)} files under {path}")
            found += [(f, f.relative_to(path).parent / output_name(f)) for f in files]
        elif path.exists():
            found.append((path, Path(output_name(path))))
        elif glob.has_magic(item):
            files = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not files:
                raise ValueError(f"no files match {item}")
            found += [(f, Path(output_name(f))) for f in files]
        else:
            raise ValueError(f"input not found: {item}")
    unique, targets = [], {}
    for source, target in found:
        key = source.resolve()
        if key in targets.values():
            continue
        if target in targets:
            raise ValueError(f"{targets[target]} and {source} would both be written to {target}")
        targets[target] = key
        unique.append((source, target))
    return unique


@dataclass
class Job:
    source: Path
    target: Path
    frames: int


@dataclass
class Summary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        text = (f"wrote {len(self.written)} files ({self.audio_seconds:.1f} s of audio) in {self.seconds:.1f} s")
        if self.skipped:
            text += f"; skipped {len(self.skipped)} that exist (--overwrite to redo)"
        if self.failed:
            text += f"; {len(self.failed)} failed"
        return text


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _batches(jobs: list[Job], batch_size: int) -> list[list[Job]]:
    """Consecutive runs of the length-sorted jobs, at most `batch_size` each, of similar lengths."""
    batches: list[list[Job]] = []
    for job in sorted(jobs, key=lambda j: j.frames):
        if (batches and len(batches[-1]) < batch_size
                and job.frames <= batches[-1][0].frames * LENGTH_TOLERANCE):
            batches[-1].append(job)
        else:
            batches.append([job])
    return batches


def remove_stale_temporaries(target: Path) -> None:
    """Temporaries `atomic.atomic_file` leaves beside `target` when its writer is killed."""
    if target.parent.is_dir():
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp.wav"):
            stale.unlink(missing_ok=True)


def run_batch(vocoder, sources: list[tuple[Path, Path]], out_dir: Path, size: Callable[[Path], int],
              load: Callable[[Path], np.ndarray], steps, seed: int | None, batch_size: int = 4,
              overwrite: bool = False, stream: TextIO | None = None) -> Summary:
    """Vocode every source into out_dir. `size(path)` gives a file's length in mel frames (raising
    ValueError for a bad file), `load(path)` its mel (frames, n_mels)."""
    stream = stream or sys.stderr
    summary = Summary()
    begin = time.monotonic()
    jobs: list[Job] = []
    hop, rate = vocoder.hop_length, vocoder.sample_rate
    for source, relative in sources:
        target = out_dir / relative
        remove_stale_temporaries(target)
        if target.exists() and not overwrite:
            summary.skipped.append(target)
            continue
        try:
            jobs.append(Job(source, target, size(source)))
        except (OSError, ValueError) as error:
            summary.failed.append((source, _one_line(error)))
            message = _one_line(error)
            print(f"error: {message}" if str(source) in message else f"error: {source}: {message}", file=stream)
    total_seconds = sum(j.frames for j in jobs) * hop / rate
    bar = progress_line(total_seconds, stream, bar_format="{desc}{n:.1f}/{total:.1f} s of audio{postfix} "
                        "[{elapsed}<{remaining}]", desc=f"0/{len(jobs)} files ", disable=not jobs)
    done = 0

    def report(source: Path, error: BaseException) -> None:
        message = _one_line(error)
        summary.failed.append((source, message))
        bar.write(f"error: {message}" if str(source) in message else f"error: {source}: {message}", file=stream)

    try:
        for batch in _batches(jobs, batch_size):
            mels, ready = [], []
            for job in batch:
                try:
                    mels.append(load(job.source))
                    ready.append(job)
                except (OSError, ValueError) as error:
                    report(job.source, error)
            if ready:
                try:
                    audios = vocoder.vocode(mels, steps=steps, seed=seed)
                except Exception:  # noqa: BLE001 - find which item it was: vocode them one by one
                    audios = []
                    for job, mel in zip(ready, mels):
                        try:
                            audios.append(vocoder.vocode(mel, steps=steps, seed=seed))
                        except Exception as error:  # noqa: BLE001 - reported, the others continue
                            report(job.source, error)
                            audios.append(None)
                for job, audio in zip(ready, audios):
                    if audio is None:
                        continue
                    try:
                        save_audio(job.target, audio, rate)
                    except OSError as error:
                        report(job.source, error)
                        continue
                    summary.written.append(job.target)
                    summary.audio_seconds += len(audio) / rate
            done += len(batch)
            bar.set_description_str(f"{done}/{len(jobs)} files ", refresh=False)
            finished = bar.n + sum(j.frames for j in batch) * hop / rate
            bar.set_postfix_str(f"{finished / max(time.monotonic() - begin, 1e-9):.2f}x real time", refresh=False)
            bar.update(finished - bar.n)
    finally:
        bar.close()
    summary.seconds = time.monotonic() - begin
    return summary
