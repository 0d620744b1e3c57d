"""Training data: discovery, skipping and errors, exact crops and mels, and order keyed by the example index."""
from __future__ import annotations

import json
import logging
import shutil

from pathlib import Path

import numpy as np
import pytest
import soundfile

from diffwave_vocoder.io.audio import find_wavs
from diffwave_vocoder.training.data import (MEL_RECORD_NAME, ClipSet, evaluation_dataset, example_indices,
                                            make_dataset)
from diffwave_vocoder.adapters.conventions import CONVENTIONS
from diffwave_vocoder.features.mel import MelConvention, compute_mel
from diffwave_vocoder.config import DiffWaveConfig

from diffwave_vocoder.evaluation.corpus import make_speech_corpus

CONFIG = DiffWaveConfig()
HOP = CONFIG.hop_length


def tone(seconds: float, seed: int, rate: int = 22050) -> np.ndarray:
    """A chirp plus noise: every frame differs, so an off-by-one crop cannot pass."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def write(path, audio, rate=22050):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real synthesised speech in LJSpeech layout (5 clips)."""
    return make_speech_corpus(tmp_path_factory.mktemp("ljspeech"), clips=5, seed=3)


@pytest.fixture
def tones(tmp_path):
    """Float wavs in nested folders: 1.0 s, 0.6 s, 1.4 s and 0.8 s."""
    root = tmp_path / "tones"
    for i, (sub, seconds) in enumerate([("a", 1.0), ("a/b", 0.6), ("c", 1.4), ("", 0.8)]):
        write(root / sub / f"clip{i}.wav", tone(seconds, i))
    return root


def read(path):
    return soundfile.read(str(path), dtype="float32")[0]


def test_ljspeech_folder_uses_metadata_and_reports_missing_clips(corpus, tmp_path, caplog):
    root = tmp_path / "lj"
    shutil.copytree(corpus, root)
    listed = [line.split("|")[0] for line in (root / "metadata.csv").read_text().splitlines()]
    write(root / "wavs" / "not-listed.wav", tone(1.0, 9))
    with open(root / "metadata.csv", "a") as f:
        f.write("LJ999-0001|gone|gone\n")
    with caplog.at_level(logging.WARNING):
        wavs = find_wavs(root)
    assert [w.stem for w in wavs] == sorted(listed)
    assert "LJ999-0001.wav" in caplog.text


def test_directory_is_searched_recursively_in_sorted_order(tones):
    wavs = find_wavs(tones)
    assert [w.relative_to(tones).as_posix() for w in wavs] == [
        "a/b/clip1.wav", "a/clip0.wav", "c/clip2.wav", "clip3.wav"]


def test_missing_or_empty_data_set_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="data set not found.*nowhere"):
        find_wavs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .wav files under"):
        find_wavs(tmp_path / "empty")


def test_short_clips_are_skipped_with_a_count(tones, caplog):
    # 62 frames need (62 - 1) * 256 = 15,616 samples: the 0.6 s clip (13,230) is too short.
    with caplog.at_level(logging.INFO):
        clips = ClipSet.scan(tones, CONFIG, crop_frames=62)
    assert sorted(c.path.name for c in clips.clips) == ["clip0.wav", "clip2.wav", "clip3.wav"]
    assert "skipped 1 of 4 clips shorter than one crop (62 mel frames)" in caplog.text


def test_unreadable_files_are_reported_by_name_and_skipped(tones, caplog):
    (tones / "c" / "broken.wav").write_bytes(b"RIFF\x00\x00junk that is not a wav file")
    with caplog.at_level(logging.WARNING):
        clips = ClipSet.scan(tones, CONFIG, crop_frames=8)
    assert "broken.wav" in caplog.text and "skipped 1 unreadable file" in caplog.text
    assert len(clips) == 4


def test_a_clip_that_breaks_during_training_is_replaced_and_reported(tones, caplog):
    clips = ClipSet.scan(tones, CONFIG, crop_frames=8)
    victim = clips.clips[clips.clip_index(0)]
    victim.path.write_bytes(victim.path.read_bytes()[:200])  # truncated after the scan
    with caplog.at_level(logging.WARNING):
        audio, mel = clips.example(0)
    assert victim.path.name in caplog.text
    assert audio.shape == (8 * HOP,) and mel.shape == (8, 80) and np.abs(audio).max() > 0
    caplog.clear()
    clips.example(1)  # reported once, then left out quietly
    assert victim.path.name not in caplog.text


def test_wrong_sample_rate_is_an_error_naming_file_and_rates(tones):
    write(tones / "c" / "telephone.wav", tone(1.0, 5, 8000), 8000)
    with pytest.raises(ValueError, match=r"1 of 5 files.*22050 Hz.*telephone.wav at 8000 Hz"):
        ClipSet.scan(tones, CONFIG, crop_frames=8)


def crop_start(audio_crop, audio, frames):
    """The frame at which a crop was cut, found by search (there is exactly one)."""
    starts = [s for s in range(len(audio) // HOP + 1)
              if np.array_equal(audio_crop[:frames * HOP][:len(audio[s * HOP:(s + frames) * HOP])],
                                audio[s * HOP:(s + frames) * HOP])]
    assert len(starts) == 1
    return starts[0]


@pytest.mark.parametrize("config", [CONFIG, CONFIG.with_mel(CONVENTIONS["hifigan"]()),
                                    CONFIG.with_mel(CONVENTIONS["nemo"]()),
                                    CONFIG.with_mel(MelConvention(pad=700, pad_mode="symmetric"))],
                         ids=["lmnt", "hifigan", "nemo-constant-pad", "pad-and-centre"])
def test_crops_are_the_files_samples_and_their_whole_file_mel_rows(tones, config):
    clips = ClipSet.scan(tones, config, crop_frames=10, seed=4, use_mel_cache=False)
    starts = set()
    for k in range(24):
        audio_crop, mel_crop = clips.example(k)
        clip = clips.clips[clips.clip_index(k)]
        audio = read(clip.path)
        start = crop_start(audio_crop, audio, 10)
        starts.add(start)
        tail = audio_crop[len(audio[start * HOP:(start + 10) * HOP]):]
        assert not tail.any()  # the last frame's missing samples are zeros, as the reference pads
        whole = compute_mel(audio, clips.convention)
        assert 0 <= start <= len(whole) - 10
        np.testing.assert_allclose(mel_crop, whole[start:start + 10], atol=1e-5)
    assert len(starts) > 5  # crops are spread over the clips


def test_hifigan_clips_need_crop_frames_hops_and_their_last_crop_is_whole(tmp_path):
    config = CONFIG.with_mel(CONVENTIONS["hifigan"]())  # N samples give N // hop frames
    write(tmp_path / "short.wav", tone(1.0, 1)[:10 * HOP - 1])
    write(tmp_path / "exact.wav", tone(1.0, 2)[:10 * HOP])
    clips = ClipSet.scan(tmp_path, config, crop_frames=10, use_mel_cache=False)
    assert [c.path.name for c in clips.clips] == ["exact.wav"]
    audio_crop, mel_crop = clips.example(0)
    audio = read(tmp_path / "exact.wav")
    np.testing.assert_array_equal(audio_crop, audio)
    np.testing.assert_allclose(mel_crop, compute_mel(audio, config.mel), atol=1e-5)


def test_preprocess_cache_is_used_and_equals_on_the_fly_mels(tones, caplog):
    from diffwave_vocoder.cli import main

    assert main(["preprocess", str(tones)]) == 0
    cached = ClipSet.scan(tones, CONFIG, crop_frames=62)
    assert all(c.mel_cache is not None for c in cached.clips)
    computed = ClipSet.scan(tones, CONFIG, crop_frames=62, use_mel_cache=False)
    for k in range(6):
        a_cached, m_cached = cached.example(k)
        a_computed, m_computed = computed.example(k)
        assert np.array_equal(a_cached, a_computed)
        np.testing.assert_allclose(m_cached, m_computed, atol=1e-5)
    # A cache of the wrong shape (another mel convention, a stale file) is reported and ignored.
    stale = cached.clips[0].mel_cache
    np.save(stale, np.zeros((40, 7), np.float32))
    with caplog.at_level(logging.WARNING):
        rescanned = ClipSet.scan(tones, CONFIG, crop_frames=62)
    assert stale.name in caplog.text and "expected (80, " in caplog.text
    assert rescanned.clips[0].mel_cache is None


def preprocess(data, *options):
    from diffwave_vocoder.cli import main

    assert main(["preprocess", str(data), *options]) == 0


TACOTRON2 = CONFIG.with_mel(CONVENTIONS["tacotron2"]())


def test_caches_of_another_convention_are_ignored_with_one_warning_naming_the_differences(tones, caplog):
    preprocess(tones, "--mel-convention", "tacotron2")
    record = json.loads((tones / MEL_RECORD_NAME).read_text())
    assert record == {"mel_convention": CONVENTIONS["tacotron2"]().to_dict(), "complete": True}
    wav = tones / "clip3.wav"
    # Tacotron 2's mels have lmnt's shape: only the record tells them apart.
    assert np.load(f"{wav}.spec.npy").shape == (80, CONFIG.mel.frames_for(len(read(wav))))
    with caplog.at_level(logging.WARNING):
        clips = ClipSet.scan(tones, CONFIG, crop_frames=62)
    assert all(c.mel_cache is None for c in clips.clips)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ignoring the mel caches of 3 clip(s)" in warnings[0]
    assert "fmin=0.0 (cache) vs 20.0 (run)" in warnings[0]
    assert "compression='log' (cache) vs 'lmnt' (run)" in warnings[0]
    assert "hop_length" not in warnings[0]  # only the fields that differ
    assert f"preprocess {tones} --mel-convention lmnt" in warnings[0]
    computed = ClipSet.scan(tones, CONFIG, crop_frames=62, use_mel_cache=False)
    for k in range(6):
        for got, want in zip(clips.example(k), computed.example(k)):
            np.testing.assert_array_equal(got, want)
    index = [c.path for c in clips.clips].index(wav)
    np.testing.assert_array_equal(clips.load(index)[1], compute_mel(read(wav), MelConvention()))
    # A data path below the preprocessed directory is governed by the same record.
    assert all(c.mel_cache is None for c in ClipSet.scan(tones / "a", CONFIG, crop_frames=62).clips)


def test_caches_whose_record_names_the_run_convention_are_used(tones):
    preprocess(tones, "--mel-convention", "tacotron2")
    clips = ClipSet.scan(tones, TACOTRON2, crop_frames=62)
    assert all(c.mel_cache is not None for c in clips.clips)
    marked = clips.clips[clips.clip_index(0)].mel_cache
    np.save(marked, np.full(np.load(marked).shape, 0.25, np.float32))
    audio, mel = clips.example(0)
    assert mel.shape == (62, 80) and np.all(mel == 0.25)


def test_without_a_record_caches_of_the_right_shape_are_used_as_before(tones):
    preprocess(tones, "--mel-convention", "tacotron2")
    (tones / MEL_RECORD_NAME).unlink()  # as the reference's preprocess.py or an older version leaves them
    clips = ClipSet.scan(tones, CONFIG, crop_frames=62)
    assert all(c.mel_cache is not None for c in clips.clips)
    wav = clips.clips[0].path
    np.testing.assert_allclose(clips.load(0)[1], compute_mel(read(wav), CONVENTIONS["tacotron2"]()), atol=1e-5)


def test_the_nearest_record_governs_and_preprocess_replaces_the_records_below_it(tones, caplog):
    preprocess(tones)
    preprocess(tones / "a", "--mel-convention", "tacotron2")
    with caplog.at_level(logging.WARNING):
        clips = ClipSet.scan(tones, CONFIG, crop_frames=8)
    used = {c.path.relative_to(tones).as_posix(): c.mel_cache is not None for c in clips.clips}
    assert used == {"a/b/clip1.wav": False, "a/clip0.wav": False, "c/clip2.wav": True, "clip3.wav": True}
    assert f"ignoring the mel caches of 2 clip(s) under {tones / 'a'}" in caplog.text
    preprocess(tones)
    assert [p.relative_to(tones) for p in tones.rglob(MEL_RECORD_NAME)] == [Path(MEL_RECORD_NAME)]
    assert all(c.mel_cache is not None for c in ClipSet.scan(tones, CONFIG, crop_frames=8).clips)


def test_an_unfinished_or_unreadable_record_keeps_its_caches_out(tones, caplog):
    preprocess(tones)
    record = tones / MEL_RECORD_NAME
    # What preprocess leaves when it is killed while writing the caches.
    record.write_text(json.dumps({"mel_convention": CONFIG.mel.to_dict(), "complete": False}))
    with caplog.at_level(logging.WARNING):
        assert all(c.mel_cache is None for c in ClipSet.scan(tones, CONFIG, crop_frames=8).clips)
    assert "did not finish" in caplog.text
    caplog.clear()
    record.write_text("{")
    with caplog.at_level(logging.WARNING):
        assert all(c.mel_cache is None for c in ClipSet.scan(tones, CONFIG, crop_frames=8).clips)
    assert f"record {record} is unreadable" in caplog.text


def test_each_epoch_visits_every_clip_once_in_a_new_order(tones):
    clips = ClipSet.scan(tones, CONFIG, crop_frames=8)
    n = len(clips)
    epochs = [[clips.clip_index(e * n + i) for i in range(n)] for e in range(4)]
    assert all(sorted(order) == list(range(n)) for order in epochs)
    assert len({tuple(order) for order in epochs}) > 1


def test_examples_are_a_function_of_seed_and_index_only(tones):
    first = ClipSet.scan(tones, CONFIG, crop_frames=8, seed=7)
    again = ClipSet.scan(tones, CONFIG, crop_frames=8, seed=7)
    other = ClipSet.scan(tones, CONFIG, crop_frames=8, seed=8)
    for k in (11, 3, 0, 57):  # any order of access
        a, b = first.example(k), again.example(k)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    differs = [not np.array_equal(first.example(k)[0], other.example(k)[0]) for k in range(8)]
    assert sum(differs) >= 6


def test_replicas_and_workers_receive_slices_of_the_global_batch():
    def take(dataset, count):
        return [int(x) for x in dataset.take(count)]

    single = take(example_indices(40, 8, 8, 0, 1), 24)
    assert single == list(range(40, 64))
    # One pipeline feeding 2 replicas: per-replica batches of 4, round robin, step by step.
    mirrored = take(example_indices(40, 8, 4, 0, 2), 24)
    assert mirrored == single
    # Two workers, one replica each: worker w gets slice w of every global batch.
    worker0, worker1 = take(example_indices(40, 8, 4, 0, 1), 12), take(example_indices(40, 8, 4, 1, 1), 12)
    assert worker0 == [40, 41, 42, 43, 48, 49, 50, 51, 56, 57, 58, 59]
    assert sorted(worker0 + worker1) == single


def test_dataset_resumed_at_an_example_continues_the_same_stream(tones):
    clips = ClipSet.scan(tones, CONFIG, crop_frames=8, seed=1)
    full = list(make_dataset(clips, example_indices(0, 4, 4, 0, 1), 4, 50).take(3))
    resumed = list(make_dataset(clips, example_indices(8, 4, 4, 0, 1), 4, 50).take(1))
    for key in ("audio", "mel", "step", "noise"):
        assert np.array_equal(full[2][key].numpy(), resumed[0][key].numpy())
    batch = full[0]
    assert batch["audio"].shape == (4, 8 * HOP) and batch["mel"].shape == (4, 8, 80)
    steps = np.concatenate([b["step"].numpy() for b in full])
    assert steps.dtype == np.int32 and steps.min() >= 0 and steps.max() < 50 and len(set(steps)) > 3
    noise = np.concatenate([b["noise"].numpy() for b in full])
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
    assert not np.array_equal(noise[0], noise[1])


def test_validation_split_is_stable_disjoint_and_evaluation_fixed(corpus):
    clips = ClipSet.scan(corpus, CONFIG, crop_frames=8)
    train, val = clips.split(0.4)
    assert val is not None and len(train) + len(val) == len(clips)
    assert not {c.path for c in train.clips} & {c.path for c in val.clips}
    # Same split for a subset of the files (it depends on each name only).
    subset = ClipSet(clips.clips[1:], CONFIG, crop_frames=8)
    assert {c.path for c in subset.split(0.4)[1].clips} == {c.path for c in val.clips} - {clips.clips[0].path}
    first, second = (list(evaluation_dataset(val, 2, 50)) for _ in range(2))
    assert sum(len(b["audio"]) for b in first) == len(val)
    for a, b in zip(first, second):
        assert np.array_equal(a["noise"].numpy(), b["noise"].numpy())
        assert np.array_equal(a["mel"].numpy(), b["mel"].numpy())
    with pytest.raises(ValueError, match="validation fraction"):
        clips.split(1.0)


def test_unconditional_examples_are_audio_crops_of_the_requested_length(tones):
    config = DiffWaveConfig(unconditional=True)
    clips = ClipSet.scan(tones, config, crop_samples=20_000)
    assert sorted(c.path.name for c in clips.clips) == ["clip0.wav", "clip2.wav"]  # >= 20,000 samples
    audio, mel = clips.example(3)
    assert mel is None and audio.shape == (20_000,)
    whole = read(clips.clips[clips.clip_index(3)].path)
    starts = [s for s in range(len(whole) - 20_000 + 1) if np.array_equal(whole[s:s + 20_000], audio)]
    assert len(starts) == 1
    batch = next(iter(make_dataset(clips, example_indices(0, 2, 2, 0, 1), 2, 50)))
    assert set(batch) == {"audio", "step", "noise"} and batch["audio"].shape == (2, 20_000)


def test_low_noise_emphasis_draws_steps_in_proportion_to_noise_std_to_the_minus_e(tones):
    from diffwave_vocoder.schedule import noise_levels
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings, step_probabilities

    noise_std = np.sqrt(1.0 - noise_levels(CONFIG).astype(np.float64))
    np.testing.assert_allclose(step_probabilities(CONFIG, 0.0), np.full(50, 1 / 50))
    p = step_probabilities(CONFIG, 1.0)
    assert p.sum() == pytest.approx(1.0) and p[0] / p[-1] == pytest.approx(noise_std[-1] / noise_std[0])
    clips = ClipSet.scan(tones, CONFIG, crop_frames=8, seed=1)
    draws = np.concatenate([b["step"].numpy() for b in make_dataset(
        clips, example_indices(0, 64, 64, 0, 1), 64, 50, step_logits=np.log(p).astype(np.float32)).take(24)])
    low = p[:5].sum()  # 0.61 of the draws at emphasis 1, against 0.1 uniform
    assert abs(np.mean(draws < 5) - low) < 4 * np.sqrt(low * (1 - low) / len(draws))
    # The trainer's own dataset draws with those probabilities; emphasis 0 is the uniform draw unchanged.
    uniform = list(make_dataset(clips, example_indices(0, 64, 64, 0, 1), 64, 50).take(2))
    for emphasis, expected in ((0.0, None), (1.0, p)):
        trainer = Trainer(tones.parent / f"run{emphasis}", tones, config=CONFIG, settings=TrainingSettings(
            crop_frames=8, batch_size=64, seed=1, val_fraction=0.0, low_noise_emphasis=emphasis))
        steps = np.concatenate([b["step"].numpy() for b in trainer._dataset(0).take(2)])
        if expected is None:
            assert np.array_equal(steps, np.concatenate([b["step"].numpy() for b in uniform]))
        else:
            assert np.mean(steps < 5) > 0.45
    with pytest.raises(ValueError, match="low_noise_emphasis"):
        TrainingSettings(low_noise_emphasis=-1.0)


def test_fast_schedule_share_draws_the_inference_levels_at_their_fractional_steps(tones):
    from diffwave_vocoder.schedule import cumulative_alphas, drawable_levels, noise_levels, resolve_schedule
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings, step_probabilities

    levels, network_steps = drawable_levels(CONFIG)
    fast = resolve_schedule(CONFIG, "fast")
    n, m = len(CONFIG.noise_schedule), len(fast)
    np.testing.assert_array_equal(levels[:n], noise_levels(CONFIG))
    np.testing.assert_array_equal(network_steps[:n], np.arange(n))
    np.testing.assert_allclose(levels[n:], cumulative_alphas(CONFIG.inference_noise_schedule), rtol=1e-6)
    np.testing.assert_array_equal(network_steps[n:], fast.steps)
    p = step_probabilities(CONFIG, 0.0, 0.25)
    assert p.shape == (n + m,) and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p[n:], 0.25 / m)
    np.testing.assert_allclose(p[:n], 0.75 / n)
    for share in (0.25, 1.0):
        trainer = Trainer(tones.parent / f"fast{share}", tones, config=CONFIG, settings=TrainingSettings(
            crop_frames=8, batch_size=64, seed=1, val_fraction=0.0, fast_schedule_share=share))
        steps = np.concatenate([b["step"].numpy() for b in trainer._dataset(0).take(4)])
        assert steps.min() >= 0 and steps.max() < n + m
        drawn = np.mean(steps >= n)
        assert abs(drawn - share) <= 4 * np.sqrt(share * (1 - share) / len(steps)) + 1e-9
        if share == 1.0:
            assert set(steps.tolist()) == set(range(n, n + m))  # every inference level, no training step
    with pytest.raises(ValueError, match="fast_schedule_share"):
        TrainingSettings(fast_schedule_share=1.5)
    # An inference schedule beyond the training schedule's noise trains as before; drawing it is refused.
    beyond = CONFIG.replace(inference_noise_schedule=(0.5, 0.9, 0.9))
    Trainer(tones.parent / "beyond0", tones, config=beyond, settings=TrainingSettings(crop_frames=8, val_fraction=0.0))
    with pytest.raises(ValueError, match="outside the training schedule's range"):
        Trainer(tones.parent / "beyond1", tones, config=beyond, settings=TrainingSettings(
            crop_frames=8, val_fraction=0.0, fast_schedule_share=0.5))
