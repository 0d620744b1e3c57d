"""The speech-corpus generator: LJSpeech layout, reproducible from its seed, atomic, clear errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from diffwave_vocoder.evaluation.corpus import VOICES, corpus_texts, make_speech_corpus, resolve_voices
from helpers import run_command


def test_ljspeech_layout_and_every_voice(tmp_path):
    voices = [voice.name for voice in VOICES if voice.installed()]
    corpus = make_speech_corpus(tmp_path / "c", clips=len(voices), seed=5, sample_rate=22050, voices=voices)
    lines = (corpus / "metadata.csv").read_text().splitlines()
    assert len(lines) == len(voices)
    for line in lines:
        clip, text, normalized = line.split("|")
        assert text == normalized and text.endswith((".", "?"))
        audio, rate = soundfile.read(corpus / "wavs" / f"{clip}.wav", dtype="float32")
        info = soundfile.info(corpus / "wavs" / f"{clip}.wav")
        assert rate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
        assert 1.0 < len(audio) / rate < 12.0
        # Peak-normalised to -3 dBFS before resampling (the resampler moves peaks a little), and speech.
        assert abs(20 * np.log10(np.abs(audio).max()) + 3) < 0.6
        assert np.sqrt(np.mean(audio ** 2)) > 0.01
    manifest = __import__("json").loads((corpus / "corpus.json").read_text())
    assert manifest["voices"] == voices and manifest["seed"] == 5 and "sox" in manifest["tools"]


def test_same_seed_same_corpus_other_seed_other_texts(tmp_path):
    voices = ["flite:slt", "espeak-ng:en-us+f3"]
    a = make_speech_corpus(tmp_path / "a", clips=3, seed=2, voices=voices)
    b = make_speech_corpus(tmp_path / "b", clips=3, seed=2, voices=voices)
    c = make_speech_corpus(tmp_path / "c", clips=3, seed=3, voices=voices)
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text()
    for wav in sorted((a / "wavs").iterdir()):
        assert wav.read_bytes() == (b / "wavs" / wav.name).read_bytes()
    texts = lambda d: [line.split("|")[1] for line in (d / "metadata.csv").read_text().splitlines()]  # noqa: E731
    assert texts(a) != texts(c)


def test_other_sample_rate(tmp_path):
    corpus = make_speech_corpus(tmp_path / "c", clips=1, sample_rate=16000, voices=["flite:rms"])
    assert soundfile.info(next((corpus / "wavs").iterdir())).samplerate == 16000


def test_refuses_to_overwrite_unless_asked(tmp_path):
    corpus = make_speech_corpus(tmp_path / "c", clips=1, voices=["flite:slt"])
    with pytest.raises(FileExistsError, match="not empty"):
        make_speech_corpus(corpus, clips=2, voices=["flite:slt"])
    make_speech_corpus(corpus, clips=2, voices=["flite:awb"], overwrite=True)
    assert len((corpus / "metadata.csv").read_text().splitlines()) == 2


def test_voice_names_and_engines():
    assert [v.name for v in resolve_voices(["flite"])] == ["flite:slt", "flite:rms", "flite:awb", "flite:kal16"]
    with pytest.raises(ValueError, match="unknown voice 'nope'"):
        resolve_voices(["nope"])


def test_kill_9_mid_run_leaves_no_corpus_at_the_target(tmp_path):
    target = tmp_path / "corpus"
    process = subprocess.Popen([sys.executable, "-m", "diffwave_vocoder.cli", "corpus", str(target),
                                "--clips", "400", "--voices", "espeak-ng"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until clips are being written into the temporary sibling
        if any(len(list(p.glob("wavs/*.wav"))) > 3 for p in tmp_path.glob(".corpus.*")):
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not target.exists()
    # The next run writes a whole corpus in its place.
    result = run_command("corpus", target, "--clips", "2", "--voices", "flite:slt")
    assert result.returncode == 0, result.stderr
    assert len((target / "metadata.csv").read_text().splitlines()) == 2


def test_cli_missing_tool_is_one_line_naming_the_packages(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python only: no flite, espeak-ng, sox
    result = run_command("corpus", tmp_path / "c", "--clips", "1", env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "apt-get install -y" in result.stderr and "espeak-ng" in result.stderr and "sox" in result.stderr
    assert not (tmp_path / "c").exists()


def test_cli_writes_corpus_and_reports_bad_arguments(tmp_path):
    result = run_command("corpus", tmp_path / "c", "--clips", "2",
                         "--voices", "flite:kal16,espeak-ng:en-gb-scotland")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 clips" in result.stdout
    assert len(list((tmp_path / "c" / "wavs").glob("*.wav"))) == 2
    for args in (["--clips", "0"], ["--voices", "bogus"]):
        bad = run_command("corpus", tmp_path / "d", *args)
        assert bad.returncode == 1 and bad.stderr.startswith("error:") and bad.stderr.count("\n") == 1


def test_evaluation_corpus_can_exclude_the_training_texts(tmp_path):
    train = make_speech_corpus(tmp_path / "train", clips=40, seed=0, voices=["espeak-ng:en-us"])
    seen = set(corpus_texts(train))
    result = run_command("corpus", tmp_path / "eval", "--clips", "30", "--seed", "0", "--voices", "espeak-ng:en-us",
                         "--exclude-texts-of", train)
    assert result.returncode == 0, result.stderr
    held_out = corpus_texts(tmp_path / "eval")
    assert len(held_out) == 30 and not seen & set(held_out)
    with pytest.raises(ValueError, match="cannot read"):
        corpus_texts(tmp_path / "missing")


def test_corpus_voices_names_who_speaks_each_clip(tmp_path):
    import librosa

    from diffwave_vocoder.evaluation.corpus import corpus_voices

    corpus = make_speech_corpus(tmp_path / "c", clips=4, seed=3, voices=["flite:slt", "flite:rms"])
    voices = corpus_voices(corpus)
    assert list(voices.values()) == ["flite:slt", "flite:rms", "flite:slt", "flite:rms"]  # clip i: voice i % 2
    assert sorted(voices) == sorted(path.resolve() for path in (corpus / "wavs").glob("*.wav"))

    def median_f0(path: Path) -> float:
        audio, rate = soundfile.read(path, dtype="float32")
        f0, _, _ = librosa.pyin(audio, fmin=60, fmax=400, sr=rate, frame_length=2048)
        return float(np.nanmedian(f0))

    # The labels follow the audio: slt is a woman's voice, rms a man's, an octave or so lower.
    pitch = {path: median_f0(path) for path in voices}
    assert min(pitch[p] for p, v in voices.items() if v == "flite:slt") > \
        1.3 * max(pitch[p] for p, v in voices.items() if v == "flite:rms")
    with pytest.raises(ValueError, match=f"{tmp_path} is not a corpus made by `diffwave-vocoder corpus`"):
        corpus_voices(tmp_path)
    (tmp_path / "corpus.json").write_text('{"voices": []}')
    (tmp_path / "metadata.csv").write_text("a|text|text\n")
    with pytest.raises(ValueError, match="corpus.json lists no voices"):
        corpus_voices(tmp_path)
