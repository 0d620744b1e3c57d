"""Export for serving: the SavedModel runs in plain TensorFlow (this package never imported) and gives
the Keras vocoder's audio; the TFLite network and loop match the Keras model (float) or stay within
the int8 error bound; an energy-prior model's exports compute the prior from the mel as the vocoder does."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import tensorflow as tf

from diffwave_vocoder import DiffWaveConfig, Vocoder, resolve_schedule
from diffwave_vocoder.features.mel import compute_mel
from diffwave_vocoder.formats.export import export_saved_model, tflite_bytes
from diffwave_vocoder.sampler import Sampler
from helpers import run_main

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")

# Receptive field 1 + 2 + ... + 512 + 1 + 2 = 1026 samples per side.
CONFIG = DiffWaveConfig(residual_channels=8, residual_layers=12, dilation_cycle_length=10)

# Runs in `python -I` (no PYTHONPATH, no user site, no script directory) with diffwave_vocoder made
# unimportable, so only TensorFlow and the SavedModel itself are involved.
PLAIN_TF = textwrap.dedent("""
    import json, sys
    sys.modules["diffwave_vocoder"] = None  # any import of our package now fails
    import numpy as np, tensorflow as tf
    request = json.loads(sys.argv[1])
    model = tf.saved_model.load(request["model"])
    signature = model.signatures[request["signature"]]
    inputs = {name: tf.constant(np.load(path)) for name, path in request["inputs"].items()}
    np.save(request["output"], signature(**inputs)["audio"].numpy())
    print(json.dumps({"signatures": sorted(model.signatures),
                      "ours_loaded": [m for m in sys.modules if m.startswith("diffwave_vocoder.")],
                      "inputs": sorted(signature.structured_input_signature[1])}))
""")


def random_vocoder(config: DiffWaveConfig, seed: int) -> Vocoder:
    vocoder = Vocoder.from_config(config, seed=seed)
    layer = vocoder.model.get_layer("output_projection")
    layer.set_weights([np.random.default_rng(seed).normal(0, 0.3, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    return vocoder


def run_plain_tf(tmp_path, model, signature, **inputs) -> tuple[np.ndarray, dict]:
    paths = {}
    for name, value in inputs.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], value)
    request = {"model": str(model), "signature": signature, "inputs": paths, "output": str(tmp_path / "out.npy")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-I", "-c", PLAIN_TF, json.dumps(request)], capture_output=True,
                          text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return np.load(tmp_path / "out.npy"), json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def vocoder():
    return random_vocoder(CONFIG, seed=11)


@pytest.fixture(scope="module")
def saved_model(vocoder, tmp_path_factory):
    """Exported through the command line's main() from a checkpoint directory."""
    root = tmp_path_factory.mktemp("export")
    vocoder.save(root / "checkpoint")
    done = run_main("export", root / "checkpoint", root / "served", "--format", "saved_model")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    return root / "served"


def test_saved_model_runs_in_plain_tensorflow_and_equals_the_vocoder(vocoder, saved_model, tmp_path):
    mel = np.random.default_rng(0).uniform(0, 1, (2, 14, 80)).astype(np.float32)
    audio, info = run_plain_tf(tmp_path, saved_model, "vocode", mel=mel, seed=np.array([3, 8], np.int64))
    assert info["ours_loaded"] == []
    assert info["signatures"] == ["serving_default", "vocode", "vocode_full"]
    assert info["inputs"] == ["mel", "seed"]
    expected = vocoder.vocode(mel, seed=[3, 8])
    assert audio.shape == expected.shape == (2, 14 * 256) and audio.dtype == np.float32
    assert np.abs(audio - expected).max() <= 1e-5
    assert audio.std() > 0.01 and np.abs(audio).max() <= 1.0

    default, _ = run_plain_tf(tmp_path, saved_model, "serving_default", mel=mel[:1], seed=np.array([3], np.int64))
    assert np.abs(default[0] - audio[0]).max() <= 1e-5  # the seed is per utterance, not per batch
    config = json.loads((saved_model / "assets.extra" / "diffwave_config.json").read_text())
    assert config == vocoder.config.to_dict()


@pytest.mark.slow
def test_saved_model_full_schedule(vocoder, saved_model, tmp_path):
    mel = np.random.default_rng(1).uniform(0, 1, (1, 5, 80)).astype(np.float32)
    vocode_full = tf.saved_model.load(str(saved_model)).signatures["vocode_full"]
    audio = vocode_full(mel=tf.constant(mel), seed=tf.constant([4], tf.int64))["audio"].numpy()
    assert np.abs(audio - vocoder.vocode(mel, steps="full", seed=[4])).max() <= 1e-5


def test_unconditional_saved_model_generates(tmp_path):
    config = DiffWaveConfig(residual_channels=8, residual_layers=6, dilation_cycle_length=6, unconditional=True)
    vocoder = random_vocoder(config, seed=2)
    export_saved_model(vocoder, tmp_path / "served")
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    audio = loaded.signatures["generate"](length=tf.constant(700), seed=tf.constant([5, 6], tf.int64))["audio"]
    expected = np.stack([vocoder.generate(700, 1, seed=s)[0] for s in (5, 6)])
    assert np.abs(audio.numpy() - expected).max() <= 1e-5


def _tflite_runners(data: bytes):
    interpreter = tf.lite.Interpreter(model_content=data, num_threads=1)
    return interpreter.get_signature_runner("denoise"), interpreter.get_signature_runner("vocode")


@pytest.fixture(scope="module")
def lite_inputs():
    rng = np.random.default_rng(5)
    frames = 12
    return {"audio": rng.uniform(-1, 1, (1, frames * 256)).astype(np.float32),
            "mel": rng.uniform(0, 1, (1, frames, 80)).astype(np.float32),
            "noise": rng.standard_normal((6, 1, frames * 256)).astype(np.float32)}


@pytest.mark.parametrize("quantize, bound", [(None, 1e-5), ("int8", 0.1)])
def test_tflite_network_and_loop_against_keras(vocoder, lite_inputs, quantize, bound):
    """Float: the Keras model's numbers. int8 weights: max error within `bound` x the output's RMS."""
    denoise, vocode = _tflite_runners(tflite_bytes(vocoder, quantize))
    audio, mel, noise = lite_inputs["audio"], lite_inputs["mel"], lite_inputs["noise"]
    for step in (0.0, 22.992493):
        expected = vocoder.model([audio, np.array([step], np.float32), mel]).numpy()
        eps = denoise(audio=audio, step=np.array([step], np.float32), mel=mel)["noise"]
        assert np.abs(eps - expected).max() <= bound * np.sqrt(np.mean(expected ** 2))
    schedule = resolve_schedule(CONFIG, "fast")
    expected = Sampler(vocoder.model, CONFIG).sample(schedule, [audio.shape[1]], mel=mel, noise=noise)
    result = vocode(mel=mel, noise=noise)["audio"]
    assert np.abs(result - expected).max() <= bound * np.sqrt(np.mean(expected ** 2))
    if quantize:
        assert np.abs(result - expected).max() > 1e-6  # int8 weights really are in use


def test_energy_prior_exports_compute_the_prior_from_the_mel(speech_corpus, tmp_path):
    """The prior's std comes from the input mel inside both graphs: the SavedModel gives the vocoder's
    audio for real speech, the TFLite loop the sampler's for the same noise, and both differ from
    the same weights under the standard prior."""
    config = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2, prior="energy",
                            prior_energy_range=(0.1, 4.0))  # small: the prior is the point here
    vocoder = random_vocoder(config, seed=12)
    clips = sorted((speech_corpus / "wavs").glob("*.wav"))[:2]
    mel = np.stack([compute_mel(soundfile.read(clip, dtype="float32")[0])[30:44] for clip in clips])
    expected = vocoder.vocode(mel, seed=[3, 8])
    standard_prior = config.replace(prior="standard", prior_energy_range=None)
    standard = Vocoder(vocoder.model, standard_prior).vocode(mel, seed=[3, 8])
    assert np.abs(standard - expected).max() > 0.05

    export_saved_model(vocoder, tmp_path / "served")
    served = tf.saved_model.load(str(tmp_path / "served")).signatures["vocode"]
    audio = served(mel=tf.constant(mel), seed=tf.constant([3, 8], tf.int64))["audio"].numpy()
    assert np.abs(audio - expected).max() <= 1e-5

    _, vocode = _tflite_runners(tflite_bytes(vocoder))
    schedule = resolve_schedule(config, "fast")
    noise = np.random.default_rng(6).standard_normal((len(schedule), 1, mel.shape[1] * 256)).astype(np.float32)
    expected = Sampler(vocoder.model, config).sample(schedule, [noise.shape[2]], mel=mel[:1], noise=noise)
    result = vocode(mel=mel[:1], noise=noise)["audio"]
    assert np.abs(result - expected).max() <= 1e-5 * np.sqrt(np.mean(expected ** 2))


def test_cli_export_errors_are_one_line(tmp_path, vocoder):
    vocoder.save(tmp_path / "checkpoint")
    done = run_main("export", tmp_path / "checkpoint", tmp_path / "out", "--format", "saved_model",
                    "--quantize", "int8")
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0
    assert "--quantize applies to --format tflite only" in done.stderr
    assert not (tmp_path / "out").exists()
