"""The mel front end reproduces lmnt-com/diffwave's preprocess.py on real speech."""
import numpy as np
import pytest

from diffwave_vocoder.io.audio import load_audio
from diffwave_vocoder.features.mel import MelConvention, compute_mel, mel_spectrogram
from helpers import torchaudio_recipe


def test_matches_reference_recipe_on_real_speech(speech_corpus):
    wavs = sorted((speech_corpus / "wavs").glob("*.wav"))
    assert len(wavs) >= 2
    for wav in wavs[:2]:
        audio, rate = load_audio(wav)
        ours = mel_spectrogram(audio, sample_rate=rate)
        expected = torchaudio_recipe(audio)
        assert ours.shape == expected.shape == (1 + len(audio) // 256, 80)
        assert ours.dtype == np.float32
        assert np.abs(ours - expected).max() <= 1e-5
        assert 0.2 < ours.mean() < 0.9  # speech, not silence or saturation


def test_frame_count_and_range():
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 22050).astype(np.float32)
    mel = compute_mel(audio)
    assert mel.shape == (MelConvention().frames_for(22050), 80) == (87, 80)
    assert mel.min() >= 0.0 and mel.max() <= 1.0


def test_other_sizes_follow_the_convention():
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, 16000).astype(np.float32)
    mel = mel_spectrogram(audio, sample_rate=16000, n_fft=512, hop_length=128, n_mels=64, fmin=0, fmax=8000)
    assert mel.shape == (1 + 16000 // 128, 64)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 100), np.float32), "1-D"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.0, np.nan] * 600, np.float32), "NaN"),
    (np.zeros(1000, np.int16), "integer"),
    (np.array(["a"] * 10), "numeric"),
])
def test_bad_audio_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        compute_mel(bad)


def test_wrong_sample_rate_is_an_error():
    with pytest.raises(ValueError, match="16000 Hz but the mel convention expects 22050 Hz"):
        compute_mel(np.zeros(4000, np.float32), sample_rate=16000)


def test_convention_rejects_impossible_parameters():
    with pytest.raises(ValueError, match="fmax"):
        MelConvention(fmax=20000.0)
    with pytest.raises(ValueError, match="mel_scale"):
        MelConvention(mel_scale="bark")
