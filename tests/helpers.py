"""Helpers shared by test modules (imported as `helpers`; fixtures stay in conftest.py).

The lmnt-com/diffwave reference helpers build checkpoints exactly as its learner writes them, from
the real reference code. `diffwave.learner` itself cannot be imported here (it imports torchaudio
and tensorboard, neither of which exists in this environment), so `learner_state_dict` and
`save_like_learner` restate its `DiffWaveLearner.state_dict` and `save_to_checkpoint` line for line
(diffwave 0.1.7, learner.py). Everything else (model, optimizer, GradScaler, AttrDict params) is
the real thing. torch is imported where it is used, so modules that need none of it do not pay.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from diffwave_vocoder import DiffWaveConfig, Vocoder


def run_main(*args: Any) -> subprocess.CompletedProcess:
    """`diffwave-vocoder ARGS...` through the CLI's own `main()` in this process, with stdout and stderr
    captured, as a subprocess would report them. The same code runs; what is saved is a fresh interpreter's
    TensorFlow start-up (seconds a call). Cases about what only a process shows (TensorFlow's native log
    lines, signals, binary stdout, exit codes set by the interpreter) run the real command instead."""
    from diffwave_vocoder.cli import main

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's --help and usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_command(*args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """`diffwave-vocoder ARGS...` as a real process, output captured (text unless `text=False`), for what
    only a process shows. TensorFlow's native log is left on (TF_CPP_MIN_LOG_LEVEL=0, overridable by `env`,
    which is merged over this process's environment), so any line it prints reaches the test."""
    return subprocess.run([sys.executable, "-m", "diffwave_vocoder.cli", *map(str, args)], capture_output=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", **(env or {})},
                          **{"text": True, **kwargs})


def audible_vocoder(config: DiffWaveConfig, seed: int, std: float) -> Vocoder:
    """A randomly initialised vocoder whose output layer (zero-initialised, as the reference's) is
    drawn from N(0, std), so that its outputs vary with the noise and the mel."""
    vocoder = Vocoder.from_config(config, seed=seed)
    layer = vocoder.model.get_layer("output_projection")
    layer.set_weights([np.random.default_rng(seed).normal(0, std, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return vocoder


def torchaudio_recipe(audio: np.ndarray, sample_rate=22050, n_fft=1024, hop=256, n_mels=80, f_min=20.0):
    """torchaudio.transforms.MelSpectrogram(power=1, normalized=True, f_max=sr/2) rebuilt from torchaudio's
    source (spectrogram + melscale_fbanks, HTK, norm=None), then preprocess.py's log compression."""
    import torch

    waveform = torch.from_numpy(audio).double()
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(waveform, n_fft, hop, n_fft, window, center=True, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True)
    spec = (spec / window.pow(2.0).sum().sqrt()).abs()
    all_freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1, dtype=torch.float64)
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.min(down, up), min=0.0)
    mel = (spec.T @ fb).numpy()
    db = 20 * np.log10(np.maximum(mel, 1e-5)) - 20
    return np.clip((db + 100) / 100, 0.0, 1.0)


def slaney_filterbank(fmin, fmax, sr=22050, n_fft=1024, n_mels=80) -> np.ndarray:
    """librosa's default (Slaney-scale, area-normalised) mel filterbank, as the LJSpeech toolkits use it."""
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def hifigan_reference(y: np.ndarray) -> np.ndarray:
    """jik876/hifi-gan meldataset.mel_spectrogram (center=False after reflect pad (n_fft-hop)/2)."""
    import torch

    n_fft, hop = 1024, 256
    x = torch.nn.functional.pad(torch.from_numpy(y)[None, None], (384, 384), mode="reflect")[:, 0]
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=torch.hann_window(n_fft), center=False,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    mel = torch.matmul(torch.from_numpy(slaney_filterbank(0.0, 8000.0)), spec)
    return torch.log(torch.clamp(mel, min=1e-5))[0].numpy().T


def reference_params(**overrides: Any):
    """A `diffwave.params.AttrDict` of the reference defaults, overridden as the reference does."""
    from diffwave.params import AttrDict, params

    return AttrDict(params).override(overrides)


def trained_reference(params, seed: int = 0, fp16: bool = False):
    """A real reference DiffWave + Adam (+ GradScaler) after one real training step on random data."""
    import torch
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
    import torch

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
    import torch

    os.makedirs(model_dir, exist_ok=True)
    save_basename = f"{filename}-{state['step']}.pt"
    save_name = Path(model_dir) / save_basename
    link_name = Path(model_dir) / f"{filename}.pt"
    torch.save(state, save_name, _use_new_zipfile_serialization=not legacy)
    if os.path.islink(link_name):
        os.unlink(link_name)
    os.symlink(save_basename, link_name)
    return save_name
