"""vocode(): inputs, batching, seeds, output contract, errors, and the checkpoint format."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from diffwave_vocoder import DiffWaveConfig, Vocoder, load_vocoder


def mel(frames, seed=0, n_mels=80):
    return np.random.default_rng(seed).uniform(0, 1, (frames, n_mels)).astype(np.float32)


def test_single_mel_gives_hop_times_frames_float32_in_range(small_vocoder):
    audio = small_vocoder.vocode(mel(12), seed=0)
    assert audio.shape == (12 * 256,)
    assert audio.dtype == np.float32
    assert np.all(np.abs(audio) <= 1.0)
    assert audio.std() > 0.01
    assert small_vocoder.sample_rate == 22050 and small_vocoder.hop_length == 256 and small_vocoder.n_mels == 80


def test_same_seed_same_audio_other_seed_other_audio(small_vocoder):
    a, b, c = (small_vocoder.vocode(mel(8), seed=s) for s in (5, 5, 6))
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_list_of_lengths_equals_each_alone(small_vocoder):
    mels = [mel(9, 1), mel(23, 2), mel(4, 3)]
    batch = small_vocoder.vocode(mels, seed=[11, 12, 13])
    assert [len(a) for a in batch] == [9 * 256, 23 * 256, 4 * 256]
    for m, s, a in zip(mels, (11, 12, 13), batch):
        assert np.abs(small_vocoder.vocode(m, seed=s) - a).max() <= 1e-4


def test_int_seed_applies_to_every_utterance(small_vocoder):
    batch = small_vocoder.vocode([mel(6, 1), mel(10, 2)], seed=4)
    assert np.abs(batch[1] - small_vocoder.vocode(mel(10, 2), seed=4)).max() <= 1e-4


def test_rank3_batch_and_full_schedule(small_vocoder):
    batch = np.stack([mel(5, 1), mel(5, 2)])
    audio = small_vocoder.vocode(batch, steps="full", seed=[1, 2])
    assert audio.shape == (2, 5 * 256)
    assert np.abs(audio[0] - small_vocoder.vocode(batch[0], steps="full", seed=1)).max() <= 1e-4


def test_torch_layout_and_tensor_inputs(small_vocoder):
    import tensorflow as tf

    m = mel(7)
    expected = small_vocoder.vocode(m, seed=3)
    assert np.array_equal(small_vocoder.vocode(torch.from_numpy(m.T.copy()), seed=3, layout="torch"), expected)
    assert np.array_equal(small_vocoder.vocode(tf.constant(m), seed=3), expected)
    assert np.array_equal(small_vocoder.vocode(m.T, seed=3, layout="auto"), expected)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((80,), np.float32), "rank 2"),
    (np.zeros((1, 2, 3, 80), np.float32), "rank 4"),
    (np.zeros((80, 12), np.float32), "looks like PyTorch layout"),
    (np.zeros((12, 64), np.float32), "n_mels=80"),
    (np.zeros((0, 80), np.float32), "zero frames"),
    (np.full((5, 80), np.nan, np.float32), "NaN"),
    (np.full((5, 80), np.inf, np.float32), "Inf"),
    (np.array([["x"] * 80] * 3), "numeric"),
])
def test_bad_input_names_the_problem(small_vocoder, bad, message):
    with pytest.raises(ValueError, match=message):
        small_vocoder.vocode(bad)


def test_ambiguous_auto_layout_is_refused(small_vocoder):
    with pytest.raises(ValueError, match="ambiguous"):
        small_vocoder.vocode(mel(80), layout="auto")


def test_seed_count_must_match(small_vocoder):
    with pytest.raises(ValueError, match="2 seeds for 3 utterances"):
        small_vocoder.vocode([mel(3), mel(4), mel(5)], seed=[1, 2])


def test_save_load_round_trip_is_exact(tmp_path, small_vocoder):
    path = tmp_path / "any name without suffix"
    small_vocoder.save(path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    loaded = load_vocoder(path)
    assert loaded.config == small_vocoder.config
    m = mel(10)
    assert np.array_equal(loaded.vocode(m, seed=9), small_vocoder.vocode(m, seed=9))
    small_vocoder.save(path)  # overwriting leaves no temporary siblings behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["any name without suffix"]


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_vocoder(tmp_path / "missing")
    (tmp_path / "file.pt").write_bytes(b"\x80\x02junk")
    with pytest.raises(ValueError, match="not a diffwave-vocoder checkpoint"):
        load_vocoder(tmp_path / "file.pt")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable checkpoint config"):
        load_vocoder(broken)
    Vocoder.from_config(DiffWaveConfig(residual_channels=4, residual_layers=2, dilation_cycle_length=1)).save(broken)
    (broken / "model.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=re.escape(f"cannot read weights from {broken / 'model.weights.h5'}")):
        load_vocoder(broken)


INFERENCE_ONLY = """
import sys
import numpy as np
import diffwave_vocoder as dv
vocoder = dv.load_vocoder(sys.argv[1])
mel = np.random.default_rng(0).uniform(0, 1, (6, vocoder.n_mels)).astype(np.float32)
assert vocoder.vocode(mel, seed=0).shape == (6 * vocoder.hop_length,)
assert sum(len(block) for block in vocoder.stream(mel, seed=0)) == 6 * vocoder.hop_length
print(" ".join(sorted(name for name in sys.modules if name.startswith("diffwave_vocoder"))))
"""


def test_inference_imports_no_training_evaluation_or_formats(small_checkpoint):
    """Loading a vocoder and vocoding (whole or streamed) never imports the subpackages above it."""
    result = subprocess.run([sys.executable, "-c", INFERENCE_ONLY, str(small_checkpoint)], capture_output=True,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert {"diffwave_vocoder.vocoder", "diffwave_vocoder.stream"} <= set(loaded)
    above = ("diffwave_vocoder.training", "diffwave_vocoder.evaluation", "diffwave_vocoder.formats")
    assert [name for name in loaded if name.startswith(above)] == []


def test_unconditional_generation():
    vocoder = Vocoder.from_config(DiffWaveConfig(residual_channels=8, residual_layers=3, dilation_cycle_length=3,
                                                 unconditional=True), seed=0)
    audio = vocoder.generate(num_samples=1000, batch_size=2, seed=[1, 2])
    assert audio.shape == (2, 1000) and audio.dtype == np.float32
    assert np.array_equal(audio[1], vocoder.generate(num_samples=1000, seed=2)[0])
    with pytest.raises(ValueError, match="unconditional"):
        vocoder.vocode(mel(3))


SAVE_FOREVER = """
import sys
from diffwave_vocoder import Vocoder, DiffWaveConfig
config = DiffWaveConfig(residual_channels=16, residual_layers=6, dilation_cycle_length=3)
vocoder = Vocoder.from_config(config, seed=0)
print("ready", flush=True)
while True:
    vocoder.save(sys.argv[1])
"""


@pytest.mark.slow
def test_kill_during_save_never_breaks_the_checkpoint(tmp_path, small_vocoder):
    target = tmp_path / "ckpt"
    small_vocoder.save(target)
    for delay in (0.05, 0.2, 0.45):
        process = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(target)], stdout=subprocess.PIPE,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stderr=subprocess.DEVNULL)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Whatever moment the kill hit, the target is a complete checkpoint (old or new).
        loaded = load_vocoder(target)
        assert loaded.vocode(mel(2), seed=0).shape == (512,)
