"""PriorGrad's energy prior: its std per frame, the sampler and stream scaled by it exactly, the
trainer's noise and weighted loss, the range measured once per run, and the lmnt default untouched."""
import json

import numpy as np
import pytest
import soundfile
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from diffwave_vocoder import DiffWaveConfig, Vocoder
from diffwave_vocoder.features.mel import compress, compute_mel
from diffwave_vocoder.prior import energy_range, frame_energy, prior_std
from diffwave_vocoder.sampler import InferenceOptions
from diffwave_vocoder.schedule import drawable_levels, noise_levels, resolve_schedule
from diffwave_vocoder.training.data import ClipSet
from diffwave_vocoder.training.trainer import Trainer, TrainingSettings, diffusion_loss
from helpers import audible_vocoder, run_main

RANGE = (0.1, 4.0)
ENERGY = DiffWaveConfig(residual_channels=8, residual_layers=12, dilation_cycle_length=10, prior="energy",
                        prior_energy_range=RANGE)
TINY = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2, prior="energy")
SETTINGS = dict(batch_size=4, crop_frames=8, checkpoint_every=2, val_vocode_clips=0, learning_rate=5e-3,
                val_fraction=0.0)


def speech_mel(speech_corpus, index: int = 0) -> np.ndarray:
    """The mel (frames, 80) of a clip of real speech."""
    audio, _ = soundfile.read(sorted((speech_corpus / "wavs").glob("*.wav"))[index], dtype="float32")
    return compute_mel(audio, DiffWaveConfig().mel)


@pytest.fixture(scope="module")
def energy_vocoder():
    vocoder = audible_vocoder(ENERGY, seed=3, std=0.3)
    vocoder.inference_options = InferenceOptions(chunk_length=256)
    return vocoder


def test_config_round_trips_the_prior_and_refuses_bad_values():
    assert DiffWaveConfig().prior == "standard" and DiffWaveConfig().prior_energy_range is None
    assert DiffWaveConfig.from_json(ENERGY.to_json()) == ENERGY
    for fields, message in [(dict(prior="gaussian"), "prior must be one of"),
                            (dict(prior="energy", unconditional=True), "conditional"),
                            (dict(prior_energy_range=(2.0, 1.0)), "low < high"),
                            (dict(prior_energy_range=(0.0, float("nan"))), "finite"),
                            (dict(prior_std_min=0.0), "prior_std_min")]:
        with pytest.raises(ValueError, match=message):
            DiffWaveConfig(**fields)


def test_prior_std_follows_frame_energy_with_a_floor(speech_corpus):
    mel = speech_mel(speech_corpus)
    std = prior_std(mel, ENERGY)
    assert std.shape == (len(mel),) and std.dtype == np.float32
    energy = frame_energy(mel, ENERGY.mel)
    expected = np.maximum((energy - RANGE[0]) / (RANGE[1] - RANGE[0]), ENERGY.prior_std_min)
    np.testing.assert_allclose(std, expected, rtol=1e-6)
    # Speech spans quiet and loud frames: the std is the floor in silence and well above it in speech.
    assert std.min() == pytest.approx(0.1) and std.max() > 0.3
    silence = compress(np.zeros((5, 80)), ENERGY.mel)
    np.testing.assert_allclose(prior_std(silence, ENERGY), 0.1)
    np.testing.assert_array_equal(prior_std(mel, DiffWaveConfig()), np.ones(len(mel), np.float32))
    with pytest.raises(ValueError, match="no prior_energy_range"):
        prior_std(mel, TINY)


def test_energy_range_spans_every_frame(speech_corpus):
    mels = [speech_mel(speech_corpus, i) for i in range(3)]
    low, high = energy_range(mels, ENERGY.mel)
    energies = np.concatenate([frame_energy(m, ENERGY.mel) for m in mels])
    assert (low, high) == (energies.min(), energies.max())
    with pytest.raises(ValueError, match="energy range"):
        energy_range([np.zeros((0, 80))], ENERGY.mel)


def test_sampler_scales_every_noise_draw_by_the_prior(speech_corpus):
    """With the network's output zeroed the reverse process is c1-scaled noise, so the sampler's
    audio can be computed here from the injected noise: each draw times the prior's std."""
    vocoder = Vocoder.from_config(ENERGY, seed=0)  # the output projection starts at zero: eps = 0
    mel = speech_mel(speech_corpus)[:40]
    schedule = resolve_schedule(ENERGY, "fast")
    length = len(mel) * ENERGY.hop_length
    noise = np.random.default_rng(1).normal(size=(len(schedule), 1, length)).astype(np.float32)
    audio = vocoder._sampler.sample(schedule, [length], mel=mel[None], noise=noise)[0]
    scale = np.repeat(prior_std(mel, ENERGY), ENERGY.hop_length)
    x = noise[0, 0] * scale
    for i, n in enumerate(range(len(schedule) - 1, -1, -1)):
        x = schedule.c1[n] * x
        if n > 0:
            x = x + schedule.sigma[n] * scale * noise[i + 1, 0]
        x = np.clip(x, -1.0, 1.0)
    np.testing.assert_allclose(audio, x, atol=1e-6)
    unscaled = vocoder._sampler.sample(schedule, [length], mel=mel[None], noise=noise / scale)[0]
    assert np.abs(audio - unscaled).max() > 0.1


def test_energy_prior_audio_is_the_same_batched_chunked_and_streamed(energy_vocoder, speech_corpus):
    mels = [speech_mel(speech_corpus, 0)[:50], speech_mel(speech_corpus, 1)[:23]]
    alone = [energy_vocoder.vocode(m, seed=s) for m, s in zip(mels, (4, 5))]
    batched = energy_vocoder.vocode(mels, seed=[4, 5])
    for a, b in zip(alone, batched):
        assert np.abs(a - b).max() <= 1e-5
    long = Vocoder(energy_vocoder.model, ENERGY)
    long.inference_options = InferenceOptions(chunk_length=256, chunk_threshold=1024)  # mel chunk by chunk
    assert np.abs(long.vocode(mels[0], seed=4) - alone[0]).max() <= 1e-5
    streamed = np.concatenate(list(energy_vocoder.stream(mels[0], seed=4, block_frames=3)))
    assert np.abs(streamed - alone[0]).max() <= 1e-5
    session = energy_vocoder.stream_session(seed=4, block_frames=2)
    parts = [session.push(mels[0][i:i + 7]) for i in range(0, len(mels[0]), 7)] + [session.finish()]
    assert np.abs(np.concatenate(parts) - alone[0]).max() <= 1e-5
    standard = Vocoder(energy_vocoder.model, ENERGY.replace(prior="standard", prior_energy_range=None))
    assert np.abs(standard.vocode(mels[0], seed=4) - alone[0]).max() > 0.05  # the prior changes the audio


def test_loss_draws_prior_scaled_noise_and_weights_the_error():
    model = audible_vocoder(ENERGY, seed=2, std=0.3).model
    rng = np.random.default_rng(0)
    frames, hop = 4, ENERGY.hop_length
    std = rng.uniform(0.1, 1.0, (2, frames)).astype(np.float32)
    batch = {"audio": rng.uniform(-0.5, 0.5, (2, frames * hop)).astype(np.float32),
             "noise": rng.normal(size=(2, frames * hop)).astype(np.float32),
             "step": np.array([3, 40], np.int32), "mel": rng.uniform(0, 1, (2, frames, 80)).astype(np.float32),
             "prior_std": std}
    levels = tf.constant(noise_levels(ENERGY))
    loss = diffusion_loss(model, {k: tf.constant(v) for k, v in batch.items()}, levels, "l1", hop, training=False)
    scale = np.repeat(std, hop, axis=1)
    noise = batch["noise"] * scale
    level = noise_levels(ENERGY)[batch["step"]][:, None]
    noisy = np.sqrt(level) * batch["audio"] + np.sqrt(1 - level) * noise
    predicted = model([noisy, batch["step"].astype(np.float32), batch["mel"]]).numpy()
    np.testing.assert_allclose(loss.numpy(), np.mean(np.abs(noise - predicted) / scale, axis=1), rtol=1e-5)

    # An index past the training steps is an inference level, run at its fractional step.
    levels, network_steps = drawable_levels(ENERGY)
    fast = {**batch, "step": np.array([50, 55], np.int32)}
    loss = diffusion_loss(model, {k: tf.constant(v) for k, v in fast.items()}, tf.constant(levels), "l1", hop,
                          training=False, network_steps=tf.constant(network_steps))
    level = levels[fast["step"]][:, None]
    noisy = np.sqrt(level) * batch["audio"] + np.sqrt(1 - level) * noise
    assert 0.0 < network_steps[51] < 1.0 and level[0, 0] == np.float32(1 - ENERGY.inference_noise_schedule[0])
    predicted = model([noisy, network_steps[fast["step"]], batch["mel"]]).numpy()
    np.testing.assert_allclose(loss.numpy(), np.mean(np.abs(noise - predicted) / scale, axis=1), rtol=1e-5)


def test_trainer_measures_the_range_once_and_resumes_with_the_recipe_config(speech_corpus, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(run, speech_corpus, config=TINY, settings=TrainingSettings(**SETTINGS, max_steps=2))
    clips = ClipSet.scan(speech_corpus, config=TINY, crop_frames=8)
    assert trainer.config.prior_energy_range == pytest.approx(energy_range(clips.mels(), TINY.mel))
    result = trainer.fit()
    stored = json.loads((run / "config.json").read_text())
    assert stored["prior"] == "energy" and stored["prior_energy_range"] == list(trainer.config.prior_energy_range)
    exported = Vocoder.load(result.exported)
    assert exported.config == trainer.config
    assert np.isfinite(exported.vocode(speech_mel(speech_corpus)[:10], seed=0)).all()
    # The recipe's config leaves the range to be measured: resuming with it continues the run.
    resumed = Trainer(run, speech_corpus, config=TINY, settings=TrainingSettings(**SETTINGS, max_steps=4)).fit()
    assert resumed.step == 4


def test_prior_std_in_a_graph_equals_numpy(speech_corpus):
    """The graph form (what exported models run on their input mel) of the std the sampler uses."""
    mels = np.stack([speech_mel(speech_corpus, i)[:60] for i in (0, 1)])
    in_graph = tf.function(lambda mel: prior_std(mel, ENERGY, tnp))(tf.constant(mels))
    assert in_graph.dtype == tf.float32 and in_graph.shape == (2, 60)
    np.testing.assert_allclose(in_graph.numpy(), prior_std(mels, ENERGY), rtol=1e-5)
    standard = tf.function(lambda mel: prior_std(mel, DiffWaveConfig(), tnp))(tf.constant(mels))
    np.testing.assert_array_equal(standard.numpy(), np.ones((2, 60), np.float32))


def test_info_shows_the_prior(energy_vocoder, tmp_path):
    checkpoint = energy_vocoder.save(tmp_path / "model")
    info = run_main("info", str(checkpoint))
    assert info.returncode == 0
    assert "prior: energy (PriorGrad; frame energy 0.1..4 -> std 0..1, std at least 0.1)" in info.stdout
