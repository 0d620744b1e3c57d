"""Fine-tuning (`train --init-from`): a run that starts from a checkpoint's weights with a fresh optimizer."""
import json
import shutil

import numpy as np
import pytest

from diffwave_vocoder.training.checkpoints import load_for_export
from diffwave_vocoder.training.trainer import Trainer, TrainingSettings
from diffwave_vocoder.config import DiffWaveConfig
from diffwave_vocoder.vocoder import Vocoder

TINY = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2)
BASE = dict(batch_size=4, crop_frames=8, checkpoint_every=2, val_vocode_clips=0, learning_rate=5e-3)


def settings(**changes) -> TrainingSettings:
    return TrainingSettings(**{**BASE, **changes})


@pytest.fixture(scope="module")
def val(speech_corpus, tmp_path_factory):
    directory = tmp_path_factory.mktemp("val")
    shutil.copy(sorted((speech_corpus / "wavs").glob("*.wav"))[0], directory / "held-out.wav")
    return directory


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A vocoder checkpoint unlike a fresh model: its output layer (zero in a fresh one) is random and biased."""
    vocoder = Vocoder.from_config(TINY, seed=3)
    layer = vocoder.model.get_layer("output_projection")
    layer.set_weights([np.random.default_rng(0).normal(0, 0.3, layer.kernel.shape).astype("float32"),
                       np.full(layer.bias.shape, 0.5, "float32")])
    vocoder.metadata = {"source": "test", "training_step": 6}
    return vocoder.save(tmp_path_factory.mktemp("pretrained") / "vocoder")


def test_fine_tuning_starts_at_the_checkpoints_validation_loss(speech_corpus, val, pretrained, tmp_path):
    fresh = Trainer(tmp_path / "fresh", speech_corpus, val=val, config=TINY, settings=settings(max_steps=2))
    fresh_loss = fresh.validate(0, None)
    fresh.model.set_weights(Vocoder.load(pretrained).model.get_weights())
    checkpoint_loss = fresh.validate(0, None)
    assert abs(checkpoint_loss - fresh_loss) > 0.05
    tuned = Trainer(tmp_path / "tuned", speech_corpus, val=val,
                    settings=settings(max_steps=2, init_from=str(pretrained)))
    assert tuned.config == TINY  # no config given: the checkpoint's
    assert tuned.validate(0, None) == pytest.approx(checkpoint_loss, rel=1e-6)
    result = tuned.fit()
    assert abs(result.validation_loss - checkpoint_loss) < abs(result.validation_loss - fresh_loss)
    metadata = Vocoder.load(result.exported).metadata
    assert metadata["training_step"] == 2
    assert metadata["init_from"]["path"] == str(pretrained)
    assert metadata["init_from"]["metadata"]["training_step"] == 6  # the init checkpoint's own provenance
    assert json.loads((tmp_path / "tuned" / "training.json").read_text())["init_from"] == str(pretrained)


def test_resuming_a_fine_tuning_run_resumes_it(speech_corpus, pretrained, tmp_path):
    checkpoint = pretrained
    init = tmp_path / "init"
    shutil.copytree(checkpoint, init)
    fine_tune = dict(val_fraction=0.0, init_from=str(init))
    uninterrupted = Trainer(tmp_path / "uninterrupted", speech_corpus, settings=settings(max_steps=4, **fine_tune))
    uninterrupted.fit()
    run = tmp_path / "run"
    Trainer(run, speech_corpus, settings=settings(max_steps=2, **fine_tune)).fit()
    shutil.rmtree(init)  # a resumed run needs only its own checkpoints
    resumed = Trainer(run, speech_corpus, settings=settings(max_steps=4, **fine_tune))
    result = resumed.fit()
    assert result.step == 4
    for a, b in zip(resumed.model.get_weights(), uninterrupted.model.get_weights()):
        assert np.abs(a - b).max() <= 1e-5
    assert Vocoder.load(result.exported).metadata["init_from"]["path"] == str(init)  # provenance kept
    assert load_for_export(run / "checkpoints" / "step-000000004").metadata["init_from"]["path"] == str(init)


@pytest.mark.parametrize("change, message", [
    ({"residual_channels": 16}, "sizes: residual_channels 8 (checkpoint) vs 16 (run)"),
    ({"mel": {**TINY.mel.to_dict(), "fmax": 8000.0}}, "mel convention: fmax None (checkpoint) vs 8000.0 (run)"),
])
def test_a_checkpoint_of_another_model_is_refused_in_one_line(speech_corpus, pretrained, tmp_path, capsys, change,
                                                              message):
    from diffwave_vocoder.cli import main

    checkpoint = pretrained
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**TINY.to_dict(), **change}))
    code = main(["train", str(tmp_path / "run"), str(speech_corpus), "--init-from", str(checkpoint),
                 "--config", str(config), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot fine-tune from {checkpoint}" in err and message in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_standard_prior_checkpoint_fine_tunes_into_an_energy_prior_run(speech_corpus, pretrained, tmp_path):
    """PriorGrad fine-tuning: same weights to start from, the run's own prior measured on its data."""
    run = tmp_path / "run"
    trainer = Trainer(run, speech_corpus, config=TINY.replace(prior="energy"),
                      settings=settings(max_steps=2, val_fraction=0.0, init_from=str(pretrained)))
    for a, b in zip(trainer.model.get_weights(), Vocoder.load(pretrained).model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert trainer.config.prior == "energy" and trainer.config.prior_energy_range is not None
    exported = Vocoder.load(trainer.fit().exported)
    assert exported.config == trainer.config and exported.metadata["init_from"]["path"] == str(pretrained)

    # Its quality curve crosses the switch: each point is sampled with its own checkpoint's prior.
    from diffwave_vocoder.evaluation.evaluate import evaluate, evaluate_run

    clip = sorted((speech_corpus / "wavs").glob("*.wav"))[:1]
    options = dict(metrics=["logmel_l1"], baseline=None, ground_truth=False, max_seconds=0.5, progress=False)
    curve = {e["step"]: e["logmel_l1"] for e in evaluate_run(run, clip, **options).summary()}
    assert sorted(curve) == [6, 8]
    assert curve[6] == pytest.approx(evaluate(Vocoder.load(pretrained), clip, **options).summary()[0]["logmel_l1"],
                                     rel=1e-5)
    assert curve[8] == pytest.approx(evaluate(exported, clip, **options).summary()[0]["logmel_l1"], rel=1e-5)
    # The same weights under the standard prior score otherwise: the energy prior was used.
    standard = Vocoder(exported.model, TINY)
    assert curve[8] != pytest.approx(evaluate(standard, clip, **options).summary()[0]["logmel_l1"], rel=1e-3)
    assert [e["step"] for e in evaluate_run(run, clip, skip_steps=[6], **options).summary()] == [8]


def test_cli_fine_tunes_from_a_checkpoint_with_its_config(speech_corpus, pretrained, tmp_path, capsys):
    from diffwave_vocoder.cli import main

    checkpoint = pretrained
    run = tmp_path / "run"
    assert main(["train", str(run), str(speech_corpus), "--init-from", str(checkpoint), "--max-steps", "1",
                 "--batch-size", "4", "--crop-frames", "8", "--val-fraction", "0"]) == 0
    captured = capsys.readouterr()
    assert "fine-tuning: starting from the weights of" in captured.err and "trained to step 1" in captured.out
    assert DiffWaveConfig.from_json((run / "config.json").read_text()) == TINY
    assert main(["train", str(tmp_path / "other"), str(speech_corpus), "--init-from", str(tmp_path / "missing")]) == 1
    assert "init checkpoint not found" in capsys.readouterr().err


def test_info_names_the_start_of_a_fine_tuned_chain_in_one_line(speech_corpus, pretrained, tmp_path, capsys):
    from diffwave_vocoder.cli import main

    first = Trainer(tmp_path / "first", speech_corpus, settings=settings(max_steps=1, val_fraction=0.0,
                                                                         init_from=str(pretrained))).fit()
    second = Trainer(tmp_path / "second", speech_corpus, settings=settings(max_steps=1, val_fraction=0.0,
                                                                           init_from=str(first.exported))).fit()
    capsys.readouterr()
    assert main(["info", str(second.exported)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  init_from:")]
    assert lines == [f"  init_from: {first.exported} (source=diffwave-vocoder train, training_step=1, "
                     "the full record: info --json)"]
    assert main(["info", "--json", str(second.exported)]) == 0
    nested = json.loads(capsys.readouterr().out)["metadata"]["init_from"]["metadata"]["init_from"]
    assert nested == {"path": str(pretrained), "metadata": {"source": "test", "training_step": 6}}


def test_steps_count_the_checkpoint_a_run_started_from(speech_corpus, pretrained, tmp_path):
    from diffwave_vocoder.evaluation.evaluate import OURS, evaluate, evaluate_run
    from diffwave_vocoder.training.checkpoints import export_source_config
    from diffwave_vocoder.vocoder_format import total_training_steps

    run = tmp_path / "run"
    result = Trainer(run, speech_corpus, settings=settings(max_steps=4, val_fraction=0.0,
                                                           init_from=str(pretrained))).fit()
    tuned = Vocoder.load(result.exported)
    assert tuned.metadata["training_step"] == 4 and total_training_steps(tuned.metadata) == 6 + 4
    assert export_source_config(run) == export_source_config(run / "checkpoints" / "step-000000004") == TINY
    clip = sorted((speech_corpus / "wavs").glob("*.wav"))[:1]
    options = dict(metrics=["logmel_l1"], baseline=None, ground_truth=False, max_seconds=0.5, progress=False)
    assert evaluate(tuned, clip, **options).summary()[0]["step"] == 10
    report = evaluate_run(run, clip, **options)
    # The init checkpoint is the curve's first point, at its own step; the run's checkpoints follow it.
    assert [(e["system"], e["step"]) for e in report.summary()] == [(OURS, 6), (OURS, 8), (OURS, 10)]
    assert report.settings["steps_before_run"] == 6 and report.settings["checkpoints"][0] == str(pretrained)
    init_score = evaluate(Vocoder.load(pretrained), clip, **options).summary()[0]["logmel_l1"]
    assert report.summary()[0]["logmel_l1"] == pytest.approx(init_score, rel=1e-5)
    # Earlier exports of the chain join the curve at their own steps; the init checkpoint is not scored twice.
    older = Vocoder.from_config(TINY, seed=5)
    older.metadata = {"training_step": 3}
    older_path = older.save(tmp_path / "older")
    chain = evaluate_run(run, clip, earlier=[older_path, pretrained], **options)
    assert [e["step"] for e in chain.summary()] == [3, 6, 8, 10]
    assert chain.summary()[1]["logmel_l1"] == pytest.approx(init_score, rel=1e-5)
    assert chain.summary()[0]["logmel_l1"] != pytest.approx(init_score, rel=1e-3)


def test_another_mel_convention_for_a_checkpoint_is_refused_by_its_mel_alone(speech_corpus, pretrained, tmp_path,
                                                                            capsys):
    from diffwave_vocoder.cli import main
    from diffwave_vocoder.training.checkpoints import export_source_config

    assert export_source_config(pretrained) == TINY  # read without building the model
    code = main(["train", str(tmp_path / "run"), str(speech_corpus), "--init-from", str(pretrained),
                 "--mel-convention", "hifigan", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"cannot fine-tune from {pretrained}" in err
    assert "mel convention: " in err and "sizes" not in err  # the run kept the checkpoint's sizes


def test_a_grown_checkpoint_vocodes_as_its_source_and_trains_on(speech_corpus, val, pretrained, tmp_path, capsys):
    """`grow` appends layers that start as no-ops: same audio, same validation loss, and a run
    fine-tuning it trains all the layers and counts the source's steps."""
    from diffwave_vocoder.cli import main
    from diffwave_vocoder.features.mel import compute_mel
    from diffwave_vocoder.io.audio import load_audio
    from diffwave_vocoder.vocoder_format import total_training_steps

    grown_path = tmp_path / "grown"
    assert main(["grow", str(pretrained), str(grown_path), "--residual-layers", "6"]) == 0
    assert "4 -> 6 residual layers" in capsys.readouterr().out
    source, grown = Vocoder.load(pretrained), Vocoder.load(grown_path)
    assert grown.config == TINY.replace(residual_layers=6)
    assert grown.model.count_params() > source.model.count_params()
    audio, _ = load_audio(sorted((speech_corpus / "wavs").glob("*.wav"))[0], TINY.sample_rate)
    mel = compute_mel(audio[:TINY.sample_rate], TINY.mel)
    expected = source.vocode(mel, seed=1)
    assert np.abs(expected).max() > 0.01
    np.testing.assert_allclose(grown.vocode(mel, seed=1), expected, atol=1e-5)
    assert grown.metadata["grown_from"] == {"residual_layers": 4, "seed": 0, "path": str(pretrained.resolve())}
    assert total_training_steps(grown.metadata) == 6

    run = Trainer(tmp_path / "run", speech_corpus, val=val, settings=settings(max_steps=2, init_from=str(grown_path)))
    assert run.config == grown.config
    from_source = Trainer(tmp_path / "source-run", speech_corpus, val=val,
                          settings=settings(max_steps=2, init_from=str(pretrained)))
    assert run.validate(0, None) == pytest.approx(from_source.validate(0, None), rel=1e-5)
    tuned = Vocoder.load(run.fit().exported)
    new_layer = tuned.model.get_layer("residual_block_5").output_projection
    assert np.abs(new_layer.kernel.numpy()).max() > 0  # the new layers learn
    assert total_training_steps(tuned.metadata) == 6 + 2

    capsys.readouterr()
    assert main(["grow", str(pretrained), str(tmp_path / "same"), "--residual-layers", "4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already has 4" in err and not (tmp_path / "same").exists()
