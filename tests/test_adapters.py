"""Mel adapters: each toolkit's recipe against a transcription of its code, exactness where the
conversion can be exact, layouts, and accuracy on real speech held at the measured values."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile
import tensorflow as tf
import tensorflow.experimental.numpy as tnp
import torch

from diffwave_vocoder.evaluation.corpus import make_speech_corpus
from diffwave_vocoder import get_adapter
from diffwave_vocoder.adapters import CONVENTIONS, MelAdapter, load_stats
from diffwave_vocoder.adapters import conventions
from diffwave_vocoder.features.mel import MelConvention, compress, compute_mel, decompress
from helpers import hifigan_reference, slaney_filterbank

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "adapter_accuracy.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("adapter_accuracy", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> list[np.ndarray]:
    """The benchmark's corpus (8 clips, seed 1), so the held values are those of benchmarks/README.md,
    "Mel adapter accuracy"."""
    corpus = make_speech_corpus(tmp_path_factory.mktemp("adapter-speech"), clips=8, seed=1)
    return [soundfile.read(str(w), dtype="float32")[0] for w in sorted((corpus / "wavs").glob("*.wav"))]


# --- each recipe against an independent transcription of its toolkit's code ----------------------

def tacotron2_reference(y):
    """NVIDIA/tacotron2 TacotronSTFT: conv1d Fourier basis with scipy's periodic Hann, reflect pad
    n_fft/2, sqrt(re^2 + im^2), librosa mel 0-8 kHz, dynamic_range_compression ln(clamp(x, 1e-5))."""
    n_fft, hop = 1024, 256
    fourier = np.fft.fft(np.eye(n_fft))
    cutoff = n_fft // 2 + 1
    basis = np.vstack([np.real(fourier[:cutoff]), np.imag(fourier[:cutoff])])
    basis = torch.FloatTensor(basis[:, None, :] * scipy.signal.get_window("hann", n_fft, fftbins=True))
    x = torch.nn.functional.pad(torch.from_numpy(y)[None, None], (n_fft // 2, n_fft // 2), mode="reflect")
    out = torch.nn.functional.conv1d(x[:, 0:1], basis, stride=hop)
    magnitude = torch.sqrt(out[:, :cutoff] ** 2 + out[:, cutoff:] ** 2)
    mel = torch.matmul(torch.from_numpy(slaney_filterbank(0.0, 8000.0)), magnitude)
    return torch.log(torch.clamp(mel, min=1e-5))[0].numpy().T


def espnet_reference(y):
    """espnet2 LogMelFbank: Stft (center, reflect), sqrt(clamp(power, 1e-10)), LogMel log10."""
    spec = torch.stft(torch.from_numpy(y), 1024, hop_length=256, win_length=1024, window=torch.hann_window(1024),
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    amp = torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=1e-10))
    mel = torch.matmul(amp.T, torch.from_numpy(slaney_filterbank(80.0, 7600.0)).T)
    return torch.clamp(mel, min=1e-10).log10().numpy()


def parallel_wavegan_reference(y):
    """ParallelWaveGAN bin/preprocess.py logmelfilterbank (also TensorFlowTTS's preprocess)."""
    x_stft = librosa.stft(y, n_fft=1024, hop_length=256, win_length=1024, window="hann", pad_mode="reflect")
    mel = np.maximum(1e-10, np.dot(np.abs(x_stft).T, slaney_filterbank(80.0, 7600.0).T))
    return np.log10(mel)


def coqui_reference(y):
    """Coqui AudioProcessor.melspectrogram with BaseAudioConfig defaults."""
    d = librosa.stft(y=y, n_fft=1024, hop_length=256, win_length=1024, pad_mode="reflect", window="hann",
                     center=True)
    s = 20 * np.log10(np.maximum(1e-8, np.dot(slaney_filterbank(0.0, None), np.abs(d))))
    s = (s - 20 - -100) / 100
    return np.clip(8 * s - 4, -4, 4).T


def nemo_reference(y):
    """NeMo FilterbankFeatures (fastpitch v1.05): symmetric Hann, constant centre pad, log(x + 1e-5)."""
    spec = torch.stft(torch.from_numpy(y), 1024, hop_length=256, win_length=1024,
                      window=torch.hann_window(1024, periodic=False), center=True, pad_mode="constant",
                      return_complex=True)
    magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1))
    mel = torch.matmul(torch.from_numpy(slaney_filterbank(0.0, 8000.0)), magnitude)
    return torch.log(mel + 1e-5).numpy().T


REFERENCES = {"tacotron2": tacotron2_reference, "hifigan": hifigan_reference, "espnet": espnet_reference,
              "parallel_wavegan": parallel_wavegan_reference, "tensorflowtts": parallel_wavegan_reference,
              "coqui": coqui_reference, "nemo": nemo_reference}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_recipe_matches_a_transcription_of_the_toolkit_code(name, speech):
    audio = speech[0]
    ours = compute_mel(audio, CONVENTIONS[name]())
    theirs = REFERENCES[name](audio)
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, atol=2e-3 * scale)


def test_hifigan_frames_sit_half_a_hop_after_tacotron2s():
    audio = np.zeros(256 * 40, np.float32)
    audio[256 * 20 + 128] = 1.0  # an impulse centred on HiFi-GAN frame 20, between Tacotron 2 frames 20 and 21
    hifi, taco = compute_mel(audio, CONVENTIONS["hifigan"]()), compute_mel(audio, CONVENTIONS["tacotron2"]())
    assert (len(hifi), len(taco)) == (40, 41)
    assert np.argmax(hifi.sum(axis=1)) == 20
    np.testing.assert_allclose(taco[20].sum(), taco[21].sum(), rtol=1e-4)


# --- exactness where the conversion can be exact ------------------------------------------------

def test_lmnt_adapter_is_the_identity(speech):
    mel = compute_mel(speech[1])
    assert get_adapter("lmnt").is_identity
    np.testing.assert_array_equal(get_adapter("lmnt")(mel), mel)


def test_identical_recipes_convert_exactly(speech):
    adapter = get_adapter("speechbrain", target=CONVENTIONS["tacotron2"]())
    mel = compute_mel(speech[1], CONVENTIONS["speechbrain"]())
    np.testing.assert_array_equal(adapter(mel), mel)


@pytest.mark.parametrize("source", [
    dict(compression="log", compression_params={"base": 10.0, "guard": "clamp", "eps": 1e-5}),
    dict(compression="log", compression_params={"base": np.e, "guard": "add", "eps": 1e-5}),
    dict(compression="coqui", compression_params={"max_norm": 1.0, "symmetric": False}),
])
def test_same_filterbank_other_compression_is_exact(source, speech):
    """Same STFT, filterbank and framing: only the compression changes, exact wherever lmnt does not clip."""
    convention = MelConvention(**source)
    mel = compute_mel(speech[2], convention)
    adapted = get_adapter("generic", **source)(mel)
    np.testing.assert_allclose(adapted, compute_mel(speech[2]), atol=1e-5)


def test_zscore_stats_invert_exactly_to_raw_log10(tmp_path, speech):
    raw_convention = CONVENTIONS["parallel_wavegan"]()
    raw = compute_mel(speech[3], raw_convention)
    np.save(tmp_path / "stats.npy", np.stack([raw.mean(axis=0), raw.std(axis=0)]))
    source = CONVENTIONS["parallel_wavegan"](stats=tmp_path / "stats.npy")
    normalised = compute_mel(speech[3], source)
    np.testing.assert_allclose(normalised, (raw - raw.mean(axis=0)) / raw.std(axis=0), atol=1e-4)
    back = MelAdapter(source, target=raw_convention)(normalised)
    np.testing.assert_allclose(back, raw, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_every_compression_round_trips(name):
    convention = CONVENTIONS[name]() if name not in ("parallel_wavegan", "espnet", "tensorflowtts") else \
        CONVENTIONS[name](stats=(np.linspace(-4, -1, 80), np.linspace(0.5, 1.5, 80)))
    magnitudes = np.geomspace(1e-3, 5.0, 80)[None, :].repeat(3, axis=0)  # inside every toolkit's range
    features = compress(magnitudes, convention)
    np.testing.assert_allclose(decompress(features, convention), magnitudes, rtol=1e-5)
    # The same formula as graph ops (what an exported energy-prior model runs), in float32.
    in_graph = tf.function(lambda f: decompress(f, convention, tnp))(tf.constant(features))
    assert in_graph.dtype == tf.float32
    np.testing.assert_allclose(in_graph.numpy(), magnitudes, rtol=1e-4)


def test_stats_files_of_each_toolkit(tmp_path):
    import h5py

    mean, scale = np.linspace(-5, -2, 80), np.linspace(0.3, 0.9, 80)
    with h5py.File(tmp_path / "stats.h5", "w") as f:
        f["mean"], f["scale"] = mean, scale
    raw = np.random.default_rng(0).normal(mean, scale, size=(500, 80))
    np.savez(tmp_path / "feats_stats.npz", count=np.array(len(raw)), sum=raw.sum(0), sum_square=(raw ** 2).sum(0))
    np.save(tmp_path / "stats.npy", np.stack([mean, scale]))
    for file in ("stats.h5", "stats.npy"):
        got = load_stats(tmp_path / file)
        np.testing.assert_allclose(got[0], mean)
        np.testing.assert_allclose(got[1], scale)
    got_mean, got_scale = load_stats(tmp_path / "feats_stats.npz")
    np.testing.assert_allclose(got_mean, raw.mean(0), rtol=1e-10)
    np.testing.assert_allclose(got_scale, raw.std(0), rtol=1e-8)


@pytest.mark.parametrize("stats, message", [
    ("missing.npy", "statistics file not found"),
    ("bad.txt", "expected .npy, .npz or .h5"),
    ("wrong.npy", "of shape (2, n_mels), got shape (3, 80)"),
    ("other.npz", "expected count/sum/sum_square"),
    ("zero.npy", "every scale > 0"),
])
def test_bad_stats_are_clear_errors(tmp_path, stats, message):
    (tmp_path / "bad.txt").write_text("1 2 3")
    np.save(tmp_path / "wrong.npy", np.ones((3, 80)))
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    np.save(tmp_path / "zero.npy", np.stack([np.ones(80), np.zeros(80)]))
    with pytest.raises(ValueError) as raised:
        load_stats(tmp_path / stats)
    assert message in str(raised.value)


def test_stats_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="rejected parameters"):
        CONVENTIONS["espnet"](stats=(np.zeros(40), np.ones(40)))


def test_coqui_settings_map_onto_its_normalisation():
    plain = conventions.coqui(signal_norm=False, log_func="np.log", spec_gain=1.0, mel_fmax=8000.0)
    assert (plain.compression, plain.params["base"], plain.params["gain"], plain.f_max) == ("log", np.e, 1.0, 8000.0)
    unit = conventions.coqui(symmetric_norm=False, max_norm=1.0)
    x = np.array([[1e-4, 1e-2, 1.0]])
    np.testing.assert_allclose(compress(x, unit), [[0.0, 0.4, 0.8]], atol=1e-6)  # (20log10 x - 20 + 100)/100
    with pytest.raises(ValueError, match="log_func must be one of"):
        conventions.coqui(log_func="np.log2")


# --- retiming, band extension, methods ------------------------------------------------------------

def test_other_hop_and_sample_rate_are_resampled_in_time(speech):
    audio24 = librosa.resample(speech[4], orig_sr=22050, target_sr=24000)
    libritts = CONVENTIONS["parallel_wavegan"](sample_rate=24000, n_fft=2048, win_length=1200, hop_length=300)
    adapter = get_adapter("parallel_wavegan", sample_rate=24000, n_fft=2048, win_length=1200, hop_length=300)
    adapted, direct = adapter(compute_mel(audio24, libritts)), compute_mel(speech[4])
    assert abs(len(adapted) - len(direct)) <= 1  # the audio length is only known to within a hop
    n = min(len(adapted), len(direct))
    in_band = librosa.mel_frequencies(82, fmin=20, fmax=11025, htk=True)[1:-1] < 7600
    assert np.abs(adapted[:n, in_band] - direct[:n, in_band]).mean() < 0.02  # 2 dB


def test_bands_the_source_never_saw_are_extended_or_left_silent(speech):
    mel = compute_mel(speech[5], CONVENTIONS["tacotron2"]())
    above_8k = librosa.mel_frequencies(82, fmin=20, fmax=11025, htk=True)[:-2] > 8000  # whole band above
    silent = get_adapter("tacotron2", extend_db=None)(mel)
    extended = get_adapter("tacotron2")(mel)
    assert np.all(silent[:, above_8k] == 0.0)  # lmnt's floor
    assert extended[:, above_8k].mean() > 0.1
    np.testing.assert_array_equal(silent[:, ~above_8k][:, 5:60], extended[:, ~above_8k][:, 5:60])


def test_nnls_method_is_exact_nonnegative_least_squares(speech):
    mel = compute_mel(speech[6][:22050], CONVENTIONS["tacotron2"]())
    by_nnls = get_adapter("tacotron2", method="nnls")(mel)
    by_pinv = get_adapter("tacotron2")(mel)
    direct = compute_mel(speech[6][:22050])
    assert by_nnls.shape == direct.shape and np.all(np.isfinite(by_nnls))
    # Both land within a few dB on average; pinv is the default because it is closer
    # (benchmarks/README.md, "Mel adapter accuracy").
    assert np.abs(by_pinv - direct).mean() < np.abs(by_nnls - direct).mean() < 0.05


# --- layouts --------------------------------------------------------------------------------------

def test_layouts_numpy_tf_torch_batched_and_lists(speech):
    import tensorflow as tf

    mel = compute_mel(speech[7], CONVENTIONS["tacotron2"]())  # (frames, 80)
    adapter = get_adapter("tacotron2")
    expected = adapter(mel)
    np.testing.assert_array_equal(adapter(mel.T, layout="torch"), expected)
    np.testing.assert_array_equal(adapter(mel.T, layout="auto"), expected)
    np.testing.assert_array_equal(adapter(tf.constant(mel)), expected)
    np.testing.assert_array_equal(adapter(torch.from_numpy(mel.T.copy()), layout="torch"), expected)
    batch = adapter(torch.from_numpy(np.stack([mel.T, mel.T])), layout="torch")
    assert batch.shape == (2,) + expected.shape
    np.testing.assert_array_equal(batch[1], expected)
    short = mel[:50]
    listed = adapter([mel, short])
    assert isinstance(listed, list) and [len(m) for m in listed] == [len(expected), 50]


@pytest.mark.parametrize("mel, layout, message", [
    (np.zeros((80, 80)), "auto", "ambiguous"),
    (np.zeros((100, 64)), "auto", "n_mels=80"),
    (np.zeros((80, 30)), "tf", "use layout='torch'"),
    (np.zeros((2, 3, 4, 80)), "tf", "rank"),
    (np.zeros((0, 80)), "tf", "zero frames"),
    (np.full((5, 80), np.nan), "tf", "NaN"),
])
def test_layout_errors_name_what_was_expected(mel, layout, message):
    with pytest.raises(ValueError) as raised:
        get_adapter("tacotron2")(mel, layout=layout)
    assert message in str(raised.value)


def test_vocode_takes_a_torch_layout_mel_through_a_named_adapter(small_vocoder, speech):
    mel = torch.from_numpy(compute_mel(speech[0][:11025], CONVENTIONS["hifigan"]()).T.copy())[None]  # (1, 80, T)
    audio = small_vocoder.vocode(mel, layout="torch", adapter="hifigan", seed=0)
    assert audio.shape == (1, (mel.shape[-1] + 1) * small_vocoder.hop_length)  # HiFi-GAN frames: one fewer


# --- accuracy on real speech, held at the values measured by benchmarks/adapter_accuracy.py -----

# name: (mean dB, p99 dB, mean dB within the source's band) on 8 clips of corpus seed 1
# (benchmarks/README.md, "Mel adapter accuracy"), drawn from every voice .ci/install provides (flite
# slt/rms/awb/kal16, six espeak-ng variants, festival cmu_us_slt_arctic_hts/kal_diphone/ked_diphone)
# with Debian 12's espeak-ng 1.51, flite 2.2, festival 2.5.0 and sox 14.4.2: other voices or versions
# synthesise other wavs, and the margins may not hold.
MEASURED = {
    "lmnt": (0.0, 0.0, 0.0),
    "tacotron2": (1.98, 27.81, 0.80),
    "hifigan": (2.47, 27.61, 1.34),
    "parallel_wavegan": (2.74, 39.26, 0.59),
    "espnet": (2.74, 39.26, 0.59),
    "coqui": (2.41, 19.67, 2.41),
    "tensorflowtts": (2.74, 39.26, 0.59),
    "nemo": (1.99, 27.81, 0.81),
    "nemo_22050": (0.88, 7.65, 0.88),
    "speechbrain": (1.98, 27.81, 0.80),
}


@pytest.fixture(scope="session")
def benchmark_adapters(tmp_path_factory, speech):
    bench = _benchmark()
    return bench, bench.adapters(bench.write_stats(speech, tmp_path_factory.mktemp("stats")))


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_adapter_accuracy_on_speech_holds(name, speech, benchmark_adapters):
    bench, adapters = benchmark_adapters
    result = bench.measure(adapters[name], speech)
    mean_db, p99_db, band_db = MEASURED[name]
    # The corpus tool's sox dither changes the wavs by 1 LSB from run to run: small margins.
    assert result["mean_db"] <= mean_db * 1.05 + 0.02
    assert result["p99_db"] <= p99_db * 1.03 + 0.3
    assert result["band_mean_db"] <= band_db * 1.05 + 0.02
    assert np.isclose(result["mean"] * 100, result["mean_db"], rtol=1e-3, atol=1e-6)  # lmnt: 1.0 = 100 dB


def test_example_tts_pipeline_writes_the_vocoded_wav(tmp_path):
    import subprocess
    import sys

    example = Path(__file__).resolve().parents[1] / "examples" / "tts_pipeline.py"
    out = tmp_path / "speech.wav"
    run = subprocess.run([sys.executable, str(example), str(out), "--text", "Hello there."],
                         capture_output=True, text=True, timeout=600)  # the shipped vocoder
    assert run.returncode == 0, run.stderr[-2000:]
    frames = int(run.stdout.split(" Tacotron 2 frames")[0].split()[-1])
    audio, rate = soundfile.read(str(out), dtype="float32")
    assert rate == 22050 and len(audio) == frames * 256  # Tacotron 2 and lmnt frames coincide
    assert np.abs(audio).max() > 0
