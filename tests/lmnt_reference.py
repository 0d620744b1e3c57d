"""Checkpoints exactly as lmnt-com/diffwave's learner writes them, from the real reference code.

`diffwave.learner` itself cannot be imported here (it imports torchaudio and tensorboard, neither of
which exists in this environment), so `learner_state_dict` and `save_like_learner` restate its
`DiffWaveLearner.state_dict` and `save_to_checkpoint` line for line (diffwave 0.1.7, learner.py).
Everything else (model, optimizer, GradScaler, AttrDict params) is the real thing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run the reference on one thread (autouse in modules that import this fixture).

    It shares the process with TensorFlow on a small, shared CI machine, where torch's spinning
    intra-op pool makes a default-size forward pass over 10x slower than on one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def reference_params(**overrides: Any):
    """A `diffwave.params.AttrDict` of the reference defaults, overridden as the reference does."""
    from diffwave.params import AttrDict, params

    return AttrDict(params).override(overrides)


def trained_reference(params, seed: int = 0, fp16: bool = False):
    """A real reference DiffWave + Adam (+ GradScaler) after one real training step on random data."""
    from diffwave.model import DiffWave

    torch.manual_seed(seed)
    model = DiffWave(params)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    scaler = torch.amp.GradScaler("cpu", enabled=fp16)  # the learner: cuda GradScaler(enabled=fp16)
    frames = 2
    audio = torch.rand(1, params.hop_samples * frames) * 2 - 1
    spectrogram = torch.rand(1, params.n_mels, frames)
    step = torch.randint(0, len(params.noise_schedule), [1])
    loss = torch.nn.L1Loss()(torch.randn_like(audio), model(audio, spectrogram, step).squeeze(1))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return model, optimizer, scaler


def learner_state_dict(model, optimizer, scaler, params, step: int) -> dict:
    """`DiffWaveLearner.state_dict()`; `params` is stored as given (the learner stores dict(params))."""
    return {
        "step": step,
        "model": {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()},
        "optimizer": {k: v.cpu() if isinstance(v, torch.Tensor) else v
                      for k, v in optimizer.state_dict().items()},
        "params": params,
        "scaler": scaler.state_dict(),
    }


def save_like_learner(state: dict, model_dir: Path, legacy: bool = False, filename: str = "weights") -> Path:
    """`DiffWaveLearner.save_to_checkpoint()`: weights-{step}.pt plus a relative weights.pt symlink."""
    os.makedirs(model_dir, exist_ok=True)
    save_basename = f"{filename}-{state['step']}.pt"
    save_name = Path(model_dir) / save_basename
    link_name = Path(model_dir) / f"{filename}.pt"
    torch.save(state, save_name, _use_new_zipfile_serialization=not legacy)
    if os.path.islink(link_name):
        os.unlink(link_name)
    os.symlink(save_basename, link_name)
    return save_name
