"""Shared fixtures: real speech from the package's corpus generator and small real models."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory) -> Path:
    """Four clips of real (synthesised) speech at 22.05 kHz, about 4 s each."""
    from diffwave_vocoder.evaluation.corpus import make_speech_corpus

    return make_speech_corpus(tmp_path_factory.mktemp("speech") / "corpus", clips=4)


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


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory, small_vocoder) -> Path:
    """`small_vocoder` saved as a checkpoint directory (read only: tests write elsewhere)."""
    path = tmp_path_factory.mktemp("small-checkpoint") / "model"
    small_vocoder.save(path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run the reference on one thread (modules that compare with it use it module-wide).

    It shares the process with TensorFlow on a small, shared CI machine, where torch's spinning
    intra-op pool makes a default-size forward pass over 10x slower than on one thread.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
