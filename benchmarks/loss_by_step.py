"""The training loss of vocoder checkpoints at chosen diffusion steps, on fixed crops of held-out clips:
where along the noise schedule a model has learned least (a diagnostic for training levers).

    python benchmarks/loss_by_step.py CKPT... --data DIR [--steps 0,1,2,4,8,16,32,49] [--crop-frames 32]

CKPT: vocoder checkpoints, training checkpoints or runs (their newest checkpoint). Each clip of DIR gives
one crop of `--crop-frames` mel frames at a position drawn with `--seed`, and every checkpoint and step sees
the same crops and the same noise, drawn from its own prior (so energy- and standard-prior checkpoints
are each scored on their own objective). The loss is the trainer's (`training.trainer.diffusion_loss`,
L1 in the prior's units). A model that predicted zero noise would score E|N(0, 1)| = 0.798 at every step.
"""
from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

from diffwave_vocoder.evaluation.evaluate import clip_paths
from diffwave_vocoder.features.mel import compute_mel
from diffwave_vocoder.io.audio import load_audio
from diffwave_vocoder.prior import prior_std, uses_prior
from diffwave_vocoder.schedule import noise_levels
from diffwave_vocoder.training.checkpoints import load_for_export
from diffwave_vocoder.training.trainer import diffusion_loss


def crops(data: str, vocoder, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio (clips, frames * hop), mel (clips, frames, n_mels)): one crop per clip long enough."""
    rng = np.random.default_rng(seed)
    hop, audio_crops, mel_crops = vocoder.hop_length, [], []
    for path in clip_paths(data):
        audio, _ = load_audio(path)
        mel = compute_mel(audio, vocoder.mel_convention)
        if len(mel) <= frames:
            continue
        start = int(rng.integers(0, len(mel) - frames))
        audio = np.pad(audio, (0, max(0, (start + frames) * hop - len(audio))))
        audio_crops.append(audio[start * hop:(start + frames) * hop])
        mel_crops.append(mel[start:start + frames])
    if not audio_crops:
        raise SystemExit(f"loss_by_step.py: no clip in {data} is longer than {frames} frames")
    return np.stack(audio_crops).astype(np.float32), np.stack(mel_crops).astype(np.float32)


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
        vocoder = load_for_export(path)
        audio, mel = crops(args.data, vocoder, args.crop_frames, args.seed)
        noise = np.random.default_rng(args.seed + 1).standard_normal(audio.shape).astype(np.float32)
        batch = {"audio": audio, "mel": mel, "noise": noise}
        if uses_prior(vocoder.config):
            batch["prior_std"] = prior_std(mel, vocoder.config)
        levels = noise_levels(vocoder.config)
        batch = {key: tf.constant(value) for key, value in batch.items()}
        losses = [float(np.mean(diffusion_loss(vocoder.model, {**batch, "step": tf.fill([len(audio)], t)},
                                               tf.constant(levels), "l1", training=False))) for t in steps]
        print(f"| {path} | " + " | ".join(f"{v:.3f}" for v in losses) + f" | {np.mean(losses):.3f} |", flush=True)


if __name__ == "__main__":
    main()
