"""Evaluation on real (synthesised) speech: metric ranges and relations, the Griffin-Lim baseline, the
ground-truth ceiling, unreadable clips, outputs, the CLI and scoring a training run's checkpoints."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffwave_vocoder.evaluation.evaluate import (GRIFFIN_LIM, GROUND_TRUTH, METRICS, OURS, evaluate, evaluate_run,
                                                  load_clips, multi_resolution_stft_distance, read_voice_map,
                                                  require)
from diffwave_vocoder.evaluation.griffin_lim import griffin_lim
from diffwave_vocoder.features.mel import MelConvention, compute_mel
from helpers import run_main

CLIP_SECONDS = 1.5


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def wavs(speech_corpus):
    return sorted((speech_corpus / "wavs").glob("*.wav"))


@pytest.fixture(scope="module")
def report(small_vocoder, wavs):
    """Every metric, three short clips, the random small model against Griffin-Lim and the ground truth."""
    return evaluate(small_vocoder, wavs[:3], max_seconds=CLIP_SECONDS, progress=False)


def means(report):
    return {entry["system"]: entry for entry in report.summary()}


def test_ground_truth_scores_the_ceiling(report):
    truth = means(report)[GROUND_TRUTH]
    assert truth["clips"] == 3
    assert truth["pesq"] == pytest.approx(4.64, abs=0.01)
    assert truth["stoi"] == pytest.approx(1.0, abs=1e-6) and truth["estoi"] == pytest.approx(1.0, abs=1e-6)
    for metric in ("mcd", "mrstft", "logmel_l1", "f0_rmse", "vuv_error"):
        assert truth[metric] == pytest.approx(0.0, abs=1e-6), metric
    assert 2.0 < truth["dnsmos_p808"] < 5.0


def test_griffin_lim_is_intelligible_and_far_above_a_random_model(report):
    summary = means(report)
    gl, ours, truth = summary[GRIFFIN_LIM], summary[OURS], summary[GROUND_TRUTH]
    assert gl["stoi"] > 0.9 and gl["estoi"] > 0.8 and 2.5 < gl["pesq"] < 4.0
    assert gl["stoi"] > ours["stoi"] + 0.3 and gl["pesq"] > ours["pesq"] + 1.0
    for metric in ("mcd", "mrstft", "logmel_l1", "f0_rmse", "vuv_error"):
        assert gl[metric] < ours[metric], metric
    assert gl["logmel_l1"] < 0.03  # Griffin-Lim's audio has nearly the clip's own mel
    # Speech is voiced in a good share of frames; Griffin-Lim keeps the harmonics, a random model has none.
    assert truth["voiced"] > 0.3 and abs(gl["voiced"] - truth["voiced"]) < 0.15 and ours["voiced"] < 0.1
    assert ours["dnsmos_p808"] < gl["dnsmos_p808"] < truth["dnsmos_p808"]
    assert 1.0 <= ours["pesq"] < 1.5 and ours["stoi"] < 0.7


def test_every_metric_is_reported_for_every_clip_and_system(report, wavs):
    assert report.metrics == METRICS
    header = report.table().splitlines()[0]
    # ≈: the ground truth is the target
    assert "stoi ↑" in header and "mcd ↓" in header and "voiced ≈" in header
    assert [(r["system"], r["clip"]) for r in report.rows] == [
        (system, wav.stem) for system in (OURS, GRIFFIN_LIM, GROUND_TRUTH) for wav in wavs[:3]]
    for row in report.rows:
        assert row["seconds"] == CLIP_SECONDS
        # F0 RMSE is undefined (NaN) where no frame is voiced in both, as for noise-like audio.
        defined = [m for m in METRICS if not (m == "f0_rmse" and row["system"] == OURS)]
        assert all(np.isfinite(row[m]) for m in defined), row


def test_clips_of_a_corpus_are_summarised_per_voice(report, speech_corpus):
    from diffwave_vocoder.evaluation.corpus import corpus_voices

    voices = {path.stem: voice for path, voice in corpus_voices(speech_corpus).items()}
    assert all(row["voice"] == voices[row["clip"]] for row in report.rows)
    assert len({row["voice"] for row in report.rows}) == 3  # the corpus's first three clips: three voices
    by_voice = report.summary(by_voice=True)
    assert len(by_voice) == 3 * 3  # per system and voice: here each entry is one clip's scores
    for entry in by_voice:
        row, = [r for r in report.rows if (r["system"], r["voice"]) == (entry["system"], entry["voice"])]
        assert entry["clips"] == 1 and all(entry[m] == row[m] or np.isnan(row[m]) for m in METRICS)
    assert report.table(by_voice=True).splitlines()[0].startswith("| system | step | voice | clips |")
    assert report.to_dict()["summary_by_voice"][0]["voice"] == by_voice[0]["voice"]
    assert [{k: v for k, v in e.items() if k != "voice"} for e in report.summary()] != by_voice


def test_griffin_lim_has_the_vocoders_length_and_reproduces_the_mel(wavs):
    convention = MelConvention()
    clip = load_clips(wavs[0], convention, max_seconds=1.0)[0][0]
    audio = griffin_lim(clip.mel, convention, seed=3)
    assert audio.dtype == np.float32 and len(audio) == len(clip.mel) * convention.hop_length
    assert np.array_equal(audio, griffin_lim(clip.mel, convention, seed=3))
    assert np.mean(np.abs(compute_mel(audio[:len(clip.audio)], convention) - clip.mel)) < 0.03
    with pytest.raises(ValueError, match=r"expected a \(frames, 80\) mel"):
        griffin_lim(clip.mel.T, convention)


def test_multi_resolution_stft_distance_grows_with_the_error(wavs):
    clip = load_clips(wavs[0], MelConvention(), max_seconds=1.0)[0][0]
    noise = np.random.default_rng(0).normal(0, 1, len(clip.audio)).astype(np.float32)
    small, large = (multi_resolution_stft_distance(clip.audio, clip.audio + level * noise) for level in (1e-3, 1e-1))
    assert multi_resolution_stft_distance(clip.audio, clip.audio) == 0.0 and 0 < small < large


def test_a_missing_metric_package_names_the_eval_extra(monkeypatch):
    import importlib

    real = importlib.import_module

    def without_pesq(name, *args):
        if name == "pesq":
            raise ImportError("No module named 'pesq'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_pesq)
    with pytest.raises(ImportError, match=r"metric pesq needs pesq .*pip install 'diffwave-vocoder\[eval\]'"):
        require("pesq")
    assert require("mrstft") is None
    with pytest.raises(ValueError, match="unknown metric 'psq'"):
        require("psq")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, small_vocoder):
    path = tmp_path_factory.mktemp("evaluate") / "model"
    small_vocoder.save(path)
    return path


def test_cli_skips_an_unreadable_clip_by_name_and_writes_json_and_csv(tmp_path, checkpoint, wavs):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(wavs[0], data / "good.wav")
    (data / "broken.wav").write_bytes(b"RIFF not really a wav")
    out = tmp_path / "out"
    result = run_main("evaluate", "--model", checkpoint, data, "--metrics", "stoi,logmel_l1", "--max-seconds", 1,
                      "--json", out / "report.json", "--csv", out / "clips.csv", "--summary-csv", out / "summary.csv")
    assert result.returncode == 0, result.stderr
    assert "broken.wav" in result.stderr and "Traceback" not in result.stderr
    assert "| griffin-lim | - | 1 |" in result.stdout and f"wrote {out / 'report.json'}" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert [s["path"] for s in report["skipped"]] == [str(data / "broken.wav")]
    assert report["metrics"] == ["stoi", "logmel_l1"]
    systems = (OURS, GRIFFIN_LIM, GROUND_TRUTH)
    assert [(r["system"], r["clip"]) for r in report["clips"]] == [(s, "good") for s in systems]
    rows = list(csv.DictReader((out / "clips.csv").open()))
    assert [r["system"] for r in rows] == [OURS, GRIFFIN_LIM, GROUND_TRUTH]
    assert float(rows[2]["stoi"]) == pytest.approx(1.0) and float(rows[1]["stoi"]) > 0.8
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert list(summary[0]) == ["system", "step", "clips", "stoi", "logmel_l1"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic writes leave no temporaries


def test_cli_summarises_a_corpus_per_voice(tmp_path, checkpoint, speech_corpus):
    from diffwave_vocoder.evaluation.corpus import corpus_voices

    out = tmp_path / "summary.csv"
    result = run_main("evaluate", "--model", checkpoint, speech_corpus, "--metrics", "stoi", "--max-seconds", 0.5,
                      "--baseline", "none", "--by-voice", "--summary-csv", out)
    assert result.returncode == 0, result.stderr
    voices = sorted(set(corpus_voices(speech_corpus).values()))  # the fixture's four clips: four voices
    assert "| system | step | voice | clips | stoi ↑ |" in result.stdout
    for voice in voices:
        for system in (OURS, GROUND_TRUTH):
            assert f"| {system} | - | {voice} | 1 |" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["system", "step", "voice", "clips", "stoi"]
    assert sorted(r["voice"] for r in rows if r["system"] == GROUND_TRUTH) == voices


def test_a_voice_map_gives_the_voices_of_other_data(tmp_path, checkpoint, wavs):
    """`--voices CSV` for clips outside a corpus: paths relative to the CSV's folder or absolute."""
    data = tmp_path / "data"
    data.mkdir()
    clips = [Path(shutil.copy(wav, data / f"clip{i}.wav")) for i, wav in enumerate(wavs[:3])]
    voices = tmp_path / "voices.csv"
    voices.write_text(f"data/clip0.wav,alice\n\n{clips[1]},bob\ndata/clip2.wav, alice\ndata/gone.wav,carol\n")
    assert read_voice_map(voices) == {clips[0].resolve(): "alice", clips[1].resolve(): "bob",
                                      clips[2].resolve(): "alice", (data / "gone.wav").resolve(): "carol"}
    out = tmp_path / "summary.csv"
    result = run_main("evaluate", "--model", checkpoint, data, "--voices", voices, "--by-voice", "--metrics", "stoi",
                      "--max-seconds", 0.5, "--baseline", "none", "--summary-csv", out)
    assert result.returncode == 0, result.stderr
    assert f"warning: 1 of the 4 rows of {voices} name no clip of the evaluation data (first: {data / 'gone.wav'})" \
        in result.stderr  # a row for a clip not in DATA is said, not silently dropped
    assert f"| {GROUND_TRUTH} | - | alice | 2 |" in result.stdout and f"| {OURS} | " in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert sorted((r["system"], r["voice"], r["clips"]) for r in rows) == [
        (OURS, "alice", "2"), (OURS, "bob", "1"), (GROUND_TRUTH, "alice", "2"), (GROUND_TRUTH, "bob", "1")]


@pytest.mark.parametrize("args, message", [
    (("MISSING",), "evaluation data not found"),  # no --model: the shipped vocoder
    (("--model", "MODEL", "--run", "RUN", "DATA"), "not both"),
    (("--model", "MODEL", "MISSING"), "evaluation data not found"),
    (("--model", "MISSING", "DATA"), "checkpoint not found"),
    (("--model", "MODEL", "DATA", "--metrics", "pesq,psq"), "unknown metric(s) psq"),
    (("--model", "MODEL", "LOOSE", "--by-voice"), "--by-voice needs clips of a corpus made by `diffwave-vocoder"),
    (("--model", "MODEL", "DATA", "--voices", "BAD_MAP"), "line 2: expected 'wav path,voice', got 'b.wav'"),
    (("--model", "MODEL", "DATA", "--voices", "MISSING"), "cannot read the voice map"),
    (("--model", "MODEL", "LOOSE", "--by-voice", "--voices", "OTHER_MAP"), "none of these clips has a voice"),
])
def test_cli_errors_are_one_line(tmp_path, checkpoint, wavs, capsys, args, message):
    from diffwave_vocoder.cli import main

    names = {"MODEL": checkpoint, "RUN": tmp_path, "DATA": wavs[0], "MISSING": tmp_path / "missing",
             "LOOSE": shutil.copy(wavs[0], tmp_path / "loose.wav"),  # a clip outside its corpus
             "BAD_MAP": write(tmp_path / "bad.csv", "a.wav,alice\nb.wav\n"),
             "OTHER_MAP": write(tmp_path / "other.csv", "elsewhere.wav,alice\n")}
    argv = ["evaluate", *(str(names.get(a, a)) for a in args), "--json", str(tmp_path / "out.json")]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code != 0 and captured.out == ""
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err, captured.err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow  # trains a tiny run, then scores it in-process and through the CLI (~1 min on 2 cores)
def test_evaluate_run_gives_one_summary_row_per_checkpoint(speech_corpus, tmp_path, wavs):
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings
    from diffwave_vocoder.config import DiffWaveConfig

    run = tmp_path / "run"
    tiny = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2)
    Trainer(run, speech_corpus, config=tiny, settings=TrainingSettings(
        max_steps=4, batch_size=4, crop_frames=8, checkpoint_every=2, val_fraction=0.0, learning_rate=1e-2)).fit()
    report = evaluate_run(run, wavs[:2], metrics=["logmel_l1"], baseline=None, ground_truth=False,
                          max_seconds=0.5, progress=False)
    assert [(e["system"], e["step"], e["clips"]) for e in report.summary()] == [(OURS, 2, 2), (OURS, 4, 2)]
    first, second = (e["logmel_l1"] for e in report.summary())
    assert first != second  # each row scores its own checkpoint's weights
    result = run_main("evaluate", "--run", run, wavs[0], "--metrics", "logmel_l1,stoi", "--max-seconds", 0.5,
                      "--baseline", "none", "--summary-csv", tmp_path / "steps.csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "steps.csv").open()))
    assert [(r["system"], r["step"]) for r in rows] == [(OURS, "2"), (OURS, "4"), (GROUND_TRUTH, "")]
    assert float(rows[0]["logmel_l1"]) == pytest.approx(report.rows[0]["logmel_l1"], rel=1e-5)


def test_quality_curve_extends_a_stored_curve_without_rescoring_it(speech_corpus, tmp_path, wavs):
    """benchmarks/quality_curve.py --extend: stored points stay (their checkpoints may be gone), new ones join."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from diffwave_vocoder.config import DiffWaveConfig
    from diffwave_vocoder.evaluation.evaluate import EvaluationReport
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_curve.py"
    run = tmp_path / "run"
    tiny = DiffWaveConfig(residual_channels=8, residual_layers=4, dilation_cycle_length=2)
    training = TrainingSettings(max_steps=4, batch_size=4, crop_frames=8, checkpoint_every=2, val_fraction=0.0,
                                learning_rate=1e-2, keep_last=2)
    Trainer(run, speech_corpus, config=tiny, settings=training).fit()
    curve = tmp_path / "curve.json"

    unreadable = tmp_path / "unreadable.wav"
    unreadable.write_bytes(b"not a wav")  # skipped when the curve is first scored, and left out when extended

    def quality_curve(*args):
        return subprocess.run([sys.executable, str(script), str(run), str(wavs[0]), str(unreadable),
                               "--max-seconds", "0.5", "--out", str(tmp_path / "curve.png"), *map(str, args)],
                              capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    result = quality_curve("--metrics", "logmel_l1", "--json", curve)
    assert result.returncode == 0, result.stderr[-2000:]
    stored = EvaluationReport.read_json(curve)
    assert [entry["path"] for entry in stored.skipped] == [str(unreadable)]
    assert [(e["system"], e["step"]) for e in stored.summary()] == [(OURS, 2), (OURS, 4), (GRIFFIN_LIM, None),
                                                                    (GROUND_TRUTH, None)]
    data = json.loads(curve.read_text())
    marked = next(row for row in data["clips"] if row["system"] == OURS and row["step"] == 2)
    marked["logmel_l1"] = 123.0  # a stored point is kept as it is, never scored again
    curve.write_text(json.dumps(data))

    # Resumed at a lower learning rate: step 2 is rotated away, and the change is marked at step 4.
    Trainer(run, speech_corpus, settings=training.replace(max_steps=6, learning_rate=5e-3)).fit()
    assert not (run / "checkpoints" / "step-000000002").exists()
    result = quality_curve("--extend", curve)
    assert result.returncode == 0, result.stderr[-2000:]
    merged = {(e["system"], e["step"]): e["logmel_l1"] for e in EvaluationReport.read_json(curve).summary()}
    assert list(merged) == [(OURS, 2), (OURS, 4), (GRIFFIN_LIM, None), (GROUND_TRUTH, None), (OURS, 6)]
    assert merged[(OURS, 2)] == 123.0 and merged[(OURS, 4)] == stored.summary()[1]["logmel_l1"]
    assert EvaluationReport.read_json(curve).settings["setting_changes"] == [{"step": 4, "learning_rate": [1e-2, 5e-3]}]
    assert (tmp_path / "curve.png").stat().st_size > 0

    result = quality_curve("--extend", curve, "--steps", "full")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == ("quality_curve.py: the stored curve was scored otherwise: "
                                              "steps 'fast' (stored) vs 'full' (now)")


def test_clips_of_the_same_name_in_two_folders_keep_their_folder(tmp_path, wavs):
    """Report names stay unique, and quality_curve.py --extend matches a stored curve by the same names."""
    from diffwave_vocoder.evaluation.evaluate import clip_names, clip_paths

    for folder, clips in (("a", wavs[:2]), ("b", wavs[:1])):
        (tmp_path / folder).mkdir()
        for wav in clips:
            shutil.copy(wav, tmp_path / folder)
    folders = [tmp_path / "a", tmp_path / "b"]
    clips, skipped = load_clips(folders, MelConvention(), max_seconds=0.2)
    assert not skipped
    names = [clip.name for clip in clips]
    assert sorted(names) == sorted([f"a/{wavs[0].stem}", f"b/{wavs[0].stem}", wavs[1].stem])
    assert names == clip_names(clip_paths(folders))


def test_voicing_by_pitch_benchmark_shifts_real_speech_and_scores_the_vocoders_voicing(checkpoint, small_vocoder,
                                                                                      speech_corpus):
    """benchmarks/voicing_by_pitch.py: an octave up doubles the input's F0 and keeps it voiced; unshifted,
    the vocoder's voicing is what `evaluate` finds for the file itself."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from diffwave_vocoder.evaluation.corpus import corpus_voices

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "voicing_by_pitch.py"
    voice = sorted(corpus_voices(speech_corpus).values())[0]
    first = sorted(path for path, v in corpus_voices(speech_corpus).items() if v == voice)[0]
    run = lambda *args: subprocess.run([sys.executable, str(script), str(speech_corpus), "--model",  # noqa: E731
                                        str(checkpoint), *args], capture_output=True, text=True,
                                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    result = run("--voices", voice, "--semitones", "0,12")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.strip(" |").split(" | ") for line in result.stdout.splitlines() if line.startswith(f"| {voice} |")]
    assert [(row[0], row[2]) for row in rows] == [(voice, "+0"), (voice, "+12")]
    (f0, f0_up), voiced, ours = [float(row[3]) for row in rows], [float(row[4]) for row in rows], [
        float(row[5]) for row in rows]
    assert 1.8 < f0_up / f0 < 2.2 and min(voiced) > 0.3
    plain = evaluate(small_vocoder, [first], metrics=["voiced"], baseline=None, ground_truth=False, progress=False)
    assert ours[0] == pytest.approx(plain.rows[0]["voiced"], abs=0.006)
    result = run("--voices", "nobody")
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(
        "voicing_by_pitch.py: no clips of voice(s) nobody; the corpora have ")


def test_fast_schedule_benchmark_scores_each_neighbour_paired_with_the_checkpoints_own(checkpoint, small_vocoder,
                                                                                      wavs):
    """benchmarks/fast_schedule.py: the checkpoint's own row is what `evaluate` gives for its fast schedule,
    the same schedule given again differs by exactly zero (the pairing holds clips and seeds fixed), and
    schedules that are not valid for the training schedule are skipped with the reason."""
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fast_schedule.py"
    own = ", ".join(f"{b:g}" for b in small_vocoder.config.inference_noise_schedule)
    too_noisy = "0.0001, 0.001, 0.01, 0.05, 0.2, 0.9"
    run = lambda *args: subprocess.run([sys.executable, str(script), *map(str, args)],  # noqa: E731
                                       capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    result = run(wavs[0], "--model", checkpoint, "--max-seconds", 1, "--factors", 2, "--also", own.replace(" ", ""),
                 "--also", too_noisy.replace(" ", ""))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {tuple(cells[:2]): cells[2:] for cells in
            (line.strip(" |").split(" | ") for line in result.stdout.splitlines() if line.startswith("| "))}
    assert [name for name, _ in rows] == ["schedule", "the checkpoint's"] + [
        f"beta {n} x2" for n in range(1, 7)] + ["given", "given"]
    plain = evaluate(small_vocoder, wavs[:1], metrics=["stoi"], baseline=None, ground_truth=False,
                     max_seconds=1, progress=False).summary()[0]["stoi"]
    mine = rows[("the checkpoint's", own)]
    assert float(mine[0]) == pytest.approx(plain, abs=5e-5)
    assert rows[("given", own)] == [mine[0], "+0.0000 ± 0.0000", mine[2], "+0.0000 ± 0.0000"]
    assert rows[("given", too_noisy)][0].startswith("skipped: inference step 5 reaches noise level")
    assert rows[("beta 6 x2", "0.0001, 0.001, 0.01, 0.05, 0.2, 1")][0].startswith(
        "skipped: an inference schedule must be a non-empty list of betas in (0, 1)")
    measured = [cells for (name, _), cells in rows.items() if name.startswith("beta ") and name != "beta 6 x2"]
    assert len(measured) == 5 and all(0 <= float(cells[0]) <= 1 and " ± " in cells[1] for cells in measured)
    result = run(wavs[0], "--model", checkpoint, "--factors", "two")
    assert result.returncode == 2 and "expected comma-separated numbers, got 'two'" in result.stderr
