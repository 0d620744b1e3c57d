"""Batch and streaming command line: many inputs into a directory (bad files reported, existing
outputs skipped, kill -9 then re-run completes with no partial files) and audio streamed to stdout."""
import io
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from diffwave_vocoder.vocoder import Vocoder
from helpers import run_command, run_main


def mel(frames, seed):
    return np.random.default_rng(seed).uniform(0, 1, (frames, 80)).astype(np.float32)


def test_directory_with_a_corrupt_file_then_a_rerun_that_skips(tmp_path, small_checkpoint):
    data = tmp_path / "mels"
    (data / "sub").mkdir(parents=True)
    mels = {"a": mel(12, 1), "b": mel(13, 2), "sub/c": mel(30, 3)}
    for name, m in mels.items():
        np.save(data / f"{name}.npy", m)
    np.save(data / "d.wav.spec.npy", mel(11, 4).T)  # the reference's preprocess layout and name
    (data / "broken.npy").write_bytes(b"\x93NUMPY not really")
    out = tmp_path / "out"
    result = run_main("vocode", "--model", small_checkpoint, data, "-o", out, "--seed", 7, "--layout", "auto")
    stderr = result.stderr
    assert result.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "broken.npy" in errors[0] and "1 of 5 inputs failed" in errors[1]
    assert "Traceback" not in stderr
    assert "wrote 4 files" in result.stdout
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        ["a.wav", "b.wav", "d.wav", "sub/c.wav"]
    vocoder = Vocoder.load(small_checkpoint)
    for name, m in mels.items():  # batched with similar lengths, yet each equals vocoding it alone
        audio, rate = soundfile.read(out / f"{name}.wav", dtype="float32")
        assert rate == 22050 and np.abs(audio - vocoder.vocode(m, seed=7)).max() <= 1e-4

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    again = run_main("vocode", "--model", small_checkpoint, data, "-o", out, "--seed", 7, "--layout", "auto")
    assert again.returncode == 1 and "skipped 4 that exist" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_completes_with_no_partial_files(tmp_path, small_checkpoint):
    data, out = tmp_path / "mels", tmp_path / "out"
    data.mkdir()
    count = 16
    for i in range(count):
        np.save(data / f"m{i:02d}.npy", mel(60 + i, i))
    process = subprocess.Popen([sys.executable, "-m", "diffwave_vocoder.cli", "vocode", "--model",
                                str(small_checkpoint), str(data / "*.npy"), "-o", str(out), "--batch-size", "1",
                                "--steps", "full"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # Finished outputs only: pathlib's "*" also matches the hidden temporary an output is written to first.
    while not list(out.glob("m*.wav")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(out.glob("m*.wav"))
    assert 0 < len(done) < count, "kill the run while it is vocoding"
    for path in done:  # what exists is complete
        assert soundfile.info(path).frames == (60 + int(path.stem[1:])) * 256
    (out / f".m{count - 1:02d}.wav.x1y2z3.tmp.wav").write_bytes(b"half a file")  # as a kill mid-write leaves
    result = run_main("vocode", "--model", small_checkpoint, data / "*.npy", "-o", out, "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    assert f"wrote {count - len(done)} files" in result.stdout
    assert f"skipped {len(done)}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"m{i:02d}.wav" for i in range(count)]


def test_stream_to_stdout_as_wav_and_raw_pcm(tmp_path, small_checkpoint):
    m = mel(40, 9)
    np.save(tmp_path / "m.npy", m)
    args = ("vocode", "--model", small_checkpoint, tmp_path / "m.npy", "-o", "-", "--stream", "--seed", 3)
    wav = run_command(*args, text=False)
    assert wav.returncode == 0, wav.stderr
    audio, rate = soundfile.read(io.BytesIO(wav.stdout), dtype="float32")
    assert rate == 22050 and len(audio) == 40 * 256
    expected = Vocoder.load(small_checkpoint).vocode(m, seed=3)
    assert np.abs(audio - expected).max() <= 1.0 / 32768 + 1e-5
    raw = run_command(*args, "--raw", text=False)
    assert raw.returncode == 0 and raw.stdout == wav.stdout[44:]
    wrong = run_main("vocode", "--model", small_checkpoint, tmp_path / "m.npy", "-o", tmp_path / "x.wav", "--stream")
    assert wrong.returncode != 0 and wrong.stderr.strip().count("\n") == 0 and "-o -" in wrong.stderr
