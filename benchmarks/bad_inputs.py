"""Bad input at every entry point, through the real command line: what each case gives.

    python benchmarks/bad_inputs.py            # prints the README's Markdown table

Each case runs `diffwave-vocoder ...` (the CLI's `main`, in this process, so TensorFlow starts
once) on files made for it in a temporary directory, and records the exit status and what was
printed on stderr (the temporary directory's path shown as `…`). A case fails the run (exit 1)
if its stderr is not exactly one line per message or a traceback appears.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY = dict(residual_channels=8, residual_layers=4, dilation_cycle_length=2)


def make_files(root: Path) -> dict[str, Path]:
    import numpy as np
    import soundfile

    from diffwave_vocoder import DiffWaveConfig, Vocoder
    from diffwave_vocoder.training.trainer import Trainer, TrainingSettings

    files: dict[str, Path] = {}
    rng = np.random.default_rng(0)
    speech = root / "wavs"
    speech.mkdir()
    for i in range(3):
        t = np.arange(22050 * 2) / 22050
        soundfile.write(speech / f"clip-{i}.wav", (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32),
                        22050)
    files["wavs"] = speech
    config = DiffWaveConfig(**TINY)
    files["model"] = Vocoder.from_config(config, seed=0).save(root / "model")

    def mel(name: str, array) -> Path:
        path = root / name
        np.save(path, array, allow_pickle=True)
        return path

    files["mel_ok"] = mel("ok.npy", rng.uniform(0, 1, (80, 20)).astype(np.float32))
    files["mel_64"] = mel("mel64.npy", rng.uniform(0, 1, (20, 64)).astype(np.float32))
    files["mel_rank1"] = mel("rank1.npy", np.zeros(80, np.float32))
    files["mel_nan"] = mel("nan.npy", np.full((20, 80), np.nan, np.float32))
    files["mel_empty"] = mel("empty.npy", np.zeros((0, 80), np.float32))
    files["mel_square"] = mel("square.npy", np.zeros((80, 80), np.float32))
    files["mel_zscored"] = mel("zscored.npy", rng.normal(0, 1, (20, 80)).astype(np.float32) - 5)
    files["mel_huge"] = mel("huge.npy", np.full((20, 80), 1e30, np.float32))
    files["mel_batch"] = mel("batch.npy", rng.uniform(0, 1, (2, 20, 80)).astype(np.float32))
    files["mel_object"] = mel("object.npy", np.array([{"mel": 1}], dtype=object))
    files["mel_text"] = root / "mel.txt.npy"
    files["mel_text"].write_text("0.1 0.2 0.3\n")

    def checkpoint(name: str, change) -> Path:
        path = root / name
        Vocoder.from_config(config, seed=0).save(path)
        change(path)
        return path

    files["ckpt_no_weights"] = checkpoint("no-weights", lambda p: (p / "model.weights.h5").unlink())
    files["ckpt_truncated"] = checkpoint("truncated", lambda p: os.truncate(p / "model.weights.h5", 1000))
    files["ckpt_unknown_key"] = checkpoint("unknown-key", lambda p: (p / "config.json").write_text(
        json.dumps({**json.loads((p / "config.json").read_text()), "residual_chanels": 64})))
    files["ckpt_other_size"] = checkpoint("other-size", lambda p: (p / "config.json").write_text(
        json.dumps({**json.loads((p / "config.json").read_text()), "residual_channels": 16})))
    files["ckpt_bad_json"] = checkpoint("bad-json", lambda p: (p / "config.json").write_text("{residual"))

    settings = TrainingSettings(max_steps=1, batch_size=2, crop_frames=8, val_fraction=0.0, log_every=1000)
    run = root / "run"
    Trainer(run, speech, config=config, settings=settings).fit()
    broken = root / "broken-run"
    Trainer(broken, speech, config=config, settings=settings).fit()
    for data in (broken / "checkpoints").glob("step-*/variables.data-*"):
        os.truncate(data, 100)
    files["run"], files["broken_run"] = run, broken

    def config_file(name: str, text: str) -> Path:
        path = root / name
        path.write_text(text)
        return path

    files["cfg_not_json"] = config_file("not-json.json", "residual_channels: 64\n")
    files["cfg_unknown_training"] = config_file("unknown-training.json", json.dumps({"training": {"batchsize": 8}}))
    files["cfg_unknown_model"] = config_file("unknown-model.json", json.dumps({"residual_chanels": 64}))
    files["cfg_bad_value"] = config_file("bad-value.json", json.dumps({"training": {"loss": "l3"}}))
    files["cfg_list"] = config_file("list.json", "[1, 2]")

    def folder(name: str, make) -> Path:
        path = root / name
        path.mkdir()
        make(path)
        return path

    files["empty_dir"] = folder("empty", lambda p: None)
    files["wavs_16k"] = folder("wavs16k", lambda p: soundfile.write(p / "a.wav", np.zeros(16000, np.float32), 16000))
    files["wavs_short"] = folder("short", lambda p: soundfile.write(p / "a.wav", np.zeros(500, np.float32), 22050))
    files["wavs_garbage"] = folder("garbage", lambda p: [(p / f"{i}.wav").write_bytes(rng.bytes(4000))
                                                        for i in range(2)])
    files["lj_missing"] = folder("lj", lambda p: ((p / "wavs").mkdir(), (p / "metadata.csv").write_text(
        "LJ001-0001|a|a\nLJ001-0002|b|b\n")))
    files["mixed"] = folder("mixed", lambda p: (soundfile.write(p / "good.wav", np.zeros(22050, np.float32), 22050),
                                                (p / "bad.wav").write_bytes(b"RIFF....WAVEjunk")))
    files["not_audio"] = config_file("notes.wav", "not audio\n")
    files["not_pt"] = config_file("weights.pt", "not a checkpoint\n")
    return files


def cases(f: dict[str, Path]) -> list[tuple[str, str, list[str]]]:
    """(entry point, what was tried, argv)."""
    m = str(f["model"])
    out = str(f["model"].parent / "out.wav")
    train = ["train", str(f["model"].parent / "new-run")]
    return [
        ("CLI", "no subcommand", []),
        ("CLI", "`vocode` without `-o`", ["vocode", str(f["mel_ok"]), "--model", m]),
        ("CLI", "`--steps 0.5,abc`", ["vocode", str(f["mel_ok"]), "--model", m, "-o", out, "--steps", "0.5,abc"]),
        ("CLI", "`train --batch-size 0`", [*train, str(f["wavs"]), "--batch-size", "0"]),
        ("CLI", "`train --strategy multi-worker` without TF_CONFIG", [*train, str(f["wavs"]), "--strategy",
                                                                     "multi-worker"]),
        ("CLI", "`export --quantize int8` to a checkpoint", ["export", str(f["run"]), str(f["run"].parent / "x"),
                                                              "--quantize", "int8"]),
        ("CLI", "`--adapter` not registered", ["vocode", str(f["mel_ok"]), "--model", m, "-o", out,
                                              "--adapter", "wavenet"]),
        ("vocode input", "mel file missing", ["vocode", str(f["mel_ok"]) + ".missing", "--model", m, "-o", out]),
        ("vocode input", "not a .npy file (text)", ["vocode", str(f["mel_text"]), "--model", m, "-o", out]),
        ("vocode input", "pickled object array", ["vocode", str(f["mel_object"]), "--model", m, "-o", out]),
        ("vocode input", "64 mel bands for an 80-band model", ["vocode", str(f["mel_64"]), "--model", m, "-o", out]),
        ("vocode input", "rank 1", ["vocode", str(f["mel_rank1"]), "--model", m, "-o", out]),
        ("vocode input", "zero frames", ["vocode", str(f["mel_empty"]), "--model", m, "-o", out]),
        ("vocode input", "NaN values", ["vocode", str(f["mel_nan"]), "--model", m, "-o", out]),
        ("vocode input", "80 x 80 with `--layout auto`", ["vocode", str(f["mel_square"]), "--model", m, "-o", out]),
        ("vocode input", "a batch of 2 in one file", ["vocode", str(f["mel_batch"]), "--model", m, "-o", out]),
        ("vocode input", "z-scored mel (values around -5) for an lmnt model",
         ["vocode", str(f["mel_zscored"]), "--model", m, "-o", out, "--seed", "0"]),
        ("vocode input", "values of 1e30", ["vocode", str(f["mel_huge"]), "--model", m, "-o", out, "--seed", "0"]),
        ("vocode input", "`-o` in a directory that is a file", ["vocode", str(f["mel_ok"]), "--model", m, "-o",
                                                                 str(f["not_pt"]) + "/out.wav"]),
        ("config file", "not JSON", [*train, str(f["wavs"]), "--config", str(f["cfg_not_json"])]),
        ("config file", "a JSON list", [*train, str(f["wavs"]), "--config", str(f["cfg_list"])]),
        ("config file", "unknown training key `batchsize`", [*train, str(f["wavs"]), "--config",
                                                               str(f["cfg_unknown_training"])]),
        ("config file", "unknown model key `residual_chanels`", [*train, str(f["wavs"]), "--config",
                                                                   str(f["cfg_unknown_model"])]),
        ("config file", "`\"loss\": \"l3\"`", [*train, str(f["wavs"]), "--config", str(f["cfg_bad_value"])]),
        ("config file", "another model's config for an existing run", ["train", str(f["run"]), str(f["wavs"]),
                                                                       "--config", str(f["ckpt_other_size"] /
                                                                                       "config.json")]),
        ("checkpoint", "directory missing", ["vocode", str(f["mel_ok"]), "--model", m + "-missing", "-o", out]),
        ("checkpoint", "a file, not a directory", ["info", str(f["not_pt"])]),
        ("checkpoint", "`model.weights.h5` missing", ["info", str(f["ckpt_no_weights"])]),
        ("checkpoint", "`model.weights.h5` truncated", ["info", str(f["ckpt_truncated"])]),
        ("checkpoint", "`config.json` not JSON", ["info", str(f["ckpt_bad_json"])]),
        ("checkpoint", "`config.json` with an unknown key", ["info", str(f["ckpt_unknown_key"])]),
        ("checkpoint", "weights of another size (config: 16 channels, weights: 8)", ["info",
                                                                                      str(f["ckpt_other_size"])]),
        ("checkpoint", "training run whose every checkpoint is truncated", ["train", str(f["broken_run"]),
                                                                             str(f["wavs"]), "--max-steps", "2"]),
        ("checkpoint", "`export` of a directory that is no run or checkpoint", ["export", str(f["empty_dir"]),
                                                                                str(f["run"].parent / "y")]),
        ("checkpoint", "`convert` of a file that is no PyTorch checkpoint", ["convert", str(f["not_pt"]), "-o",
                                                                             str(f["run"].parent / "z")]),
        ("data", "data folder missing", [*train, str(f["wavs"]) + "-missing"]),
        ("data", "folder without wavs", [*train, str(f["empty_dir"])]),
        ("data", "wavs at 16 kHz for a 22.05 kHz model", [*train, str(f["wavs_16k"])]),
        ("data", "every clip shorter than a crop", [*train, str(f["wavs_short"])]),
        ("data", "every wav unreadable", [*train, str(f["wavs_garbage"])]),
        ("data", "LJSpeech metadata.csv listing missing clips", [*train, str(f["lj_missing"])]),
        ("data", "`preprocess` of a folder with one broken wav", ["preprocess", str(f["mixed"])]),
        ("data", "`resynth` of a file that is not audio", ["resynth", str(f["not_audio"]), "--model", m, "-o", out]),
    ]


def run_case(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of one CLI call, without the lines the package logged (`train`'s
    progress and data notes, which the CLI prints on stderr), so the table shows what the CLI itself
    says about the bad input."""
    from diffwave_vocoder.cli import main

    logged: set[str] = set()
    make_record = logging.getLogRecordFactory()

    def remembering(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if record.name.split(".")[0] == "diffwave_vocoder":
            logged.update(record.getMessage().splitlines())
        return record

    logging.setLogRecordFactory(remembering)
    err, stdout = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
            try:
                code = main(argv)
            except SystemExit as error:  # argparse
                code = int(error.code or 0)
    finally:
        logging.setLogRecordFactory(make_record)
    return code, "\n".join(line for line in err.getvalue().splitlines() if line not in logged)


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        files = make_files(root)
        print("| entry point | what was tried | exit | stderr |")
        print("|---|---|---|---|")
        for entry, tried, argv in cases(files):
            code, err = run_case(argv)
            lines = [line for line in err.splitlines() if line.strip()]
            shown = " / ".join(lines).replace(str(root), "…").replace("|", "\\|")
            if "Traceback" in err or not lines or any(
                    not line.startswith(("error:", "warning:")) and ": error: " not in line for line in lines):
                ok = False
                shown += " **(not one line)**"
            print(f"| {entry} | {tried} | {code} | `{shown}` |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
