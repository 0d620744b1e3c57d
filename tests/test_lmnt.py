"""Converting lmnt-com/diffwave checkpoints: parity with the real reference code (diffwave 0.1.7).

Reference models are real `diffwave.model.DiffWave` modules with random weights, saved as the
reference's learner saves them; the converted vocoder is loaded back from disk before comparing.
The output projection is re-drawn at random (the reference zero-initialises it, which would make
every prediction a constant and every comparison trivial).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest
import torch

from diffwave_vocoder.vocoder import Vocoder
from diffwave_vocoder.io.audio import load_audio
from diffwave_vocoder.formats.lmnt import ConversionError, convert_lmnt_checkpoint
from diffwave_vocoder.features.mel import compute_mel
from diffwave_vocoder.sampler import Sampler
from diffwave_vocoder.schedule import resolve_schedule
from helpers import (learner_state_dict, reference_params, run_command, run_main, save_like_learner, torchaudio_recipe,
                     trained_reference)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the reference runs on one thread

SIZES = {
    "default": {},
    "c32-l12-cycle4": {"residual_channels": 32, "residual_layers": 12, "dilation_cycle_length": 4},
}
FRAMES = 4  # mel frames per utterance: 1024 samples, enough to cross several receptive-field edges


def _reference_model(seed: int, **overrides):
    params = reference_params(**overrides)
    model, optimizer, scaler = trained_reference(params, seed=seed)
    with torch.no_grad():
        model.output_projection.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return model.eval(), optimizer, scaler, params


@pytest.fixture(scope="module", params=list(SIZES))
def converted(request, tmp_path_factory):
    """(reference model, converted Vocoder loaded from disk, params, its Sampler); the reference is
    saved as the learner saves it."""
    model, optimizer, scaler, params = _reference_model(seed=list(SIZES).index(request.param),
                                                        **SIZES[request.param])
    root = tmp_path_factory.mktemp(f"convert-{request.param}")
    save_like_learner(learner_state_dict(model, optimizer, scaler, dict(params), step=1000), root / "run")
    convert_lmnt_checkpoint(root / "run", root / "converted")
    vocoder = Vocoder.load(root / "converted")
    return model, vocoder, params, Sampler(vocoder.model, vocoder.config)  # one trace for fast and full


def _speech_mels(speech_corpus, vocoder, count: int = 2) -> np.ndarray:
    """`count` excerpts of FRAMES frames of a real speech mel, (count, FRAMES, n_mels)."""
    audio, rate = load_audio(sorted((speech_corpus / "wavs").glob("*.wav"))[0])
    mel = compute_mel(audio, vocoder.mel_convention, sample_rate=rate)
    return np.stack([mel[40 + 25 * i: 40 + 25 * i + FRAMES] for i in range(count)]).astype(np.float32)


def _reference_eps(model, audio, mel_tf, step, conditional=True) -> np.ndarray:
    with torch.no_grad():
        spectrogram = torch.from_numpy(mel_tf.transpose(0, 2, 1).copy()) if conditional else None
        return model(torch.from_numpy(audio), spectrogram, step).squeeze(1).numpy()


def _our_eps(vocoder, audio, mel_tf, steps) -> np.ndarray:
    inputs = [audio, np.asarray(steps, np.float32)] + ([mel_tf] if vocoder.conditional else [])
    return np.asarray(vocoder.model(inputs))


def test_one_network_evaluation(converted, speech_corpus):
    model, vocoder, params, _ = converted
    rng = np.random.default_rng(0)
    mel = _speech_mels(speech_corpus, vocoder, count=3)
    audio = rng.normal(size=(3, FRAMES * 256)).astype(np.float32)
    # Integer steps (training's table lookup), one per item.
    integer = np.array([0, 17, 49])
    diff = np.abs(_reference_eps(model, audio, mel, torch.from_numpy(integer))
                  - _our_eps(vocoder, audio, mel, integer)).max()
    assert diff <= 1e-4
    # Non-integer steps (inference's interpolation; the reference takes one shape-[1] step per call):
    # the fast schedule's aligned steps and an arbitrary one.
    for step in (0.8941341, 4.086654, 10.451817, 22.992493, 42.918644, 37.25):
        expected = _reference_eps(model, audio[:1], mel[:1], torch.tensor([step], dtype=torch.float32))
        diff = np.abs(expected - _our_eps(vocoder, audio[:1], mel[:1], [step])).max()
        assert diff <= 1e-4, f"step {step}: {diff}"
        assert expected.std() > 0.05  # a real, input-dependent prediction


def _reference_inference(monkeypatch):
    """The real `diffwave.inference` module.

    It imports torchaudio at module level for its CLI's `torchaudio.save` only; torchaudio cannot be
    installed here, so an empty stand-in module satisfies that one import. `predict` never uses it.
    """
    if importlib.util.find_spec("torchaudio") is None and "diffwave.inference" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torchaudio", types.ModuleType("torchaudio"))
    import diffwave.inference

    return diffwave.inference


def run_reference_predict(monkeypatch, model, spectrogram: np.ndarray, noise: np.ndarray, fast: bool):
    """The reference's own `predict` loop on `model`, with `noise` (steps, B, L) injected in the order
    it draws: torch.randn for x_T, then torch.randn_like once per step n > 0."""
    inference = _reference_inference(monkeypatch)
    draws = iter(noise)

    def draw(shape):
        value = next(draws)
        assert value.shape == tuple(shape)
        return torch.from_numpy(value.copy())

    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn", lambda *size, **kwargs: draw(size))
        patch.setattr(torch, "randn_like", lambda tensor, **kwargs: draw(tensor.shape))
        # predict() loads and caches models per model_dir; hand it ours through that cache (its own
        # loader always builds the default size).
        patch.setitem(inference.models, "converted-parity", model)
        audio, _ = inference.predict(torch.from_numpy(spectrogram), model_dir="converted-parity",
                                     device=torch.device("cpu"), fast_sampling=fast)
    assert next(draws, None) is None, "the reference drew fewer noise arrays than injected"
    return audio.numpy()


@pytest.mark.parametrize("steps", ["fast", "full"])
def test_whole_sampler_with_injected_noise(converted, speech_corpus, monkeypatch, steps):
    model, vocoder, params, sampler = converted
    mel = _speech_mels(speech_corpus, vocoder, count=2)
    schedule = resolve_schedule(vocoder.config, steps)
    length = FRAMES * vocoder.hop_length
    noise = np.random.default_rng(7).standard_normal((len(schedule), 2, length)).astype(np.float32)

    expected = run_reference_predict(monkeypatch, model, mel.transpose(0, 2, 1).copy(), noise,
                                     fast=steps == "fast")
    ours = sampler.sample(schedule, [length, length], mel=mel, noise=noise)
    assert np.abs(ours - expected).max() <= 1e-3
    assert np.mean(np.abs(expected) < 0.999) > 0.5  # mostly unclipped: the comparison is not trivial


def test_mel_features_equal_the_reference_recipe(converted, speech_corpus):
    """`resynth` with a converted model analyses a wav exactly as the reference's preprocess.py would
    with the checkpoint's params (torchaudio MelSpectrogram, rebuilt in test_mel)."""
    _, vocoder, params, _ = converted
    for wav in sorted((speech_corpus / "wavs").glob("*.wav"))[:2]:
        audio, rate = load_audio(wav)
        assert rate == params["sample_rate"]
        ours = compute_mel(audio, vocoder.mel_convention, sample_rate=rate)
        expected = torchaudio_recipe(audio, sample_rate=params["sample_rate"], n_fft=params["n_fft"],
                                     hop=params["hop_samples"], n_mels=params["n_mels"])
        assert ours.shape == expected.shape
        assert np.abs(ours - expected).max() <= 1e-5


class _NoSpectrogram(torch.nn.Module):
    """Stands in for the removed upsampler: master's unconditional model has none (no parameters)."""

    def forward(self, spectrogram):
        return None


class _NoConditioner(torch.nn.Module):
    """Stands in for a removed conditioner_projection: adding 0.0 is exactly master's skipped addition."""

    def forward(self, conditioner):
        return 0.0


def _unconditional_reference(seed: int):
    """lmnt-com/diffwave master's unconditional model (not on PyPI): the 0.1.7 modules with the
    conditioner path removed, as master's `9ad6442` removes it."""
    model, _, _, params = _reference_model(seed=seed, unconditional=True, audio_len=FRAMES * 256)
    model.spectrogram_upsampler = _NoSpectrogram()
    for layer in model.residual_layers:
        layer.conditioner_projection = _NoConditioner()
    return model, params


def test_unconditional_model(tmp_path, monkeypatch):
    model, params = _unconditional_reference(seed=5)
    state = model.state_dict()
    assert len(state) == 190 and sum(v.numel() for v in state.values()) == 2_308_737  # spec §1
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    save_like_learner(learner_state_dict(model, optimizer, scaler, dict(params), step=4), tmp_path / "run")
    convert_lmnt_checkpoint(tmp_path / "run", tmp_path / "converted")
    vocoder = Vocoder.load(tmp_path / "converted")
    assert not vocoder.conditional and vocoder.config.audio_len == FRAMES * 256

    audio = np.random.default_rng(1).normal(size=(1, FRAMES * 256)).astype(np.float32)
    for step in (torch.tensor([0, 31]), torch.tensor([22.992493]), torch.tensor([48.5])):
        batch = audio.repeat(len(step), 0)
        expected = _reference_eps(model, batch, None, step, conditional=False)
        assert np.abs(expected - _our_eps(vocoder, batch, None, step.numpy())).max() <= 1e-4

    # Master's predict draws x_T as randn(1, audio_len) and calls model(audio, T, None); 0.1.7's
    # predict sizes x_T from the spectrogram, so a (1, 0, frames) placeholder that carries no data
    # (our stand-in upsampler ignores it) gives the same loop.
    schedule = resolve_schedule(vocoder.config, "fast")
    noise = np.random.default_rng(2).standard_normal((len(schedule), 1, FRAMES * 256)).astype(np.float32)
    expected = run_reference_predict(monkeypatch, model, np.zeros((1, 0, FRAMES), np.float32), noise, True)
    ours = Sampler(vocoder.model, vocoder.config).sample(schedule, [FRAMES * 256], noise=noise)
    assert np.abs(ours - expected).max() <= 1e-3
    assert np.mean(np.abs(expected) < 0.999) > 0.5


# --- what users hold: formats, wrappers, missing params -------------------------------------------

SMALL = {"residual_channels": 8, "residual_layers": 3, "dilation_cycle_length": 2}


@pytest.fixture(scope="module")
def small_reference():
    model, optimizer, scaler, params = _reference_model(seed=11, **SMALL)
    return model, optimizer, scaler, params


def _weights(vocoder):
    return [np.asarray(w) for w in vocoder.model.weights]


def test_every_form_a_checkpoint_comes_in(tmp_path, small_reference):
    model, optimizer, scaler, params = small_reference
    state = learner_state_dict(model, optimizer, scaler, params, step=9)  # params as the AttrDict itself
    canonical = save_like_learner(state, tmp_path / "zip")
    save_like_learner(state, tmp_path / "legacy", legacy=True)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "ddp.pt")
    torch.save({**state, "model": {f"module.{k}": v for k, v in state["model"].items()}},
               tmp_path / "ddp-dict.pt", _use_new_zipfile_serialization=False)

    reference = convert_lmnt_checkpoint(canonical)
    assert reference.config.dilation_cycle_length == 2
    assert reference.metadata["source_step"] == 9
    assert reference.metadata["hyperparameters"] == "from the checkpoint's params"
    assert reference.metadata["assumed_reference_defaults"] == {}
    for source, overrides in [(tmp_path / "zip", {}), (tmp_path / "zip" / "weights.pt", {}),
                              (tmp_path / "legacy", {}), (tmp_path / "ddp-dict.pt", {}),
                              (tmp_path / "bare.pt", {"dilation_cycle_length": 2}),
                              (tmp_path / "ddp.pt", {"dilation_cycle_length": 2})]:
        vocoder = convert_lmnt_checkpoint(source, **overrides)
        assert vocoder.config == reference.config, source
        for ours, theirs in zip(_weights(vocoder), _weights(reference)):
            np.testing.assert_array_equal(ours, theirs, err_msg=str(source))


def test_bare_state_dict_records_what_was_inferred_and_assumed(tmp_path, small_reference):
    model = small_reference[0]
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    vocoder = convert_lmnt_checkpoint(tmp_path / "bare.pt", tmp_path / "out")
    assert vocoder.metadata["hyperparameters"] == "inferred from the weights' shapes"
    assert vocoder.metadata["inferred_from_weights"] == {
        "residual_channels": 8, "residual_layers": 3, "unconditional": False, "n_mels": 80}
    assumed = vocoder.metadata["assumed_reference_defaults"]
    assert assumed["dilation_cycle_length"] == 10 and assumed["sample_rate"] == 22050
    assert assumed["noise_schedule"] == "50 betas 0.0001..0.05"
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["assumed_reference_defaults"] == assumed

    # The assumption matters: with the reference default cycle the network is a different function.
    audio = np.random.default_rng(3).normal(size=(1, 1024)).astype(np.float32)
    mel = np.random.default_rng(4).uniform(0, 1, (1, 4, 80)).astype(np.float32)
    expected = _reference_eps(model, audio, mel, torch.tensor([12]))
    assert np.abs(_our_eps(vocoder, audio, mel, [12]) - expected).max() > 1e-3
    fixed = convert_lmnt_checkpoint(tmp_path / "bare.pt", dilation_cycle_length=2)
    assert fixed.metadata["overrides"] == {"dilation_cycle_length": 2}
    assert "dilation_cycle_length" not in fixed.metadata["assumed_reference_defaults"]
    assert np.abs(_our_eps(fixed, audio, mel, [12]) - expected).max() <= 1e-4


def test_missing_unexpected_and_misshaped_are_listed_together(tmp_path, small_reference):
    state = dict(small_reference[0].state_dict())
    del state["residual_layers.1.diffusion_projection.bias"]
    state["residual_layers.1.extra.weight"] = torch.zeros(3)
    state["skip_projection.weight"] = torch.zeros(8, 8, 3)
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ConversionError) as caught:
        convert_lmnt_checkpoint(tmp_path / "broken.pt", tmp_path / "out")
    message = str(caught.value)
    assert "missing (1): residual_layers.1.diffusion_projection.bias" in message
    assert "unexpected (1): residual_layers.1.extra.weight" in message
    assert "mis-shaped (1): skip_projection.weight float32[8, 8, 3] (expected floating [8, 8, 1])" in message
    assert not (tmp_path / "out").exists()  # never a partial conversion


def test_params_that_contradict_the_weights_or_the_upsampler(tmp_path, small_reference):
    model, optimizer, scaler, params = small_reference
    state = learner_state_dict(model, optimizer, scaler, {**params, "residual_channels": 16}, step=1)
    save_like_learner(state, tmp_path / "a")
    with pytest.raises(ConversionError, match="residual_channels: params say 16, weights have 8"):
        convert_lmnt_checkpoint(tmp_path / "a")
    state = learner_state_dict(model, optimizer, scaler, {**params, "hop_samples": 300}, step=1)
    save_like_learner(state, tmp_path / "b")
    with pytest.raises(ConversionError, match="always produces 256 samples per mel frame"):
        convert_lmnt_checkpoint(tmp_path / "b")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cli_convert_then_info(tmp_path, small_reference):
    model = small_reference[0]
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    result = run_main("convert", tmp_path / "bare.pt", "-o", tmp_path / "out", "--dilation-cycle-length", 2,
                      "--sample-rate", 22050)
    assert result.returncode == 0, result.stderr
    assert "assumed" in result.stdout and "noise_schedule" in result.stdout
    vocoder = Vocoder.load(tmp_path / "out")
    assert vocoder.config.dilation_cycle_length == 2
    assert vocoder.metadata["overrides"] == {"dilation_cycle_length": 2, "sample_rate": 22050}

    info = run_command("info", tmp_path / "out")
    assert info.returncode == 0, info.stderr
    assert "assumed_reference_defaults" in info.stdout and "inference_noise_schedule" in info.stdout

    marker = tmp_path / "ran"
    torch.save({"model": model.state_dict(), "params": _Payload(marker)}, tmp_path / "evil.pt")
    result = run_main("convert", tmp_path / "evil.pt", "-o", tmp_path / "evil-out")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "refused to load global" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "evil-out").exists()
