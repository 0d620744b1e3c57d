"""Training throughput (audio samples per second) of our learner vs lmnt-com/diffwave's, on this CPU.

Both train the reference-size model on the same batch: the same audio crops, mels,
diffusion steps and noise sizes, one optimiser step at a time, alternating between the two so that
load from other processes hits both alike. Ours is `Trainer.train_step`, the compiled step the
trainer runs; the reference is `DiffWaveLearner.train_step` from the installed diffwave==0.1.7 with
its model and Adam. Its learner module imports its data loader (torchaudio) and TensorBoard writer,
which the step does not use and which are not installed here: they are replaced by empty modules.

    python benchmarks/train_speed.py [--batch-size 4] [--crop-frames 62] [--rounds 3]
        [--precisions float32,bfloat16,float16] [--residual-channels 64 --residual-layers 30 --dilation-cycle-length 10]

`--precisions` times our step under each mixed-precision policy too (the trainer's
`--mixed-precision`), each in its own process, in the same alternation.

The reference trains at batch 16; on a CPU both learners together need over 20 GB of memory for
that, so the default here is 4 (the ratio is what matters; pass --batch-size 16 if memory allows).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def reference_learner(batch_size: int, crop_frames: int, sizes: dict[str, int]):
    """The reference's learner, model and Adam, and a step function on a fixed batch."""
    sys.modules.setdefault("diffwave.dataset", types.ModuleType("diffwave.dataset"))
    sys.modules["diffwave.dataset"].from_path = None
    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = None
    sys.modules.setdefault("torch.utils.tensorboard", tensorboard)
    import torch
    from diffwave.learner import DiffWaveLearner
    from diffwave.model import DiffWave
    from diffwave.params import AttrDict, params

    params = AttrDict(params)
    params.override(sizes)
    model = DiffWave(params)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    with warnings.catch_warnings():  # torch.cuda.amp deprecation notices for the disabled fp16 path
        warnings.simplefilter("ignore")
        learner = DiffWaveLearner(tempfile.mkdtemp(), model, None, optimizer, params)
    generator = torch.Generator().manual_seed(0)
    features = {"audio": torch.rand(batch_size, crop_frames * params.hop_samples, generator=generator) * 2 - 1,
                "spectrogram": torch.rand(batch_size, params.n_mels, crop_frames, generator=generator)}
    return lambda: learner.train_step(features).item()


def our_learner(batch_size: int, crop_frames: int, data_dir: Path, precision: str, sizes: dict[str, int]):
    """Our Trainer on a throwaway data set, stepping on one fixed batch of the same size."""
    import numpy as np
    import soundfile
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # CPU against CPU (torch here is CPU-only)
    from diffwave_vocoder.training.data import example_indices, make_dataset
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings
    from diffwave_vocoder.config import DiffWaveConfig

    config = DiffWaveConfig(**sizes)
    rng = np.random.default_rng(0)
    for i in range(2):
        noise = rng.uniform(-0.5, 0.5, 3 * config.sample_rate)
        soundfile.write(str(data_dir / f"clip{i}.wav"), noise, config.sample_rate)
    settings = TrainingSettings(batch_size=batch_size, crop_frames=crop_frames, val_fraction=0.0,
                                mixed_precision=None if precision == "float32" else precision)
    trainer = Trainer(data_dir / "run", data_dir, config=config, settings=settings)
    batch = next(iter(make_dataset(trainer.train_clips, example_indices(0, batch_size, batch_size, 0, 1),
                                   batch_size, config.max_steps)))
    iterator = iter(trainer.strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat()))
    return lambda: float(trainer.train_step(iterator)[0])


def worker(kind: str, batch_size: int, crop_frames: int, sizes: dict[str, int]) -> None:
    """Build one learner (`reference` or `ours:PRECISION`), warm it up, then time one step per line
    read from stdin."""
    with tempfile.TemporaryDirectory() as scratch:
        step = (reference_learner(batch_size, crop_frames, sizes) if kind == "reference"
                else our_learner(batch_size, crop_frames, Path(scratch), kind.split(":")[1], sizes))
        step()  # graph building, allocator warm-up
        print("ready", flush=True)
        for _ in sys.stdin:
            start = time.perf_counter()
            loss = step()
            elapsed = time.perf_counter() - start
            if loss != loss:
                raise RuntimeError(f"{kind}: NaN loss")
            print(elapsed, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=4, help="per step, for both (the reference trains at 16)")
    parser.add_argument("--crop-frames", type=int, default=62, help="the reference's default: 62 (15,872 samples)")
    parser.add_argument("--rounds", type=int, default=3, help="timed steps of each learner (after one warm-up)")
    parser.add_argument("--precisions", default="float32",
                        help="our step's compute dtypes, comma-separated: float32, bfloat16, float16")
    parser.add_argument("--residual-channels", type=int, default=64, help="model size, both sides (default 64)")
    parser.add_argument("--residual-layers", type=int, default=30, help="default 30")
    parser.add_argument("--dilation-cycle-length", type=int, default=10, help="default 10")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = {"residual_channels": args.residual_channels, "residual_layers": args.residual_layers,
             "dilation_cycle_length": args.dilation_cycle_length}
    if args.worker:
        return worker(args.worker, args.batch_size, args.crop_frames, sizes)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = set(precisions) - {"float32", "bfloat16", "float16"}
    if unknown or not precisions:
        parser.error(f"--precisions takes float32, bfloat16 and float16, got {args.precisions!r}")

    # One process per learner, so that neither's thread pools compete with the other's; they take
    # turns one step at a time, so that load from other processes on the machine hits both alike.
    names = {f"ours:{p}": f"ours (TF/Keras, {p})" for p in precisions}
    names["reference"] = "reference (torch)"
    workers = {kind: subprocess.Popen(
        [sys.executable, __file__, "--worker", kind, "--batch-size", str(args.batch_size),
         "--crop-frames", str(args.crop_frames), *(f"--{k.replace('_', '-')}={v}" for k, v in sizes.items())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for kind in names}
    load_before = "load average %.2f %.2f %.2f" % os.getloadavg()
    for kind, process in workers.items():
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} learner failed to start (rc {process.wait()})")
    times: dict[str, list[float]] = {kind: [] for kind in names}
    for _ in range(args.rounds):
        for kind, process in workers.items():
            time.sleep(1.0)  # let the other process's threads go idle
            try:
                process.stdin.write("step\n")
                process.stdin.flush()
                times[kind].append(float(process.stdout.readline()))
            except (BrokenPipeError, ValueError):
                raise RuntimeError(f"the {kind} learner died (rc {process.wait()}; -9 is usually out of memory: "
                                   "try a smaller --batch-size)") from None
    for process in workers.values():
        process.stdin.close()
        process.wait()

    samples = args.batch_size * args.crop_frames * 256
    print(f"model {sizes}; batch {args.batch_size} x {args.crop_frames} frames ({samples:,} samples per step), "
          f"CPU with {os.cpu_count()} cores; median of {args.rounds} alternating steps")
    print(f"  before: {load_before}; after: " + "load average %.2f %.2f %.2f" % os.getloadavg())
    rates = {}
    for kind, values in times.items():
        rates[kind] = samples / statistics.median(values)
        print(f"  {names[kind]:27s} {statistics.median(values):7.3f} s/step  {rates[kind]:10,.0f} samples/s  "
              f"(steps: {', '.join(f'{v:.2f}' for v in values)} s)")
    for precision in precisions:
        line = f"throughput ratio ours ({precision}) / reference: {rates[f'ours:{precision}'] / rates['reference']:.2f}"
        if precision != "float32" and "float32" in precisions:
            line += f"; / ours (float32): {rates[f'ours:{precision}'] / rates['ours:float32']:.2f}"
        print(line)


if __name__ == "__main__":
    main()
