"""Streaming latency: time to first audio and total time of `Vocoder.stream` beside `Vocoder.vocode`.

Both run in this process on the same model, mel and seed, one after the other for each row (after a
warm-up that traces both), with each TensorFlow op on half the cores as the CLI runs them. Prints a
markdown table: time to first audio (TTFA), streaming total, vocode total, their ratio (wall and
CPU time; CPU time is the steadier one on a shared machine), and the largest difference between the
concatenated blocks and vocode's audio.

    python benchmarks/stream_latency.py                               # default-size random model, 5 s and 60 s
    python benchmarks/stream_latency.py --checkpoint checkpoints/ljspeech --schedules fast
    python benchmarks/stream_latency.py --seconds 1 3 --schedules fast --small   # smoke run
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a vocoder checkpoint directory (default: random default-size weights)")
    parser.add_argument("--small", action="store_true", help="a small random model (smoke runs)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 60.0], help="input lengths")
    parser.add_argument("--schedules", nargs="+", default=["fast", "full"], choices=["fast", "full"])
    parser.add_argument("--block-frames", type=int, help="frames per streaming pass (default: the vocoder's)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest of each is kept")
    args = parser.parse_args()

    from diffwave_vocoder import DiffWaveConfig, Vocoder
    from diffwave_vocoder.sampler import configure_cpu_threads

    configure_cpu_threads()
    if args.checkpoint:
        vocoder, model = Vocoder.load(args.checkpoint), args.checkpoint
    else:
        config = DiffWaveConfig(residual_channels=16, residual_layers=6, dilation_cycle_length=3) \
            if args.small else DiffWaveConfig()
        vocoder = Vocoder.from_config(config, seed=0)
        model = "random, " + ("small (16 x 6)" if args.small else "default size (64 x 30)")
        layer = vocoder.model.get_layer("output_projection")  # zero in a fresh model: make the output vary
        layer.set_weights([np.random.default_rng(0).normal(0, 0.1, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    rate, hop = vocoder.sample_rate, vocoder.hop_length
    rng = np.random.default_rng(0)
    warm = rng.uniform(0, 1, (40, vocoder.n_mels)).astype(np.float32)
    rows = []
    for steps in args.schedules:
        vocoder.vocode(warm, steps=steps, seed=0)
        for _ in vocoder.stream(warm, steps=steps, seed=0, block_frames=args.block_frames):
            pass
        lookahead = vocoder.stream_session(steps=steps).lookahead_frames
        for seconds in args.seconds:
            mel = rng.uniform(0, 1, (max(1, round(seconds * rate / hop)), vocoder.n_mels)).astype(np.float32)
            best = None
            for _ in range(args.repeat):
                begin, cpu = time.perf_counter(), time.process_time()
                reference = vocoder.vocode(mel, steps=steps, seed=1)
                vocode_s, vocode_cpu = time.perf_counter() - begin, time.process_time() - cpu
                begin, cpu = time.perf_counter(), time.process_time()
                blocks, first = [], None
                for block in vocoder.stream(mel, steps=steps, seed=1, block_frames=args.block_frames):
                    if first is None:
                        first, first_cpu = time.perf_counter() - begin, time.process_time() - cpu
                    blocks.append(block)
                stream_s, stream_cpu = time.perf_counter() - begin, time.process_time() - cpu
                error = float(np.abs(np.concatenate(blocks) - reference).max())
                run = (first, first_cpu, stream_s, vocode_s, stream_cpu / vocode_cpu, error, len(blocks))
                best = run if best is None else tuple(min(a, b) for a, b in zip(best, run))
            rows.append((steps, seconds, lookahead, *best))
            print(f"{steps} {seconds:g} s: first audio {best[0]:.2f} s, stream {best[2]:.2f} s, "
                  f"vocode {best[3]:.2f} s", file=sys.stderr)
    print(f"\nModel: {model}. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end.\n")
    print("| schedule | input | lookahead (frames) | time to first audio | its CPU time | stream total "
          "| vocode total | stream / vocode | CPU time stream / vocode | blocks | max difference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for steps, seconds, lookahead, first, first_cpu, stream_s, vocode_s, cpu_ratio, error, blocks in rows:
        print(f"| {steps} | {seconds:g} s | {lookahead} | {first:.2f} s | {first_cpu:.2f} s | {stream_s:.2f} s "
              f"| {vocode_s:.2f} s | {stream_s / vocode_s:.3f} | {cpu_ratio:.3f} | {blocks} | {error:.1e} |")


if __name__ == "__main__":
    main()
