"""Batch vocoding throughput: one `diffwave-vocoder vocode DIR -o OUT_DIR` call against one CLI call per file.

Writes N random mels (lengths drawn between --min-frames and --max-frames) and a random-init model
(small by default, `--default-size` for the reference size, or `--checkpoint DIR`) into a temporary
directory, then times, in the same run, the whole directory in one call and the same files in N
separate calls (each one starts Python, imports TensorFlow and loads the model). Prints a markdown
table with seconds, files per second and audio seconds per second of each, and their ratio.

    python benchmarks/batch_throughput.py                       # 100 files, small model (a few minutes)
    python benchmarks/batch_throughput.py --files 10            # smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "diffwave_vocoder.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--min-frames", type=int, default=40, help="shortest mel (frames; 86 frames = 1 s)")
    parser.add_argument("--max-frames", type=int, default=120, help="longest mel")
    parser.add_argument("--steps", default="fast", choices=["fast", "full"])
    parser.add_argument("--batch-size", type=int, default=4, help="the batch call's --batch-size")
    parser.add_argument("--default-size", action="store_true", help="random default-size model (64 x 30)")
    parser.add_argument("--checkpoint", help="a vocoder checkpoint instead of a random model")
    args = parser.parse_args()

    from diffwave_vocoder import DiffWaveConfig, Vocoder

    with tempfile.TemporaryDirectory(prefix="batch-throughput-") as tmp:
        root = Path(tmp)
        if args.checkpoint:
            checkpoint, model = Path(args.checkpoint), args.checkpoint
        else:
            config = DiffWaveConfig() if args.default_size else DiffWaveConfig(
                residual_channels=16, residual_layers=6, dilation_cycle_length=3)
            checkpoint = root / "model"
            Vocoder.from_config(config, seed=0).save(checkpoint)
            model = "random, " + ("default size (64 x 30)" if args.default_size else "small (16 x 6)")
        rng = np.random.default_rng(0)
        mels = root / "mels"
        mels.mkdir()
        frames = rng.integers(args.min_frames, args.max_frames + 1, args.files)
        for i, count in enumerate(frames):
            np.save(mels / f"utt{i:04d}.npy", rng.uniform(0, 1, (count, 80)).astype(np.float32))
        audio_seconds = float(frames.sum()) * 256 / 22050
        # 80-frame mels are square, so the layout is given, not guessed
        common = ["--model", str(checkpoint), "--steps", args.steps, "--seed", "0", "--layout", "tf"]

        begin = time.perf_counter()
        cli("vocode", str(mels), "-o", str(root / "batch"), "--batch-size", str(args.batch_size), *common)
        batch_s = time.perf_counter() - begin
        begin = time.perf_counter()
        for path in sorted(mels.glob("*.npy")):
            cli("vocode", str(path), "-o", str(root / "separate" / f"{path.stem}.wav"), *common)
        separate_s = time.perf_counter() - begin
        assert len(list((root / "batch").glob("*.wav"))) == args.files

    print(f"\n{args.files} files, {audio_seconds:.1f} s of audio ({args.min_frames}-{args.max_frames} frames each), "
          f"{args.steps} schedule. Model: {model}. Machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end.\n")
    print("| how | wall time | files/s | audio s per s |")
    print("|---|---|---|---|")
    for name, seconds in ((f"one call on the directory (--batch-size {args.batch_size})", batch_s),
                          (f"{args.files} separate calls", separate_s)):
        print(f"| {name} | {seconds:.1f} s | {args.files / seconds:.2f} | {audio_seconds / seconds:.2f} |")
    print(f"\nThroughput ratio (separate / one call): **{separate_s / batch_s:.1f}x**")


if __name__ == "__main__":
    main()
