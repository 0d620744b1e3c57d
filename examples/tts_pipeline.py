"""A TTS pipeline's last step: a Tacotron-2-style mel, in PyTorch layout, to a wav on disk.

The "acoustic model" here is a stand-in: it speaks the text with espeak-ng (or reads --wav) and
computes exactly the mel NVIDIA Tacotron 2 is trained to predict (ln-compressed Slaney mels,
0-8 kHz) as a torch tensor of shape (1, 80, frames), the shape Tacotron 2 hands to its vocoder.
Everything after that is what a real pipeline does: pick the vocoder by name from the registry,
let the registered "tacotron2" adapter convert the mel to the vocoder's own convention, and write
the audio.

    python examples/tts_pipeline.py out.wav --text "The quick brown fox." [--checkpoint CKPT_DIR]

Without --checkpoint it uses the vocoder that ships in the package (`load_vocoder("diffwave")`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffwave_vocoder import load_vocoder  # noqa: E402
from diffwave_vocoder.adapters.conventions import tacotron2  # noqa: E402
from diffwave_vocoder.io.audio import load_audio, save_audio  # noqa: E402
from diffwave_vocoder.features.mel import compute_mel  # noqa: E402


def acoustic_model(text: str | None, wav: Path | None) -> torch.Tensor:
    """Stand-in for Tacotron 2: its target mel for the utterance, (1, n_mels, frames) float32."""
    convention = tacotron2()
    if wav is None:
        if shutil.which("espeak-ng") is None:
            sys.exit("espeak-ng is not installed: pass --wav FILE instead of --text")
        with tempfile.TemporaryDirectory() as tmp:
            spoken = Path(tmp) / "spoken.wav"
            subprocess.run(["espeak-ng", "-w", str(spoken), text], check=True)
            audio, _ = load_audio(spoken, convention.sample_rate, resample=True)
    else:
        audio, _ = load_audio(wav, convention.sample_rate, resample=True)
    return torch.from_numpy(compute_mel(audio, convention).T.copy()).unsqueeze(0)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="wav file to write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", default="A vocoder turns this mel spectrogram back into sound.")
    source.add_argument("--wav", type=Path, help="speech to take the mel from instead of --text")
    parser.add_argument("--checkpoint", help="diffwave-vocoder checkpoint directory (default: the shipped vocoder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    mel = acoustic_model(args.text, args.wav)  # torch.Tensor (1, 80, frames), PyTorch layout
    vocoder = load_vocoder("diffwave", checkpoint=args.checkpoint)  # None: the shipped default
    audio = vocoder.vocode(mel, layout="torch", adapter="tacotron2", seed=args.seed)[0]
    save_audio(args.output, np.asarray(audio), vocoder.sample_rate)
    print(f"{mel.shape[-1]} Tacotron 2 frames -> {len(audio) / vocoder.sample_rate:.2f} s at "
          f"{vocoder.sample_rate} Hz -> {args.output}")
    return args.output


if __name__ == "__main__":
    main()
