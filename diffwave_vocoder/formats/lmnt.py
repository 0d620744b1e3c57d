"""Convert lmnt-com/diffwave PyTorch checkpoints into diffwave-vocoder checkpoints, without torch.

The file is read by `io.torch_pickle.load_torch_pickle` (allow-listed unpickling, nothing from
the file runs). Every tensor is placed by the explicit port map below (source key -> our variable,
with the layout transform beside it), never by position; anything missing, unexpected or mis-shaped
is reported in one error. Hyperparameters come from the checkpoint's `params` when present, else
from the weights' shapes; what neither determines comes from the reference defaults or from the
caller, and the checkpoint's metadata records which was which (`diffwave-vocoder info` shows it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..config import DiffWaveConfig, reference_params_to_config
from ..features.mel import MelConvention
from ..io.torch_pickle import load_torch_pickle, resolve_torch_file

if TYPE_CHECKING:
    from ..vocoder import Vocoder

__all__ = ["convert_lmnt_checkpoint", "ConversionError", "port_map", "REFERENCE_HOP"]

# The reference's upsampler is hard-wired to two ConvTranspose2d([3, 32], stride [1, 16]): 256 samples
# per frame whatever params.hop_samples says (lmnt-com/diffwave issues #6, #24, #44).
REFERENCE_HOP = 256


class ConversionError(ValueError):
    """The checkpoint does not fit a reference DiffWave of the determined size."""


@dataclass(frozen=True)
class Transform:
    """A weight layout change from PyTorch to Keras, and the PyTorch shape that a Keras shape implies."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    source_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


COPY = Transform("copy", lambda w: w, lambda s: tuple(s))
# nn.Linear weight [out, in] -> Dense kernel [in, out].
LINEAR = Transform("transpose", lambda w: w.T, lambda s: (s[1], s[0]))
# 1x1 nn.Conv1d weight [out, in, 1] -> Dense kernel [in, out].
CONV1X1 = Transform("conv1x1_to_dense", lambda w: w[:, :, 0].T, lambda s: (s[1], s[0], 1))
# nn.Conv1d weight [out, in, k] -> Conv1D-layout kernel [k, in, out]; both cross-correlate: no flip.
CONV1D = Transform("conv1d", lambda w: w.transpose(2, 1, 0), lambda s: (s[2], s[1], s[0]))
# nn.ConvTranspose2d weight [in, out, k_mel, k_time] over (mel, time) -> Conv2DTranspose kernel
# [k_time, k_mel, out, in] over our time-first (time, mel) layout; no flip.
CONV_TRANSPOSE_2D = Transform("conv_transpose2d_time_first", lambda w: w.transpose(3, 2, 1, 0),
                              lambda s: (s[3], s[2], s[1], s[0]))

# Source key -> (Keras layer name, attribute path to the variable), transform.
_MODEL_PORTS = [
    ("input_projection.weight", ("input_projection", "kernel"), CONV1X1),
    ("input_projection.bias", ("input_projection", "bias"), COPY),
    ("diffusion_embedding.projection1.weight", ("diffusion_embedding", "projection1", "kernel"), LINEAR),
    ("diffusion_embedding.projection1.bias", ("diffusion_embedding", "projection1", "bias"), COPY),
    ("diffusion_embedding.projection2.weight", ("diffusion_embedding", "projection2", "kernel"), LINEAR),
    ("diffusion_embedding.projection2.bias", ("diffusion_embedding", "projection2", "bias"), COPY),
    ("skip_projection.weight", ("skip_projection", "kernel"), CONV1X1),
    ("skip_projection.bias", ("skip_projection", "bias"), COPY),
    ("output_projection.weight", ("output_projection", "kernel"), CONV1X1),
    ("output_projection.bias", ("output_projection", "bias"), COPY),
]
_UPSAMPLER_PORTS = [
    ("spectrogram_upsampler.conv1.weight", ("spectrogram_upsampler", "conv1", "kernel"), CONV_TRANSPOSE_2D),
    ("spectrogram_upsampler.conv1.bias", ("spectrogram_upsampler", "conv1", "bias"), COPY),
    ("spectrogram_upsampler.conv2.weight", ("spectrogram_upsampler", "conv2", "kernel"), CONV_TRANSPOSE_2D),
    ("spectrogram_upsampler.conv2.bias", ("spectrogram_upsampler", "conv2", "bias"), COPY),
]
# `{i}` is the residual layer's index.
_BLOCK_PORTS = [
    ("residual_layers.{i}.dilated_conv.weight", ("residual_block_{i}", "dilated_conv", "kernel"), CONV1D),
    ("residual_layers.{i}.dilated_conv.bias", ("residual_block_{i}", "dilated_conv", "bias"), COPY),
    ("residual_layers.{i}.diffusion_projection.weight",
     ("residual_block_{i}", "diffusion_projection", "kernel"), LINEAR),
    ("residual_layers.{i}.diffusion_projection.bias", ("residual_block_{i}", "diffusion_projection", "bias"), COPY),
    ("residual_layers.{i}.output_projection.weight", ("residual_block_{i}", "output_projection", "kernel"), CONV1X1),
    ("residual_layers.{i}.output_projection.bias", ("residual_block_{i}", "output_projection", "bias"), COPY),
]
_CONDITIONER_PORTS = [
    ("residual_layers.{i}.conditioner_projection.weight",
     ("residual_block_{i}", "conditioner_projection", "kernel"), CONV1X1),
    ("residual_layers.{i}.conditioner_projection.bias",
     ("residual_block_{i}", "conditioner_projection", "bias"), COPY),
]


def port_map(config: DiffWaveConfig) -> list[tuple[str, tuple[str, ...], Transform]]:
    """Every reference state_dict key of a model of this config, with its target and transform."""
    ports = list(_MODEL_PORTS)
    if not config.unconditional:
        ports += _UPSAMPLER_PORTS
    block_ports = _BLOCK_PORTS + ([] if config.unconditional else _CONDITIONER_PORTS)
    for i in range(config.residual_layers):
        ports += [(key.format(i=i), tuple(p.format(i=i) for p in path), transform)
                  for key, path, transform in block_ports]
    return ports


# Config fields the weights cannot determine, with the reference `params` key that holds each.
_NOT_IN_WEIGHTS = {
    "dilation_cycle_length": "dilation_cycle_length", "sample_rate": "sample_rate",
    "hop_length": "hop_samples", "n_fft": "n_fft", "noise_schedule": "noise_schedule",
    "inference_noise_schedule": "inference_noise_schedule",
}
_NOT_IN_UNCONDITIONAL_WEIGHTS = {"n_mels": "n_mels", "audio_len": "audio_len"}


def _split_checkpoint(obj: Any, source: Path) -> tuple[dict[str, np.ndarray], dict | None, int | None]:
    """(state_dict with any DDP `module.` prefix removed, params or None, step or None)."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, params, step = obj["model"], obj.get("params"), obj.get("step")
        if params is not None and not isinstance(params, dict):
            raise ConversionError(f"{source}: 'params' is a {type(params).__name__}, expected a dict")
    elif isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        state, params, step = obj, None, None
    else:
        keys = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
        raise ConversionError(
            f"{source} is neither an lmnt-com/diffwave training checkpoint (a dict with 'model') nor a "
            f"bare state_dict of tensors; found {keys}")
    stripped = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if len(stripped) != len(state):
        raise ConversionError(f"{source}: keys clash after removing the 'module.' prefix")
    return stripped, params, step if isinstance(step, int) else None


def _infer_from_weights(state: dict[str, np.ndarray]) -> dict[str, Any]:
    """What the shapes and key names determine: size, conditioning and the conditioner's n_mels."""
    inferred: dict[str, Any] = {}
    if getattr(state.get("input_projection.weight"), "ndim", 0) == 3:
        inferred["residual_channels"] = int(state["input_projection.weight"].shape[0])
    indices = {int(k.split(".")[1]) for k in state
               if k.startswith("residual_layers.") and k.split(".")[1].isdigit()}
    if indices:
        inferred["residual_layers"] = max(indices) + 1
    conditional = any(k.startswith("spectrogram_upsampler.") or ".conditioner_projection." in k for k in state)
    inferred["unconditional"] = not conditional
    for i in sorted(indices):
        weight = state.get(f"residual_layers.{i}.conditioner_projection.weight")
        if weight is not None and weight.ndim == 3:
            inferred["n_mels"] = int(weight.shape[1])
            break
    return inferred


def _summary(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"{len(value)} betas {value[0]:g}..{value[-1]:g}"
    return list(value) if isinstance(value, tuple) else value


def _determine_config(state: dict[str, np.ndarray], params: dict | None, overrides: dict[str, Any],
                      source: Path) -> tuple[DiffWaveConfig, dict[str, Any]]:
    mel_fields = {f.name for f in dataclasses.fields(MelConvention)}
    known = {f.name for f in dataclasses.fields(DiffWaveConfig)} - {"mel"} | mel_fields
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConversionError(f"unknown config override(s) {unknown}; expected a subset of {sorted(known)}")
    inferred = _infer_from_weights(state)
    params = params or {}
    conflicts = [f"{name}: params say {params[name]!r}, weights have {value!r}"
                 for name, value in inferred.items()
                 if name in params and name not in overrides and params[name] != value]
    if conflicts:
        raise ConversionError(f"{source}: the checkpoint's params disagree with its weights: "
                              + "; ".join(conflicts))
    hop = overrides.get("hop_length", params.get("hop_samples", REFERENCE_HOP))
    if not overrides.get("unconditional", inferred["unconditional"]) and hop != REFERENCE_HOP:
        raise ConversionError(
            f"{source}: hop length {hop}, but the reference's upsampler always produces "
            f"{REFERENCE_HOP} samples per mel frame (two 16x transposed convolutions); a checkpoint of "
            "a modified upsampler cannot be converted")
    try:
        config = reference_params_to_config(params, **{**inferred, **overrides})
    except (TypeError, ValueError) as error:
        raise ConversionError(f"cannot build a config for {source}: {error}") from None
    undetermined = dict(_NOT_IN_WEIGHTS, **(_NOT_IN_UNCONDITIONAL_WEIGHTS if config.unconditional else {}))
    assumed = {field: _summary(getattr(config.mel if field in mel_fields else config, field))
               for field, key in undetermined.items() if key not in params and field not in overrides}
    provenance = {
        "hyperparameters": "from the checkpoint's params" if params else "inferred from the weights' shapes",
        "inferred_from_weights": inferred,
        "assumed_reference_defaults": assumed,
        "overrides": {k: _summary(v) for k, v in overrides.items()},
    }
    return config, provenance


def _variable(model, path: tuple[str, ...]):
    target = model.get_layer(path[0])
    for attribute in path[1:]:
        target = getattr(target, attribute)
    return target


def _port_weights(model, config: DiffWaveConfig, state: dict[str, np.ndarray], source: Path) -> None:
    """Assign every ported tensor, or raise one error naming every missing/unexpected/mis-shaped one."""
    ports = port_map(config)
    expected_keys = {key for key, _, _ in ports}
    missing = [key for key, _, _ in ports if key not in state]
    unexpected = sorted(set(state) - expected_keys)
    mismatched, assignments = [], []
    for key, path, transform in ports:
        if key not in state:
            continue
        variable = _variable(model, path)
        want = transform.source_shape(tuple(variable.shape))
        tensor = state[key]
        floating = tensor.dtype.kind == "f" or tensor.dtype.name == "bfloat16"
        if tensor.shape != want or not floating:
            mismatched.append(f"{key} {tensor.dtype.name}{list(tensor.shape)} (expected floating {list(want)})")
            continue
        assignments.append((variable, transform.apply(tensor.astype(np.float32))))
    if missing or unexpected or mismatched:
        size = (f"{'unconditional' if config.unconditional else 'conditional'} DiffWave with "
                f"residual_channels={config.residual_channels}, residual_layers={config.residual_layers}"
                + ("" if config.unconditional else f", n_mels={config.n_mels}"))
        parts = [f"{label} ({len(keys)}): {', '.join(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)) if keys]
        raise ConversionError(f"{source} does not fit a {size}: " + "; ".join(parts))
    for variable, value in assignments:
        variable.assign(value)


def convert_lmnt_checkpoint(src: str | os.PathLike, dst: str | os.PathLike | None = None,
                            **config_overrides: Any) -> "Vocoder":
    """Convert an lmnt-com/diffwave checkpoint (training dict or bare state_dict; zip or legacy
    format; a file, a `weights.pt` symlink or a model directory) into a `Vocoder`; save it at `dst`
    (atomically) when given.

    `config_overrides` set DiffWaveConfig fields the checkpoint cannot tell, e.g.
    `dilation_cycle_length=4` for a bare state_dict of a model trained with a non-default cycle.
    """
    from ..model import build_model
    from ..vocoder import Vocoder

    source = resolve_torch_file(src)
    state, params, step = _split_checkpoint(load_torch_pickle(source), source)
    config, provenance = _determine_config(state, params, config_overrides, source)
    model = build_model(config)
    _port_weights(model, config, state, source)
    metadata = {
        "converted_from": f"lmnt-com/diffwave PyTorch checkpoint {source.resolve().name}",
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        **({"source_step": step} if step is not None else {}),
        **provenance,
    }
    vocoder = Vocoder(model, config, metadata)
    if dst is not None:
        vocoder.save(dst)
    return vocoder
