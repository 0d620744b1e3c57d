"""Shared fixtures: real speech from the shared corpus tool and small real models."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

CORPUS_TOOL = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "make_speech_corpus.py"


def make_speech_corpus(directory: Path, clips: int, seed: int = 0, sample_rate: int = 22050) -> Path:
    """An LJSpeech-layout corpus (wavs/*.wav, metadata.csv) of synthetic speech (espeak-ng, flite, sox)."""
    if not CORPUS_TOOL.exists():
        raise RuntimeError(f"speech corpus tool not found at {CORPUS_TOOL} (expected ../shared beside the repo)")
    subprocess.run([sys.executable, str(CORPUS_TOOL), str(directory), "--clips", str(clips),
                    "--seed", str(seed), "--sample-rate", str(sample_rate)],
                   check=True, capture_output=True)
    return directory


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory) -> Path:
    """Four clips of real (synthesised) speech at 22.05 kHz, about 4 s each."""
    return make_speech_corpus(tmp_path_factory.mktemp("speech"), clips=4)


@pytest.fixture(scope="session")
def small_config():
    from diffwave_vocoder import DiffWaveConfig

    return DiffWaveConfig(residual_channels=16, residual_layers=6, dilation_cycle_length=3)


@pytest.fixture(scope="session")
def small_vocoder(small_config):
    """A randomly initialised small vocoder whose output layer is not zero (so outputs vary)."""
    import numpy as np

    from diffwave_vocoder import Vocoder

    vocoder = Vocoder.from_config(small_config, seed=1)
    layer = vocoder.model.get_layer("output_projection")
    kernel = np.random.default_rng(0).normal(0, 0.1, layer.kernel.shape).astype("float32")
    layer.set_weights([kernel, np.zeros(layer.bias.shape, "float32")])
    return vocoder
