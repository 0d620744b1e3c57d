"""The command line: real files; errors are one line with no traceback. Commands that load a model run
through `main()` in this process (helpers.run_main). A model-loading error (a NaN mel), a usage error and
the commands that start no TensorFlow run as real processes, where TensorFlow's native lines would show."""
import json
import subprocess
import sys

import numpy as np
import soundfile

from diffwave_vocoder.io.audio import load_audio
from helpers import run_command as run_cli, run_main


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_vocode_reference_layout_npy(tmp_path, small_checkpoint):
    mel = np.random.default_rng(0).uniform(0, 1, (80, 9)).astype(np.float32)  # reference (n_mels, frames)
    np.save(tmp_path / "x.wav.spec.npy", mel)
    out = tmp_path / "out.wav"
    result = run_main("vocode", "--model", small_checkpoint, tmp_path / "x.wav.spec.npy", "-o", out, "--seed", 3)
    assert result.returncode == 0, result.stderr
    audio, rate = soundfile.read(out)
    assert rate == 22050 and len(audio) == 9 * 256


def test_resynth_resamples_and_says_so(tmp_path, small_checkpoint, speech_corpus):
    wav = sorted((speech_corpus / "wavs").glob("*.wav"))[0]
    audio, _ = load_audio(wav)
    soundfile.write(tmp_path / "16k.wav", audio[::2][:8000], 11025)
    out = tmp_path / "re.wav"
    result = run_main("resynth", "--model", small_checkpoint, tmp_path / "16k.wav", "-o", out, "--steps", "fast")
    assert result.returncode == 0, result.stderr
    assert "resampled" in result.stderr and "22050 Hz" in result.stderr
    info = soundfile.info(out)
    assert info.samplerate == 22050
    assert abs(info.frames - 16000) <= 256


def test_preprocess_writes_reference_named_mels_and_reports_bad_files(tmp_path, speech_corpus):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    wavs = sorted((speech_corpus / "wavs").glob("*.wav"))[:2]
    for i, wav in enumerate(wavs):
        (data / "sub" / f"{i}.wav").write_bytes(wav.read_bytes())
    (data / "broken.wav").write_bytes(b"RIFF not really a wav")
    np.save(data / "broken.wav.spec.npy", np.zeros((80, 3), np.float32))  # a cache from before it broke
    result = run_cli("preprocess", data)
    assert result.returncode == 1
    assert "broken.wav" in result.stderr
    for i, wav in enumerate(wavs):
        spec = np.load(data / "sub" / f"{i}.wav.spec.npy")
        audio, _ = load_audio(wav)
        assert spec.shape == (80, 1 + len(audio) // 256)
    assert not (data / "broken.wav.spec.npy").exists()  # no stale mel stays under the new record


def test_preprocess_writes_mels_in_the_named_or_json_convention(tmp_path, speech_corpus):
    from diffwave_vocoder.adapters.conventions import CONVENTIONS
    from diffwave_vocoder.features.mel import MelConvention, compute_mel

    data = tmp_path / "data"
    data.mkdir()
    wav = sorted((speech_corpus / "wavs").glob("*.wav"))[0]
    (data / "a.wav").write_bytes(wav.read_bytes())
    audio, _ = load_audio(wav)
    assert run_cli("preprocess", data, "--mel-convention", "hifigan").returncode == 0
    np.testing.assert_allclose(np.load(data / "a.wav.spec.npy"), compute_mel(audio, CONVENTIONS["hifigan"]()).T,
                               atol=1e-5)
    custom = MelConvention(hop_length=200, win_length=800, n_fft=800, center=False, pad=300, compression="log")
    (tmp_path / "mel.json").write_text(json.dumps(custom.to_dict()))
    assert run_cli("preprocess", data, "--mel-convention", tmp_path / "mel.json").returncode == 0
    np.testing.assert_allclose(np.load(data / "a.wav.spec.npy"), compute_mel(audio, custom).T, atol=1e-5)
    assert json.loads((data / "mel_convention.json").read_text()) == {"mel_convention": custom.to_dict(),
                                                                      "complete": True}


def test_a_bad_mel_convention_is_a_one_line_error(tmp_path, speech_corpus):
    assert_one_line_error(run_cli("preprocess", tmp_path, "--mel-convention", "hifi-gan"),
                          "unknown mel convention 'hifi-gan'", "hifigan")
    (tmp_path / "typo.json").write_text(json.dumps({"hop": 256}))
    assert_one_line_error(run_main("train", tmp_path / "run", speech_corpus, "--mel-convention",
                                   tmp_path / "typo.json"), "typo.json", "unknown mel convention field(s) ['hop']")
    (tmp_path / "broken.json").write_text("{")
    assert_one_line_error(run_cli("preprocess", tmp_path, "--mel-convention", tmp_path / "broken.json"),
                          "cannot read mel convention file")
    assert not (tmp_path / "run").exists()


def test_info_shows_sizes_and_the_whole_convention(small_checkpoint, tmp_path):
    from diffwave_vocoder import Vocoder
    from diffwave_vocoder.adapters.conventions import CONVENTIONS

    result = run_cli("info", small_checkpoint)
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stdout and "n_mels=80" in result.stdout and "compression=lmnt" in result.stdout
    vocoder = Vocoder.load(small_checkpoint)
    Vocoder(vocoder.model, vocoder.config.with_mel(CONVENTIONS["hifigan"]())).save(tmp_path / "hifigan")
    mel_line = [line for line in run_cli("info", tmp_path / "hifigan").stdout.splitlines() if "mel:" in line][0]
    for field in ("mel_scale=slaney", "center=False", "pad=384", "stft_normalized=False", "magnitude_eps=1e-09",
                  "magnitude_guard=add", "window_periodic=True", "compression=log", "guard=clamp"):
        assert field in mel_line


def test_info_and_preprocess_start_no_tensorflow(small_checkpoint, speech_corpus, tmp_path):
    """The quick commands read files: no TensorFlow start-up, and the same answers as the loaded model."""
    from diffwave_vocoder import Vocoder
    from diffwave_vocoder.features.mel import compute_mel

    data = tmp_path / "speech"
    data.mkdir()
    wav = sorted((speech_corpus / "wavs").glob("*.wav"))[0]
    (data / wav.name).write_bytes(wav.read_bytes())
    code = ("import json, sys; from diffwave_vocoder.cli import main; "
            f"main(['info', '--json', {str(small_checkpoint)!r}]); "
            f"main(['preprocess', '--model', {str(small_checkpoint)!r}, {str(data)!r}]); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == []
    info = json.loads("\n".join(lines[:lines.index("}") + 1]))
    vocoder = Vocoder.load(small_checkpoint)
    assert info == json.loads(json.dumps(vocoder.info()))
    assert info["parameters"] == vocoder.model.count_params()
    audio, _ = load_audio(wav)
    cached = np.load(data / (wav.name + ".spec.npy"))
    np.testing.assert_allclose(cached.T, compute_mel(audio, vocoder.mel_convention), atol=1e-6)


def test_info_refuses_weights_of_another_model(small_checkpoint, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(small_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["residual_channels"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("info", other), "do not fit the model its config.json describes")
    (other / "model.weights.h5").write_bytes(b"not hdf5")
    assert_one_line_error(run_cli("info", other), "cannot read weights from")


def test_errors_are_one_line_and_leave_no_output(tmp_path, small_checkpoint):
    out = tmp_path / "never.wav"
    assert_one_line_error(run_main("vocode", "--model", tmp_path / "nope", tmp_path / "m.npy", "-o", out),
                          "m.npy")
    np.save(tmp_path / "nan.npy", np.full((10, 80), np.nan, np.float32))
    assert_one_line_error(run_cli("vocode", "--model", small_checkpoint, tmp_path / "nan.npy", "-o", out), "NaN")
    np.save(tmp_path / "wrong.npy", np.zeros((10, 64), np.float32))
    assert_one_line_error(run_main("vocode", "--model", small_checkpoint, tmp_path / "wrong.npy", "-o", out), "n_mels")
    np.save(tmp_path / "ok.npy", np.zeros((10, 80), np.float32))
    assert_one_line_error(run_main("vocode", "--model", tmp_path / "nope", tmp_path / "ok.npy", "-o", out),
                          "checkpoint not found")
    assert_one_line_error(run_main("resynth", "--model", small_checkpoint, tmp_path / "missing.wav", "-o", out),
                          "missing.wav")
    assert_one_line_error(run_cli("vocode", "--model", small_checkpoint, tmp_path / "ok.npy", "-o", out,
                                  "--steps", "x"), "--steps")
    assert_one_line_error(run_main("train", tmp_path / "run", tmp_path / "data", "--max-grad-norm", "x"),
                          "argument --max-grad-norm: expected a number or 'none', got 'x'")
    assert not out.exists() and not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_vocode_a_tacotron2_mel_through_its_adapter(tmp_path, small_checkpoint, speech_corpus):
    from diffwave_vocoder.adapters.conventions import CONVENTIONS
    from diffwave_vocoder.features.mel import compute_mel

    audio, _ = load_audio(sorted((speech_corpus / "wavs").glob("*.wav"))[1])
    tacotron_mel = compute_mel(audio[:22050], CONVENTIONS["tacotron2"]())  # ln-Slaney 0-8 kHz, (frames, 80)
    assert tacotron_mel.min() < 0  # natural-log values, not lmnt's [0, 1]
    np.save(tmp_path / "taco.npy", tacotron_mel.T)  # PyTorch layout, as Tacotron 2 emits it
    out = tmp_path / "taco.wav"
    result = run_main("vocode", "--model", small_checkpoint, tmp_path / "taco.npy", "-o", out, "--adapter", "tacotron2",
                      "--layout", "torch", "--seed", 1)
    assert result.returncode == 0, result.stderr
    assert soundfile.info(out).frames == tacotron_mel.shape[0] * 256
    assert_one_line_error(run_main("vocode", "--model", small_checkpoint, tmp_path / "taco.npy",
                                   "-o", tmp_path / "x.wav", "--adapter", "no-such-model"),
                          "no adapter named 'no-such-model'")


def test_plugins_lists_builtin_vocoder_and_adapters():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    for name in ("diffwave", "tacotron2", "hifigan", "coqui", "espnet", "generic"):
        assert f"  {name} " in result.stdout
    assert "diffwave-vocoder" in result.stdout


def test_in_process_main_leaves_the_package_logger_as_it_found_it(tmp_path, capsys):
    # The CLI routes the package's log to stderr while a command runs (train, evaluate), then restores it:
    # otherwise a later caller's log capture (caplog, an application's handlers) would see nothing.
    import logging

    from diffwave_vocoder.cli import main

    logger = logging.getLogger("diffwave_vocoder")
    before = logger.handlers[:], logger.level, logger.propagate
    assert main(["evaluate", str(tmp_path / "missing")]) == 1
    assert "evaluation data not found" in capsys.readouterr().err
    assert (logger.handlers, logger.level, logger.propagate) == before
