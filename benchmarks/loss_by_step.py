"""The training loss of vocoder checkpoints at chosen diffusion steps, on fixed crops of held-out clips:
where along the noise schedule a model has learned least (a diagnostic for training levers).

    python benchmarks/loss_by_step.py CKPT... --data DIR [--steps 0,1,2,4,8,16,32,49] [--crop-frames 32]

CKPT: vocoder checkpoints, training checkpoints or runs (their newest checkpoint). The crops and noise are
the trainer's validation examples (`training.data.evaluation_dataset`: one fixed crop of `--crop-frames`
mel frames per clip of DIR and its noise, keyed by `--seed`, drawn from the checkpoint's own prior, so
energy- and standard-prior checkpoints are each scored on their own objective); only the diffusion step is
set here. The loss is the trainer's (`training.trainer.diffusion_loss`, L1 in the prior's units). A model
that predicted zero noise would score E|N(0, 1)| = 0.798 at every step.
"""
from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

from diffwave_vocoder.schedule import noise_levels
from diffwave_vocoder.training.checkpoints import load_for_export
from diffwave_vocoder.training.data import ClipSet, evaluation_dataset
from diffwave_vocoder.training.trainer import diffusion_loss


def losses_by_step(vocoder, data: str, steps: list[int], crop_frames: int, seed: int) -> list[float]:
    """Mean loss over the crops of `data` at each diffusion step of `steps`."""
    config = vocoder.config
    clips = ClipSet.scan(data, config, crop_frames=crop_frames, seed=seed, name="--data")  # none usable: ValueError
    levels = tf.constant(noise_levels(config))
    totals = np.zeros(len(steps))
    for batch in evaluation_dataset(clips, 16, config.max_steps):
        size = tf.shape(batch["audio"])[0]
        for i, t in enumerate(steps):
            totals[i] += float(tf.reduce_sum(diffusion_loss(
                vocoder.model, {**batch, "step": tf.fill([size], t)}, levels, "l1", config.hop_length,
                training=False)))
    return list(totals / len(clips))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True, help="wavs (a directory or an LJSpeech folder) to crop")
    parser.add_argument("--steps", default="0,1,2,4,8,16,32,49", help="diffusion steps (training schedule indices)")
    parser.add_argument("--crop-frames", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    print("| checkpoint | " + " | ".join(f"t={t}" for t in steps) + " | mean |")
    print("|---|" + "---|" * (len(steps) + 1))
    for path in args.checkpoints:
        try:
            losses = losses_by_step(load_for_export(path), args.data, steps, args.crop_frames, args.seed)
        except ValueError as error:  # an unreadable checkpoint, no usable clip: one line, as the CLI's
            raise SystemExit(f"loss_by_step.py: {error}") from None
        print(f"| {path} | " + " | ".join(f"{v:.3f}" for v in losses) + f" | {np.mean(losses):.3f} |", flush=True)


if __name__ == "__main__":
    main()
