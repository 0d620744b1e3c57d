"""The model config holds the whole mel convention: stored nested (format v2), v1 checkpoints still
load and vocode what they did, and a vocoder trained on HiFi-GAN's mel takes HiFi-GAN's mel."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from diffwave_vocoder import DiffWaveConfig, Vocoder
from diffwave_vocoder.adapters.conventions import CONVENTIONS
from diffwave_vocoder.config import reference_params_to_config, stored_config
from diffwave_vocoder.features.mel import MelConvention, compute_mel
from diffwave_vocoder.training.checkpoints import load_for_export
from helpers import hifigan_reference

V1 = Path(__file__).resolve().parent / "fixtures" / "v1_checkpoint"
TINY = DiffWaveConfig(residual_channels=4, residual_layers=2, dilation_cycle_length=2)


def test_a_v1_checkpoint_loads_vocodes_the_same_audio_and_is_saved_again_as_v2(tmp_path):
    assert json.loads((V1 / "checkpoint" / "metadata.json").read_text())["format_version"] == 1
    vocoder = Vocoder.load(V1 / "checkpoint")
    assert vocoder.config == TINY and vocoder.mel_convention == MelConvention()
    mel, expected = np.load(V1 / "v1_mel.npy"), np.load(V1 / "v1_audio.npy")
    np.testing.assert_allclose(vocoder.vocode(mel, steps="fast", seed=11), expected, atol=1e-5)

    vocoder.save(tmp_path / "v2")
    assert json.loads((tmp_path / "v2" / "metadata.json").read_text())["format_version"] == 2
    stored = json.loads((tmp_path / "v2" / "config.json").read_text())
    assert stored["mel"] == MelConvention().to_dict() and "hop_length" not in stored
    np.testing.assert_allclose(Vocoder.load(tmp_path / "v2").vocode(mel, steps="fast", seed=11), expected, atol=1e-5)


def test_stored_config_moves_v1_flat_mel_fields_into_the_nested_convention():
    v1 = json.loads((V1 / "checkpoint" / "config.json").read_text())
    v1.update(hop_length=300, upsample_factors=[15, 20], n_fft=1200, win_length=1200, fmax=8000.0)
    config = stored_config(v1)
    assert config.mel == MelConvention(hop_length=300, n_fft=1200, win_length=1200, fmax=8000.0)
    assert config.hop_length == 300 and config.upsample_factors == (15, 20)
    assert stored_config(config.to_dict()) == config  # the v2 form reads back as it is
    with pytest.raises(ValueError, match="both a nested 'mel' and the flat"):
        stored_config({**config.to_dict(), "n_mels": 80})
    with pytest.raises(ValueError, match=r"unknown mel convention field\(s\) \['hop'\]"):
        stored_config({"mel": {"hop": 256}})


@pytest.mark.parametrize("mel", [CONVENTIONS["hifigan"](), CONVENTIONS["nemo"](),
                                 CONVENTIONS["parallel_wavegan"](stats=np.stack([np.full(80, -2.0), np.full(80, 0.5)])),
                                 CONVENTIONS["lmnt"](hop_length=300, win_length=1200, n_fft=1200)],
                         ids=["hifigan", "nemo", "zscore", "hop300"])
def test_every_convention_field_survives_the_checkpoint(tmp_path, mel):
    config = TINY.with_mel(mel)
    assert config.mel is mel and DiffWaveConfig(**config.to_dict()) == config  # the constructor mirrors to_dict
    assert config.upsample_factors == ((20, 15) if mel.hop_length == 300 else (16, 16))
    Vocoder.from_config(config, seed=0).save(tmp_path / "model")
    assert Vocoder.load(tmp_path / "model").mel_convention == mel


def test_reference_params_map_into_the_convention():
    config = reference_params_to_config({"hop_samples": 300, "n_fft": 2048, "sample_rate": 24000, "n_mels": 100,
                                         "residual_layers": 4}, dilation_cycle_length=2)
    assert config.mel == MelConvention(hop_length=300, win_length=1200, n_fft=2048, sample_rate=24000, n_mels=100)
    assert (config.residual_layers, config.dilation_cycle_length, config.upsample_factors) == (4, 2, (20, 15))


def test_trained_on_hifigans_mel_the_reloaded_vocoder_takes_hifigans_mel(speech_corpus, tmp_path, capsys):
    from diffwave_vocoder.cli import main

    run = tmp_path / "run"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"residual_channels": 4, "residual_layers": 2, "dilation_cycle_length": 2}}))
    assert main(["train", str(run), str(speech_corpus), "--config", str(config), "--mel-convention", "hifigan",
                 "--max-steps", "2", "--batch-size", "2", "--crop-frames", "8", "--val-fraction", "0",
                 "--checkpoint-every", "2"]) == 0
    capsys.readouterr()
    checkpoint = run / "checkpoints" / "step-000000002"
    assert json.loads((checkpoint / "state.json").read_text())["format_version"] == 2
    vocoder = Vocoder.load(run / "vocoder")
    assert vocoder.mel_convention == CONVENTIONS["hifigan"]()

    audio = soundfile.read(str(sorted((speech_corpus / "wavs").glob("*.wav"))[0]), dtype="float32")[0][:22050]
    ours, theirs = compute_mel(audio, vocoder.mel_convention), hifigan_reference(audio)
    assert ours.shape == theirs.shape == (len(audio) // 256, 80)
    np.testing.assert_allclose(ours, theirs, atol=2e-3 * np.abs(theirs).max())
    assert vocoder.vocode(theirs, seed=0).shape == (len(theirs) * 256,)  # no adapter: it is the vocoder's own mel

    # The same run's checkpoint rewritten in format v1 (flat fields, as a v1 trainer wrote it) still loads.
    old = tmp_path / "v1-step"
    shutil.copytree(checkpoint, old)
    state = json.loads((old / "state.json").read_text())
    (old / "state.json").write_text(json.dumps({**state, "format_version": 1}))
    lmnt_run = TINY.to_dict()
    mel = lmnt_run.pop("mel")
    flat = {**lmnt_run, **{k: mel[k] for k in ("n_mels", "hop_length", "sample_rate", "n_fft", "win_length", "fmin",
                                               "fmax", "mel_scale", "mel_norm")}, "mel_compression": "lmnt"}
    (old / "config.json").write_text(json.dumps(flat))
    reloaded = load_for_export(old)
    assert reloaded.config == TINY
    for a, b in zip(reloaded.model.get_weights(), load_for_export(checkpoint).model.get_weights()):
        np.testing.assert_array_equal(a, b)
