"""The vocoder shipped in the package: in the wheel, the default everywhere, and it makes speech."""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from diffwave_vocoder import load_vocoder
from diffwave_vocoder.cli import _train_overrides, build_parser
from diffwave_vocoder.io.audio import load_audio
from diffwave_vocoder.features.mel import compute_mel
from diffwave_vocoder.pretrained import DEFAULT_PRESET, list_presets, preset_path
from helpers import run_command, run_main

ROOT = Path(__file__).resolve().parents[1]


def test_default_preset_is_shipped_with_its_provenance():
    assert DEFAULT_PRESET in list_presets()
    metadata = json.loads((preset_path() / "metadata.json").read_text())
    assert metadata["training_step"] > 0 and metadata["source"] == "diffwave-vocoder train"
    assert metadata["total_training_steps"] == sum(run["steps"] for run in metadata["training_history"])
    assert metadata["training_history"][-1]["steps"] == metadata["training_step"]
    last = metadata["training_history"][-1]
    commands = metadata["training_command"].split("; then ")
    init = last.get("init_from")
    assert commands[0].startswith("bash recipes/default-vocoder/train.sh WORK"
                                  + (f" --init-from {init}" if init else ""))
    assert len(commands) == len(last.get("setting_changes", [])) + 1
    assert metadata["training_config"] == json.loads((ROOT / "recipes/default-vocoder/config.json").read_text())
    assert metadata["training_data"]["seed"] == 100
    held_out = set(metadata["evaluation_data"]["voices"])
    assert held_out and not held_out & set(metadata["training_data"]["voices"])
    assert {"stoi", "pesq", "dnsmos_p808"} <= set(metadata["quality_heldout"]["fast"][0])


def test_registry_default_and_cli_default_are_the_shipped_vocoder(tmp_path):
    vocoder = load_vocoder("diffwave")
    assert vocoder.metadata["preset"] == DEFAULT_PRESET
    assert vocoder.config.residual_channels == 32 and vocoder.config.residual_layers == 20
    result = run_command("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["metadata"]["training_step"] == vocoder.metadata["training_step"]
    assert info["parameters"] == vocoder.model.count_params()


@pytest.mark.slow
def test_wheel_carries_the_weights_and_a_plain_install_finds_them(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("diffwave_vocoder-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    modules = [path.relative_to(ROOT).as_posix() for path in (ROOT / "diffwave_vocoder").rglob("*.py")]
    assert [module for module in modules if module not in names] == []  # every subpackage ships
    for file in ("config.json", "metadata.json", "model.weights.h5"):
        assert f"diffwave_vocoder/pretrained/default/{file}" in names
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(tmp_path / "site"), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import diffwave_vocoder, diffwave_vocoder.pretrained as p; from diffwave_vocoder import load_vocoder;"
             "v = load_vocoder('diffwave'); print(diffwave_vocoder.__file__); print(p.preset_path());"
             "print(v.metadata['training_step'])")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin",
                              "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-2000:]
    module, preset, step = run.stdout.split()
    assert module.startswith(str(tmp_path / "site")) and preset.startswith(str(tmp_path / "site"))
    assert int(step) == load_vocoder("diffwave").metadata["training_step"]


def test_shipped_vocoder_follows_the_mel_of_unseen_speech(tmp_path):
    # Voices the model was not trained on (see metadata evaluation_data), texts from another seed.
    from diffwave_vocoder.evaluation.corpus import make_speech_corpus

    corpus = make_speech_corpus(tmp_path / "speech", clips=2, seed=7, voices=["flite:awb", "espeak-ng:en-us+m5"])
    vocoder = load_vocoder("diffwave")
    random_init = load_vocoder("diffwave", config=vocoder.config.to_dict(), seed=0)
    layer = random_init.model.get_layer("output_projection")  # zero-initialised: make it speak noise
    layer.set_weights([np.random.default_rng(0).normal(0, 0.1, layer.kernel.shape).astype("float32"),
                       np.zeros(layer.bias.shape, "float32")])
    for wav in sorted((corpus / "wavs").glob("*.wav")):
        audio, _ = load_audio(wav)
        mel = compute_mel(audio, vocoder.mel_convention)
        distance = {name: np.abs(compute_mel(v.vocode(mel, seed=0), vocoder.mel_convention)[:len(mel)] - mel).mean()
                    for name, v in (("shipped", vocoder), ("random", random_init))}
        # Log-mel L1 in lmnt units (1.0 = 100 dB): the trained model tracks the mel far closer.
        assert distance["shipped"] < 0.6 * distance["random"], distance


def test_cli_vocodes_and_resynthesises_with_the_shipped_vocoder_by_default(tmp_path):
    from diffwave_vocoder.evaluation.corpus import make_speech_corpus

    corpus = make_speech_corpus(tmp_path / "speech", clips=1, seed=7, voices=["flite:awb"])
    wav = next((corpus / "wavs").glob("*.wav"))
    result = run_main("resynth", wav, "-o", tmp_path / "out.wav", "--seed", "0")
    assert result.returncode == 0, result.stderr
    audio, _ = load_audio(tmp_path / "out.wav")
    original, _ = load_audio(wav)
    assert len(audio) == (len(original) // 256 + 1) * 256
    np.save(tmp_path / "mel.npy", compute_mel(original, load_vocoder("diffwave").mel_convention))
    result = run_main("vocode", tmp_path / "mel.npy", "-o", tmp_path / "vocoded.wav", "--seed", "0")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(load_audio(tmp_path / "vocoded.wav")[0], audio, atol=2 / 32768)


def test_ship_writes_a_resume_with_changed_settings_as_commands_the_cli_takes():
    ship = runpy.run_path(str(ROOT / "recipes/default-vocoder/ship.py"))
    run = {"steps": 5000, "init_from": "step-14270", "setting_changes": [
        {"step": 1000, "learning_rate": [5e-4, 2e-4], "mixed_precision": [None, "bfloat16"]},
        {"step": 3000, "learning_rate": [2e-4, 1e-4], "seed": [0, 1]},
        {"step": 3500, "max_grad_norm": [None, 1.0]},
        {"step": 4000, "mixed_precision": ["bfloat16", None], "ema_decay": [0.0, 0.999], "max_grad_norm": [1.0, None]}]}
    commands = ship["training_commands"](run).split("; then ")
    base = "bash recipes/default-vocoder/train.sh WORK --init-from step-14270"
    assert commands == [f"{base} --max-steps 1000",
                        f"{base} --learning-rate 0.0002 --mixed-precision bfloat16 --max-steps 3000",
                        f"{base} --learning-rate 0.0001 --mixed-precision bfloat16 --seed 1 --max-steps 3500",
                        f"{base} --learning-rate 0.0001 --mixed-precision bfloat16 --seed 1 --max-grad-norm 1.0 "
                        "--max-steps 4000",
                        f"{base} --learning-rate 0.0001 --mixed-precision float32 --seed 1 --max-grad-norm none "
                        "--ema-decay 0.999"]
    parser = build_parser()  # train.sh hands its extra arguments to `diffwave-vocoder train`
    last = parser.parse_args(["train", "RUN", "DATA", *commands[-1].removeprefix("bash recipes/default-vocoder/"
                                                                                  "train.sh WORK ").split()])
    # float32 and none switch mixed precision and clipping off: the settings' null, as the run recorded them
    assert _train_overrides(last) == {"learning_rate": 1e-4, "seed": 1, "mixed_precision": None, "ema_decay": 0.999,
                                      "max_grad_norm": None, "init_from": str(Path("step-14270").resolve())}
    assert ship["training_commands"]({"steps": 10}) == "bash recipes/default-vocoder/train.sh WORK"
    # A run started with flags: they come first in each of its commands.
    started = {"steps": 10, "init_from": "init", "started_with": {"learning_rate": 2e-4, "ema_decay": 0.999},
               "setting_changes": [{"step": 5, "mixed_precision": [None, "bfloat16"]}]}
    base = "bash recipes/default-vocoder/train.sh WORK --init-from init --learning-rate 0.0002 --ema-decay 0.999"
    assert ship["training_commands"](started).split("; then ") == [f"{base} --max-steps 5",
                                                                 f"{base} --mixed-precision bfloat16"]
    # A null no flag can express (only a hand edit makes one) is named, not a KeyError.
    with pytest.raises(ValueError, match="records seed as null, but only max_grad_norm, mixed_precision"):
        ship["training_commands"]({"steps": 10, "setting_changes": [{"step": 5, "seed": [0, None]}]})


def test_ship_finds_the_settings_a_run_started_with(tmp_path):
    """Flags given when the run started are the run's training.json with its later changes undone,
    where it differs from the recipe's config."""
    ship = runpy.run_path(str(ROOT / "recipes/default-vocoder/ship.py"))
    recipe = json.loads((ROOT / "recipes/default-vocoder/config.json").read_text())["training"]
    settings = {**recipe, "learning_rate": 1e-4, "mixed_precision": "bfloat16", "ema_decay": 0.999,
                "init_from": "/somewhere/init", "max_steps": 5}
    (tmp_path / "training.json").write_text(json.dumps(settings))
    assert ship["started_with"](tmp_path, []) == {"learning_rate": 1e-4, "mixed_precision": "bfloat16",
                                                  "ema_decay": 0.999}
    changes = [{"step": 3, "learning_rate": [recipe["learning_rate"], 2e-4]},
               {"step": 4, "learning_rate": [2e-4, 1e-4], "ema_decay": [0.0, 0.999]}]
    assert ship["started_with"](tmp_path, changes) == {"mixed_precision": "bfloat16"}
    assert ship["started_with"](tmp_path / "checkpoints", changes) == {}  # not a run directory


def test_ship_says_in_one_line_what_a_work_dir_lacks(tmp_path):
    ship = ROOT / "recipes/default-vocoder/ship.py"
    shipped = {path.name: path.stat().st_mtime_ns for path in preset_path().iterdir()}
    def run(work):
        return subprocess.run([sys.executable, str(ship), str(work)], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    # The last line says it (TensorFlow's native start-up notices may come before it), with no traceback.
    result = run(tmp_path / "nowhere")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"ship.py: {tmp_path / 'nowhere' / 'train'} is not a corpus made " \
                                             "by train.sh (no corpus.json there)"
    for name in ("train", "val", "heldout"):  # corpora present, but the run never saved a checkpoint
        (tmp_path / "work" / name).mkdir(parents=True)
        (tmp_path / "work" / name / "corpus.json").write_text(json.dumps({
            "clips": 1, "seed": 0, "sample_rate": 22050, "voices": ["flite:slt"], "tools": {}}))
    (tmp_path / "work" / "run").mkdir()
    (tmp_path / "work" / "run" / "config.json").write_text((preset_path() / "config.json").read_text())
    (tmp_path / "work" / "run" / "training.json").write_text("{}")
    result = run(tmp_path / "work")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"ship.py: training run {tmp_path / 'work' / 'run'} has no complete " \
                                             "checkpoint yet"
    assert {path.name: path.stat().st_mtime_ns for path in preset_path().iterdir()} == shipped  # untouched
