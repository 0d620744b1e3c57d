"""A speech corpus in LJSpeech's layout, made from Debian's open synthesizers.

For training and evaluating vocoders where no dataset can be downloaded: each clip is one
procedurally generated English sentence spoken by one of several voices, resampled with sox to
the target rate, mono, 16-bit PCM, peak-normalised to -3 dBFS. The corpus is written as

    OUT_DIR/wavs/<id>.wav
    OUT_DIR/metadata.csv     id|text|text, as in LJSpeech-1.1
    OUT_DIR/corpus.json      seed, voices and tool versions that made it

Voices: flite's (slt, rms, awb, kal16: 16 kHz, nothing above 8 kHz), espeak-ng's English variants
(formant synthesis, full band) and, where installed, festival's voices built from real recordings
(cmu_us_slt_arctic_hts at 32 kHz, full band; kal and ked diphones at 16 kHz). The same seed and
voice list give the same texts, voices and synthesis settings; on the same tool versions, the same
audio. The whole directory appears at once (an atomic rename), so an interrupted run never leaves a
partial corpus where a complete one is expected.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..io.atomic import atomic_directory

SUBJECTS = ["the old farmer", "a quiet student", "my neighbour", "the captain", "every child",
            "the small committee", "a tired doctor", "the river pilot", "our teacher", "the baker",
            "a young engineer", "the museum guard", "his sister", "the night nurse", "a stranger"]
VERBS = ["carried", "painted", "opened", "described", "forgot", "repaired", "noticed", "sold",
         "measured", "borrowed", "cleaned", "followed", "visited", "ordered", "counted"]
OBJECTS = ["a heavy wooden box", "the broken window", "seven yellow pencils", "the northern bridge",
           "a letter from Boston", "the silver kettle", "two hundred tickets", "the garden gate",
           "an old map of the harbour", "the evening newspaper", "a basket of green apples",
           "the last train home", "forty wet umbrellas", "the copper roof", "a jar of honey"]
TAILS = ["before the storm arrived", "on a cold Tuesday morning", "while everyone was asleep",
         "without saying a word", "near the end of August", "because nobody else would",
         "in less than an hour", "after the long meeting", "for the third time this year",
         "just as the bells rang", "at a quarter past nine", "under the bright kitchen lamp"]
QUESTIONS = ["Did you really think it would rain all week?", "Where did they put the spare keys?",
             "How many people came to the concert last night?", "Is this the road to the station?",
             "Why would anyone paint the fence purple?", "What time does the market open on Sunday?"]

# Debian packages that provide each program (named in the error when one is missing).
APT_PACKAGES = {
    "flite": "flite",
    "espeak-ng": "espeak-ng",
    "sox": "sox",
    "text2wave": "festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k",
}
FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"),)


class MissingToolError(RuntimeError):
    """A synthesizer or sox is not installed; the message names the apt packages."""


@dataclass(frozen=True)
class Voice:
    """One synthesizer voice: `name` is `engine:voice`, e.g. `flite:slt`."""

    engine: str  # "flite", "espeak-ng" or "festival"
    voice: str

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}"

    @property
    def program(self) -> str:
        return "text2wave" if self.engine == "festival" else self.engine

    def installed(self) -> bool:
        if shutil.which(self.program) is None:
            return False
        if self.engine == "festival":
            return any(any(root.glob(f"*/{self.voice}")) for root in FESTIVAL_VOICE_DIRS if root.is_dir())
        return True

    def settings(self, rng: random.Random) -> dict:
        """Per-clip prosody, drawn from the corpus's random stream (espeak-ng: rate and pitch)."""
        if self.engine == "espeak-ng":
            return {"speed": rng.randint(140, 185), "pitch": rng.randint(35, 65)}
        return {}

    def synthesize(self, text: str, path: Path, settings: dict) -> None:
        if self.engine == "flite":
            command, stdin = ["flite", "-voice", self.voice, "-t", text, "-o", str(path)], None
        elif self.engine == "espeak-ng":
            command, stdin = ["espeak-ng", "-v", self.voice, "-s", str(settings["speed"]),
                              "-p", str(settings["pitch"]), "-w", str(path), text], None
        else:
            command, stdin = ["text2wave", "-eval", f"(voice_{self.voice})", "-o", str(path)], text
        _run(command, stdin)


FLITE_VOICES = [Voice("flite", v) for v in ("slt", "rms", "awb", "kal16")]
ESPEAK_VOICES = [Voice("espeak-ng", v) for v in ("en-us", "en-us+f3", "en-gb+m3", "en-gb-x-rp+f2",
                                                 "en-us+m5", "en-gb-scotland")]
FESTIVAL_VOICES = [Voice("festival", v) for v in ("cmu_us_slt_arctic_hts", "kal_diphone", "ked_diphone")]
VOICES = FLITE_VOICES + ESPEAK_VOICES + FESTIVAL_VOICES
VOICES_BY_NAME = {voice.name: voice for voice in VOICES}


def _run(command: list[str], stdin: str | None = None) -> None:
    try:
        subprocess.run(command, input=stdin, text=True, check=True, capture_output=True)
    except FileNotFoundError:
        raise MissingToolError(_missing_message([command[0]])) from None
    except subprocess.CalledProcessError as error:
        detail = " ".join((error.stderr or "").split())[:200]
        raise RuntimeError(f"{command[0]} failed (exit {error.returncode}): {detail}") from None


def _missing_message(programs: Sequence[str]) -> str:
    packages = " ".join(dict.fromkeys(APT_PACKAGES[p] for p in programs))
    return f"{', '.join(programs)} not found; install with: apt-get install -y {packages}"


def sentence(rng: random.Random) -> str:
    """One procedurally generated English sentence (15% questions)."""
    if rng.random() < 0.15:
        return rng.choice(QUESTIONS)
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
    return text[0].upper() + text[1:]


def default_voices() -> list[Voice]:
    """flite and espeak-ng voices, plus festival's where festival and its voices are installed."""
    return [voice for voice in VOICES if voice.engine != "festival" or voice.installed()]


def resolve_voices(names: Sequence[str] | None) -> list[Voice]:
    """Voices by name (`engine:voice`, or an engine name for all its voices); None: `default_voices()`."""
    if names is None:
        return default_voices()
    voices: list[Voice] = []
    for name in names:
        matches = [VOICES_BY_NAME[name]] if name in VOICES_BY_NAME else [v for v in VOICES if v.engine == name]
        if not matches:
            raise ValueError(f"unknown voice {name!r}; expected one of {', '.join(VOICES_BY_NAME)} "
                             f"or an engine (flite, espeak-ng, festival)")
        voices.extend(v for v in matches if v not in voices)
    return voices


def _check_tools(voices: Sequence[Voice]) -> None:
    programs = [p for p in dict.fromkeys([v.program for v in voices] + ["sox"]) if shutil.which(p) is None]
    if programs:
        raise MissingToolError(_missing_message(programs))
    absent = [v.name for v in voices if not v.installed()]
    if absent:
        raise MissingToolError(f"festival voice(s) {', '.join(absent)} not installed; install with: "
                               f"apt-get install -y {APT_PACKAGES['text2wave']}")


def _tool_versions(voices: Sequence[Voice]) -> dict[str, str]:
    queries = {"sox": ["sox", "--version"], "flite": ["flite", "--version"],
               "espeak-ng": ["espeak-ng", "--version"], "festival": ["festival", "--version"]}
    versions = {}
    for engine in dict.fromkeys(["sox"] + [v.engine for v in voices]):
        try:
            output = subprocess.run(queries[engine], capture_output=True, text=True, timeout=30)
            versions[engine] = " ".join((output.stdout or output.stderr).split())[:120]
        except (OSError, subprocess.SubprocessError):
            versions[engine] = "unknown"
    return versions


def corpus_texts(corpus_dir: str | Path) -> list[str]:
    """The texts of an LJSpeech-layout corpus (metadata.csv's second field)."""
    path = Path(corpus_dir) / "metadata.csv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    return [line.split("|")[1] for line in lines if line.count("|") >= 1]


def corpus_voices(corpus_dir: str | Path) -> dict[Path, str]:
    """The voice speaking each clip (wav path, resolved) of a corpus `make_speech_corpus` wrote:
    clip i of metadata.csv is spoken by voice i % len(voices), the voices corpus.json lists."""
    root = Path(corpus_dir)
    try:
        voices = json.loads((root / "corpus.json").read_text())["voices"]
        lines = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{root} is not a corpus made by `diffwave-vocoder corpus`: {error}") from None
    if not isinstance(voices, list) or not voices:
        raise ValueError(f"{root / 'corpus.json'} lists no voices")
    clips = [line.split("|")[0] for line in lines if line.strip()]
    return {(root / "wavs" / f"{clip}.wav").resolve(): voices[i % len(voices)] for i, clip in enumerate(clips)}


def make_speech_corpus(out_dir: str | Path, clips: int = 200, seed: int = 0, sample_rate: int = 22050,
                       voices: Sequence[str] | None = None, exclude_texts: Iterable[str] = (),
                       overwrite: bool = False, progress: Callable[[int], None] | None = None) -> Path:
    """Write an LJSpeech-layout corpus of `clips` synthetic utterances to `out_dir`.

    Clip i is spoken by voice `i % len(voices)`; texts and prosody come from `random.Random(seed)`.
    `voices` are names as in `VOICES_BY_NAME` (or engine names); None takes `default_voices()`.
    Sentences in `exclude_texts` (e.g. a training corpus's, see `corpus_texts`) are drawn again, so
    an evaluation corpus can hold texts never trained on.
    An existing non-empty `out_dir` is an error unless `overwrite`, which replaces it atomically.
    `progress` is called with the number of clips finished after each one.
    """
    if clips < 1:
        raise ValueError(f"expected at least 1 clip, got {clips}")
    if sample_rate < 8000:
        raise ValueError(f"expected a sample rate of at least 8000 Hz, got {sample_rate}")
    target = Path(out_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise FileExistsError(f"{target} already exists and is not empty; choose another directory "
                              "or pass overwrite=True (--overwrite)")
    chosen = resolve_voices(voices)
    if not chosen:
        raise MissingToolError(_missing_message(["flite", "espeak-ng"]))
    _check_tools(chosen)

    excluded = set(exclude_texts)
    rng = random.Random(seed)
    plan = []  # everything random is drawn up front, in clip order, so parallel synthesis is reproducible
    for i in range(clips):
        text = sentence(rng)
        for _ in range(10_000):
            if text not in excluded:
                break
            text = sentence(rng)
        else:
            raise ValueError(f"cannot draw a sentence outside the {len(excluded)} excluded texts")
        voice = chosen[i % len(chosen)]
        plan.append((f"SC{seed:02d}-{i:04d}", text, voice, voice.settings(rng)))

    with atomic_directory(target) as tmp, tempfile.TemporaryDirectory() as scratch:
        wavs = tmp / "wavs"
        wavs.mkdir()

        def render(item: tuple) -> None:
            clip, text, voice, settings = item
            raw = Path(scratch) / f"{clip}.raw.wav"
            voice.synthesize(text, raw, settings)
            _run(["sox", "-R", str(raw), "-r", str(sample_rate), "-c", "1", "-b", "16",
                  str(wavs / f"{clip}.wav"), "norm", "-3"])
            raw.unlink()

        with ThreadPoolExecutor(max_workers=4) as pool:
            for done, _ in enumerate(pool.map(render, plan), start=1):
                if progress is not None:
                    progress(done)
        (tmp / "metadata.csv").write_text("".join(f"{clip}|{text}|{text}\n" for clip, text, _, _ in plan))
        manifest = {"clips": clips, "seed": seed, "sample_rate": sample_rate,
                    "voices": [v.name for v in chosen], "excluded_texts": len(excluded),
                    "tools": _tool_versions(chosen),
                    "layout": "LJSpeech-1.1 (wavs/*.wav, metadata.csv id|text|text)"}
        (tmp / "corpus.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target
