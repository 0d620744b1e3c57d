"""`diffwave-vocoder` command line. Every failure is one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported

# oneDNN's kernels are x86's; on other CPUs TF_ENABLE_ONEDNN_OPTS is left alone.
ON_X86 = platform.machine().lower() in ("x86_64", "amd64")
# The exit status of a command stopped by SIGINT/SIGTERM (128 + SIGINT, as shells report Ctrl-C).
INTERRUPTED = 130


def _prefer_onednn() -> None:
    """Turn on TensorFlow's oneDNN kernels for training on x86, unless the user set TF_ENABLE_ONEDNN_OPTS.

    TensorFlow turns them on by default only on CPUs with AVX-512 VNNI or newer; without them it has no
    dilated-convolution gradient of its own, and training the shipped recipe on an AVX2 CPU took 1.7x as
    long (benchmarks/train_speed.py). Inference gains nothing from them there, so only `train` asks.
    It only takes effect before TensorFlow is imported, so it is set only then (not leaking into the
    environment of a process that calls `main` with TensorFlow loaded already).
    """
    if "tensorflow" not in sys.modules and ON_X86:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with native stderr muted: TF prints start-up notices (oneDNN, CUDA probing)
    from C++ before its log level applies, and the CLI promises one line per error."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class CLIError(Exception):
    """An error whose message is the whole story for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage on a second line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _steps(value: str):
    if value in ("fast", "full"):
        return value
    try:
        return [float(b) for b in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'fast', 'full' or comma-separated betas, got {value!r}")


def _add_vocoding_options(parser: argparse.ArgumentParser, metavar: str, inputs_help: str) -> None:
    """What `vocode` and `resynth` share: inputs, model, output, sampling and batching."""
    parser.add_argument("inputs", nargs="+", metavar=metavar, help=inputs_help)
    parser.add_argument("--model", help="checkpoint directory (default: the vocoder shipped in the package)")
    parser.add_argument("-o", "--output", required=True, help="output .wav, - for standard output, or a "
                                                              "directory for several inputs")
    parser.add_argument("--steps", type=_steps, default="fast",
                        help="'fast' (6 steps, default), 'full' (training schedule) or comma-separated betas")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (same seed, same audio)")
    parser.add_argument("--stream", action="store_true",
                        help="with -o -: write audio to standard output as it becomes final (pipe it to a player)")
    parser.add_argument("--raw", action="store_true", help="with -o -: raw 16-bit little-endian PCM, no WAV header")
    parser.add_argument("--batch-size", type=int, default=4, help="several inputs: similar lengths vocoded together")
    parser.add_argument("--overwrite", action="store_true", help="several inputs: redo outputs that exist")


def _batch_mode(args: argparse.Namespace) -> bool:
    """Several inputs, a directory or a glob, or an output directory: one file per input into -o DIR."""
    import glob

    inputs = args.inputs
    if len(inputs) > 1 or Path(inputs[0]).is_dir() or (not Path(inputs[0]).exists() and glob.has_magic(inputs[0])):
        return True
    return args.output != "-" and (Path(args.output).is_dir() or args.output.endswith(os.sep))


def _write_stdout(blocks, total_samples: int, sample_rate: int, raw: bool) -> None:
    """16-bit PCM on stdout, a block at a time (flushed), after a WAV header unless `raw`."""
    import struct

    import numpy as np

    out = sys.stdout.buffer
    try:
        if not raw:
            data = 2 * total_samples
            out.write(b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
                      + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
                      + b"data" + struct.pack("<I", data))
        for block in blocks:
            # The scaling soundfile (libsndfile) uses, so a streamed file equals one written by `save_audio`.
            pcm = np.clip(np.round(np.asarray(block, np.float64) * 32768.0), -32768, 32767)
            out.write(pcm.astype("<i2").tobytes())
            out.flush()
    except BrokenPipeError:
        # The reader went away (a player was closed): stop quietly, and keep Python from failing to
        # flush the closed pipe at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise CLIError("the output pipe was closed before the audio was complete") from None


def _run_batch(args: argparse.Namespace, vocoder, suffixes, size, load) -> None:
    from .batch import expand_inputs, run_batch

    if args.output == "-" or args.stream:
        raise CLIError("several inputs are written as files into a directory: give -o OUT_DIR (no --stream)")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"-o {out_dir} is a file; several inputs need an output directory")
    sources = expand_inputs(args.inputs, suffixes)
    summary = run_batch(vocoder, sources, out_dir, size, load, args.steps, args.seed, args.batch_size,
                        args.overwrite)
    print(summary.line())
    if summary.failed:
        raise CLIError(f"{len(summary.failed)} of {len(sources)} inputs failed (named above)")


def _load_mel(path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read mel file {path}: {error}") from None


def _load_model(path: str | None):
    """The checkpoint at `path`, or the vocoder shipped in the package when no --model is given."""
    from .pretrained import preset_path
    from .vocoder import Vocoder

    return Vocoder.load(path if path else preset_path())


def cmd_vocode(args: argparse.Namespace) -> None:
    from .features.input_layout import as_mel_list
    from .sampler import configure_cpu_threads

    configure_cpu_threads()
    batch = _batch_mode(args)
    if not batch:
        mel = _load_mel(args.inputs[0])
    vocoder = _load_model(args.model)
    adapter = None
    if args.adapter:
        from .registry import get_adapter

        options = {"stats": args.adapter_stats} if args.adapter_stats else {}
        adapter = get_adapter(args.adapter, target=vocoder.mel_convention, **options)

    def prepare(mel):
        """(frames, n_mels) mels from a file's array, through the adapter if one is given."""
        if adapter is not None:
            return as_mel_list(adapter(mel, layout=args.layout), vocoder.n_mels, "tf")
        return as_mel_list(mel, vocoder.n_mels, args.layout)

    if batch:
        from .batch import MEL_SUFFIXES

        def load(path):
            mels, single = prepare(_load_mel(path))
            if not single:
                raise ValueError(f"holds a batch of {len(mels)} mels; give one mel per file")
            return mels[0]

        _run_batch(args, vocoder, MEL_SUFFIXES, lambda path: len(load(path)), load)
        return
    if args.stream and args.output != "-":
        raise CLIError("--stream writes to standard output: give -o -")
    mels, single = prepare(mel)
    if not single:
        raise CLIError(f"{args.inputs[0]} holds a batch of {len(mels)} mels; give one mel per file")
    if args.stream:
        samples = len(mels[0]) * vocoder.hop_length
        _write_stdout(vocoder.stream(mels[0], steps=args.steps, seed=args.seed), samples, vocoder.sample_rate,
                      args.raw)
        print(f"wrote {samples / vocoder.sample_rate:.2f} s at {vocoder.sample_rate} Hz to standard output",
              file=sys.stderr)
        return
    _write_single(args, vocoder.vocode(mels[0], steps=args.steps, seed=args.seed), vocoder.sample_rate)


def _write_single(args: argparse.Namespace, audio, sample_rate: int) -> None:
    from .io.audio import save_audio

    if args.output == "-":
        _write_stdout([audio], len(audio), sample_rate, args.raw)
        print(f"wrote {len(audio) / sample_rate:.2f} s at {sample_rate} Hz to standard output", file=sys.stderr)
        return
    save_audio(args.output, audio, sample_rate)
    print(f"wrote {args.output} ({len(audio) / sample_rate:.2f} s at {sample_rate} Hz)")


def cmd_resynth(args: argparse.Namespace) -> None:
    from .io.audio import load_audio
    from .features.mel import compute_mel
    from .sampler import configure_cpu_threads

    configure_cpu_threads()
    vocoder = _load_model(args.model)
    if _batch_mode(args):
        import soundfile

        from .batch import AUDIO_SUFFIXES

        def size(path):
            try:
                info = soundfile.info(str(path))
            except (soundfile.LibsndfileError, RuntimeError) as error:
                raise ValueError(f"cannot read audio file: {error}") from None
            return 1 + info.frames * vocoder.sample_rate // info.samplerate // vocoder.hop_length

        def load(path):
            audio, rate = load_audio(path, vocoder.sample_rate, resample=True)
            return compute_mel(audio, vocoder.mel_convention, sample_rate=rate)

        _run_batch(args, vocoder, AUDIO_SUFFIXES, size, load)
        return
    if args.stream and args.output != "-":
        raise CLIError("--stream writes to standard output: give -o -")
    source = args.inputs[0]
    audio, rate = load_audio(source)
    if rate != vocoder.sample_rate:
        audio, rate = load_audio(source, vocoder.sample_rate, resample=True)
        print(f"note: resampled {source} to {vocoder.sample_rate} Hz, the model's rate", file=sys.stderr)
    mel = compute_mel(audio, vocoder.mel_convention, sample_rate=rate)
    if args.stream:
        _write_stdout(vocoder.stream(mel, steps=args.steps, seed=args.seed), len(mel) * vocoder.hop_length,
                      vocoder.sample_rate, args.raw)
        return
    _write_single(args, vocoder.vocode(mel, steps=args.steps, seed=args.seed), vocoder.sample_rate)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from .config import DiffWaveConfig
    from .training.data import MEL_RECORD_NAME, write_mel_caches
    from .vocoder_format import read_checkpoint

    if args.model and args.mel_convention:
        raise CLIError("give --model or --mel-convention, not both")
    if args.mel_convention:
        convention = _mel_convention(args.mel_convention)
    else:
        convention = read_checkpoint(args.model)[0].mel if args.model else DiffWaveConfig().mel
    root = Path(args.data_dir)
    if not root.is_dir():
        raise CLIError(f"not a directory: {root}")
    try:
        written, failed = write_mel_caches(root, convention, resample=args.resample)
    except ValueError as error:
        raise CLIError(str(error)) from None
    for wav, error in failed:
        print(f"warning: skipped {wav}: {error}", file=sys.stderr)
    print(f"wrote {written} mel files under {root} and their convention in {root / MEL_RECORD_NAME}")
    if failed:
        raise CLIError(f"{len(failed)} of {written + len(failed)} files could not be processed (see warnings above)")


def _mel_convention(spec: str):
    from .adapters.conventions import convention_from_spec

    try:
        return convention_from_spec(spec)
    except ValueError as error:
        raise CLIError(f"--mel-convention: {error}") from None


def _describe_mel(mel: dict) -> str:
    """Every field of a stored mel convention, long statistics vectors shortened to their length."""
    def show(value):
        return f"<{len(value)} values>" if isinstance(value, list) and len(value) > 8 else value

    params = ",".join(f"{k}={show(v)}" for k, v in mel["compression_params"].items())
    fields = [f"{k}={show(v)}" for k, v in mel.items() if k != "compression_params"]
    return " ".join(fields) + f" compression_params={{{params}}}"


def cmd_corpus(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .evaluation.corpus import VOICES, corpus_texts, default_voices, make_speech_corpus

    if args.list_voices:
        installed = {voice.name for voice in default_voices()}
        for voice in VOICES:
            print(f"{voice.name:<34} {'installed' if voice.installed() else 'not installed'}"
                  f"{'' if voice.name in installed else ' (not in the default set)'}")
        return
    if not args.out_dir:
        raise CLIError("expected an output directory: diffwave-vocoder corpus OUT_DIR --clips N")
    voices = [name.strip() for name in args.voices.split(",") if name.strip()] if args.voices else None
    excluded = [text for corpus in args.exclude_texts_of or [] for text in corpus_texts(corpus)]
    with tqdm(total=args.clips, desc="corpus", unit="clip", file=sys.stderr, disable=None) as bar:
        out = make_speech_corpus(args.out_dir, clips=args.clips, seed=args.seed, sample_rate=args.sample_rate,
                                 voices=voices, exclude_texts=excluded, overwrite=args.overwrite,
                                 progress=lambda done: bar.update(done - bar.n))
    manifest = json.loads((out / "corpus.json").read_text())
    print(f"wrote {args.clips} clips to {out} ({len(manifest['voices'])} voices, seed {args.seed}, "
          f"{args.sample_rate} Hz)")


def cmd_info(args: argparse.Namespace) -> None:
    from .pretrained import preset_path
    from .vocoder_format import describe_checkpoint

    info = describe_checkpoint(args.model or preset_path())
    if args.json:
        print(json.dumps(info, indent=2))
        return
    config = info["config"]
    kind = "unconditional" if config["unconditional"] else "conditional (mel)"
    print(f"DiffWave, {kind}: {info['parameters']:,} parameters")
    print(f"  residual_channels={config['residual_channels']} residual_layers={config['residual_layers']} "
          f"dilation_cycle_length={config['dilation_cycle_length']} "
          f"receptive_field=+-{info['receptive_field']} samples")
    print(f"  mel: {_describe_mel(config['mel'])}")
    print(f"  training schedule: {len(config['noise_schedule'])} steps, beta {config['noise_schedule'][0]:g}"
          f"..{config['noise_schedule'][-1]:g}; fast schedule: {config['inference_noise_schedule']}")
    if config.get("prior", "standard") != "standard":
        energies = config.get("prior_energy_range")
        mapped = ("not measured" if energies is None
                  else f"frame energy {energies[0]:.4g}..{energies[1]:.4g} -> std 0..1")
        print(f"  prior: {config['prior']} (PriorGrad; {mapped}, std at least {config['prior_std_min']:g})")
    for key, value in info["metadata"].items():
        if key == "init_from" and isinstance(value, dict):
            value = _describe_init_from(value)
        print(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}")


# What identifies the checkpoint a fine-tuned run started from (a converted file's hash, a run's steps).
_INIT_FROM_FACTS = ("converted_from", "source_sha256", "source_step", "source", "total_training_steps",
                    "training_step")


def _describe_init_from(init_from: dict) -> str:
    """One line for a fine-tuned vocoder's starting checkpoint: each export nests its own starting
    checkpoint's whole metadata, so a chain of fine-tunes would print kilobytes; `info --json` keeps it all."""
    source = init_from.get("metadata") or {}
    facts = [f"{key}={source[key]}" for key in _INIT_FROM_FACTS if key in source]
    return f"{init_from.get('path')} ({', '.join(facts + ['the full record: info --json'])})"


def _betas(value: str) -> list[float]:
    try:
        return [float(b) for b in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated betas, got {value!r}")


def cmd_plugins(args: argparse.Namespace) -> None:
    from .registry import SELECT_ENV, list_adapters, list_conflicts, list_excluded, list_vocoders

    for title, entries in (("vocoders", list_vocoders()), ("adapters", list_adapters())):
        print(f"{title}:")
        for name, entry in entries.items():
            print(f"  {name:<18} {entry.description}  [{entry.distribution}]")
    conflicts = list_conflicts()
    if conflicts:
        print("conflicts (each name is unusable until one of its plugins is removed):")
        for conflict in conflicts:
            print(f"  {conflict}")
    excluded = list_excluded()
    if excluded:
        print(f"not loaded ({SELECT_ENV}={os.environ.get(SELECT_ENV, '')!r} leaves them out): {', '.join(excluded)}")


def cmd_convert(args: argparse.Namespace) -> None:
    from .formats.lmnt import convert_lmnt_checkpoint

    overrides = {name: getattr(args, name) for name in (
        "dilation_cycle_length", "sample_rate", "noise_schedule", "inference_noise_schedule", "audio_len")
        if getattr(args, name) is not None}
    vocoder = convert_lmnt_checkpoint(args.checkpoint, args.output, **overrides)
    kind = "conditional" if vocoder.conditional else "unconditional"
    print(f"wrote {args.output} ({kind} DiffWave, {vocoder.model.count_params():,} parameters)")
    for key in ("hyperparameters", "assumed_reference_defaults", "overrides"):
        value = vocoder.metadata[key]
        if value:
            print(f"  {key}: {value if isinstance(value, str) else json.dumps(value)}")


# Training settings whose "off" is null in training.json, and the `train` flag value that switches each
# off when a run resumes (recipes write these values back into the commands they record).
OFF_FLAG_VALUES = {"mixed_precision": "float32", "max_grad_norm": "none"}


def _grad_norm(value: str) -> float | str:
    if value.lower() == OFF_FLAG_VALUES["max_grad_norm"]:
        return OFF_FLAG_VALUES["max_grad_norm"]
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {value!r}") from None


def _train_overrides(args: argparse.Namespace) -> dict:
    names = ("max_steps", "batch_size", "learning_rate", "loss", "max_grad_norm", "crop_frames", "crop_samples",
             "seed", "checkpoint_every", "keep_last", "keep_every", "log_every", "val_every", "val_fraction",
             "mixed_precision", "low_noise_emphasis", "fast_schedule_share", "ema_decay")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    for name, off in OFF_FLAG_VALUES.items():
        if overrides.get(name) == off:
            overrides[name] = None
    if args.init_from is not None:  # stored in training.json: absolute, so a resume from elsewhere finds it
        overrides["init_from"] = str(Path(args.init_from).resolve())
    return overrides


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """The package's log messages (INFO and up) as plain lines on stderr while a command runs; the
    logger is restored afterwards, so a `main()` called in-process leaves logging as it found it."""
    import logging

    package_log = logging.getLogger("diffwave_vocoder")
    saved = package_log.handlers[:], package_log.level, package_log.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_log.handlers = [handler]
    package_log.setLevel(logging.INFO)
    package_log.propagate = False  # TensorFlow's absl may have configured the root logger too
    try:
        yield
    finally:
        package_log.handlers, package_log.level, package_log.propagate = saved


def cmd_train(args: argparse.Namespace) -> int | None:
    from .config import DiffWaveConfig
    from .training.trainer import Trainer, TrainingSettings, load_config_file, stored_run

    config, settings = None, {}
    if args.config:
        config, settings = load_config_file(args.config)
    # Precedence: flags, then --config, then the run's own training.json, then the defaults.
    stored_config, stored_settings = stored_run(args.model_dir)
    settings = (stored_settings or TrainingSettings()).replace(**{**settings, **_train_overrides(args)})
    if args.mel_convention:
        # The model the run would train otherwise (--config, the run's own, the init checkpoint's or
        # the defaults), on this mel.
        mel = _mel_convention(args.mel_convention)
        if config is None and stored_config is None and settings.init_from is not None \
                and Path(settings.init_from).exists():
            from .training.checkpoints import export_source_config

            config = export_source_config(settings.init_from)
        config = (config or stored_config or DiffWaveConfig()).with_mel(mel)
    with _log_to_stderr():
        result = Trainer(args.model_dir, args.data, args.val, config, settings, args.strategy).fit()
    if not result.finished:
        # Stopped by a signal, as asked: not an error, but not finished either (scripts wait on the status).
        print(f"stopped at step {result.step} with checkpoint {result.checkpoint}; run the same command to resume",
              file=sys.stderr)
        return INTERRUPTED
    print(f"trained to step {result.step}; vocoder checkpoint: {result.exported}")


def cmd_export(args: argparse.Namespace) -> None:
    from .training.checkpoints import load_for_export

    if args.quantize and args.format != "tflite":
        raise CLIError("--quantize applies to --format tflite only")
    vocoder = load_for_export(args.source, average=not args.raw_weights)
    if args.format != "checkpoint":
        from .formats.export import export

        export(vocoder, args.output, args.format, args.quantize)
        print(f"wrote {args.output} ({args.format}{', int8 weights' if args.quantize else ''})")
        return
    vocoder.save(args.output)
    print(f"wrote {args.output} (vocoder checkpoint, step {vocoder.metadata.get('training_step', '?')})")


def cmd_grow(args: argparse.Namespace) -> None:
    from .training.checkpoints import load_for_export
    from .training.grow import grow

    source = load_for_export(args.source)
    vocoder = grow(source, args.residual_layers, args.seed)
    vocoder.metadata["grown_from"]["path"] = str(Path(args.source).resolve())  # as init_from records its path
    vocoder.save(args.output)
    print(f"wrote {args.output} ({source.config.residual_layers} -> {args.residual_layers} residual layers, "
          f"{vocoder.model.count_params():,} parameters, the same output as {args.source}); train it on with "
          f"`diffwave-vocoder train RUN DATA --init-from {args.output}`")


def _metrics(value: str) -> list[str]:
    from .evaluation.evaluate import METRICS

    names = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                                         f"known: {', '.join(METRICS)}")
    return names


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluation.evaluate import clip_paths, clip_voices, evaluate, evaluate_run, read_voice_map

    if args.model and args.run:
        raise CLIError("give --model or --run, not both")
    voice_map = read_voice_map(args.voices) if args.voices else None
    paths = clip_paths(args.data)
    if args.by_voice and not any(clip_voices(paths, voice_map)):
        raise CLIError("--by-voice needs clips of a corpus made by `diffwave-vocoder corpus` (its corpus.json "
                       "says which voice speaks each clip) or a --voices map naming them; none of these clips "
                       "has a voice")
    if voice_map:  # a map written for another folder would otherwise leave clips unvoiced without a word
        strays = sorted(set(voice_map) - {path.resolve() for path in paths})
        if strays:
            warnings.warn(f"{len(strays)} of the {len(voice_map)} rows of {args.voices} name no clip of the "
                          f"evaluation data (first: {strays[0]})", stacklevel=1)
    from .sampler import configure_cpu_threads

    configure_cpu_threads()
    options = dict(steps=args.steps, baseline=None if args.baseline == "none" else args.baseline,
                   metrics=args.metrics, seed=args.seed, max_seconds=args.max_seconds, voice_map=voice_map)
    with _log_to_stderr():
        if args.run:
            report = evaluate_run(args.run, args.data, **options)
        else:
            report = evaluate(_load_model(args.model), args.data, **options)
    print(report.table())
    if args.by_voice:
        print(f"\n{report.table(by_voice=True)}")
    for path, write in ((args.json, report.write_json), (args.csv, report.write_csv),
                        (args.summary_csv, lambda path: report.write_summary_csv(path, by_voice=args.by_voice))):
        if path:
            write(path)
            print(f"wrote {path}")
    if report.skipped:
        print(f"note: skipped {len(report.skipped)} unreadable file(s), named above", file=sys.stderr)


_MEL_CONVENTION_HELP = ("the mel to use: a toolkit's name (lmnt, hifigan, tacotron2, speechbrain, nemo, ...) or a "
                        "JSON file of MelConvention fields (default: lmnt's, or --model's)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diffwave-vocoder", description="DiffWave vocoder for TensorFlow/Keras.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("vocode", help="mel .npy -> wav (one file, or many into a directory)")
    _add_vocoding_options(p, "MEL", "mel spectrogram .npy, (frames, n_mels) or the reference's (n_mels, "
                          "frames); several files, directories (searched for .npy) or globs")
    p.add_argument("--layout", choices=["auto", "tf", "torch"], default="auto",
                   help="mel layout: tf (frames, n_mels), torch (n_mels, frames), auto (decide by n_mels)")
    p.add_argument("--adapter", help="convert the mel from another acoustic model's convention first "
                                     "(a registered adapter name, see `diffwave-vocoder plugins`)")
    p.add_argument("--adapter-stats",
                   help="mean/variance statistics file for z-scored sources "
                        "(ParallelWaveGAN stats.h5, ESPnet feats_stats.npz, TensorFlowTTS stats.npy)")
    p.set_defaults(func=cmd_vocode)

    p = commands.add_parser("resynth", help="wav -> mel -> wav (analysis-synthesis)")
    _add_vocoding_options(p, "INPUT", "input audio file; several files, directories (searched for audio "
                          "files) or globs")
    p.set_defaults(func=cmd_resynth)

    p = commands.add_parser("preprocess", help="write X.wav.spec.npy mels next to every wav (reference layout) "
                                               "and DATA_DIR/mel_convention.json, their convention")
    p.add_argument("data_dir", help="directory searched recursively for .wav files")
    p.add_argument("--model", help="use this checkpoint's mel convention (default: the reference's)")
    p.add_argument("--mel-convention", metavar="NAME_OR_JSON", help=_MEL_CONVENTION_HELP)
    p.add_argument("--resample", action="store_true", help="resample files at another rate instead of failing")
    p.set_defaults(func=cmd_preprocess, tensorflow=False)  # the mel front end is NumPy

    p = commands.add_parser("corpus", help="make an LJSpeech-layout speech corpus with espeak-ng, flite and "
                                           "festival (for training and evaluation without downloads)")
    p.add_argument("out_dir", nargs="?", help="directory to create (wavs/, metadata.csv, corpus.json)")
    p.add_argument("--clips", type=int, default=200, help="number of utterances (default 200)")
    p.add_argument("--seed", type=int, default=0, help="texts, voice settings and clip ids (default 0)")
    p.add_argument("--sample-rate", type=int, default=22050, help="output rate in Hz (default 22050)")
    p.add_argument("--voices", help="comma-separated voices (engine:voice) or engines; default: every installed "
                                    "voice (see --list-voices)")
    p.add_argument("--exclude-texts-of", action="append", metavar="CORPUS",
                   help="draw no sentence that this corpus (e.g. the training set) holds; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus directory")
    p.add_argument("--list-voices", action="store_true", help="list the voices and whether each is installed")
    p.set_defaults(func=cmd_corpus, tensorflow=False)

    p = commands.add_parser("info", help="sizes, parameter count, mel convention and provenance of a checkpoint")
    p.add_argument("model", nargs="?", help="checkpoint directory (default: the vocoder shipped in the package)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info, tensorflow=False)  # read from the files, no model built

    p = commands.add_parser("plugins", help="registered vocoders and mel adapters, with their distributions")
    p.set_defaults(func=cmd_plugins, tensorflow=False)  # listing plugins imports no model code

    p = commands.add_parser("convert", help="lmnt-com/diffwave PyTorch checkpoint -> checkpoint directory "
                                            "(no torch needed; nothing in the file is executed)")
    p.add_argument("checkpoint", help="the reference's .pt file, weights.pt link or model directory")
    p.add_argument("-o", "--output", required=True, help="checkpoint directory to write")
    p.add_argument("--dilation-cycle-length", type=int, help="if the checkpoint has no params (default 10)")
    p.add_argument("--sample-rate", type=int, help="if the checkpoint has no params (default 22050)")
    p.add_argument("--noise-schedule", type=_betas, help="training betas, comma-separated (default: the reference's)")
    p.add_argument("--inference-noise-schedule", type=_betas, help="fast-sampling betas, comma-separated")
    p.add_argument("--audio-len", type=int, help="unconditional models: samples to generate")
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser("train", help="train (or resume) a vocoder; a killed run resumes from its last checkpoint")
    p.add_argument("model_dir", help="run directory: checkpoints/, logs/ (TensorBoard), vocoder/ (the result)")
    p.add_argument("data", nargs="+", help="directory of .wav files (searched recursively) or LJSpeech folder")
    p.add_argument("--val", action="append", help="validation data directory (default: a held-out fraction)")
    p.add_argument("--config", help="JSON: a model config, or {\"model\": {...}, \"training\": {...}}")
    p.add_argument("--mel-convention", metavar="NAME_OR_JSON",
                   help=_MEL_CONVENTION_HELP + "; stored in the checkpoint, so `vocode` then takes that mel as it is")
    p.add_argument("--strategy", choices=["default", "mirrored", "multi-worker"], default="default",
                   help="tf.distribute: one device, all local GPUs, or the machines in TF_CONFIG")
    p.add_argument("--max-steps", type=int, help="global step to train to (default 1,000,000)")
    p.add_argument("--batch-size", type=int, help="global batch, split across replicas (default 16)")
    p.add_argument("--learning-rate", type=float, help="Adam learning rate (default 2e-4)")
    p.add_argument("--loss", choices=["l1", "l2"], help="l1 (the reference's, default) or l2 (the paper's)")
    p.add_argument("--max-grad-norm", type=_grad_norm, metavar="NORM",
                   help="clip gradients to this global norm; none (the default) does not clip")
    p.add_argument("--crop-frames", type=int, help="mel frames per training example (default 62)")
    p.add_argument("--crop-samples", type=int, help="unconditional models: samples per example (default audio_len)")
    p.add_argument("--seed", type=int, help="initial weights, data order, crops and noise (default 0)")
    p.add_argument("--mixed-precision", choices=["float16", "bfloat16", "float32"],
                   help="float16 uses loss scaling; float32 (the default) turns mixed precision off")
    p.add_argument("--low-noise-emphasis", type=float, metavar="E",
                   help="draw diffusion steps with probability proportional to noise std ** -E (default 0: "
                        "uniform, the reference's)")
    p.add_argument("--fast-schedule-share", type=float, metavar="F",
                   help="draw this share of the examples at the fast (inference) schedule's noise levels, where "
                        "the default sampler runs the network (default 0: none)")
    p.add_argument("--ema-decay", type=float, metavar="D",
                   help="validate and export a moving average of the weights, updated each step with decay D "
                        "(e.g. 0.999; default 0: the weights themselves, the reference's)")
    p.add_argument("--init-from", help="fine-tune: start from this vocoder checkpoint's weights (a converted or "
                                       "trained one, or a training run/checkpoint) with a fresh optimizer; the run "
                                       "takes its config unless --config is given")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 1000)")
    p.add_argument("--keep-last", type=int, help="checkpoints kept (default 3)")
    p.add_argument("--keep-every", type=int, help="also keep checkpoints at multiples of this step (default 100000)")
    p.add_argument("--log-every", type=int, help="steps between TensorBoard training scalars (default 50)")
    p.add_argument("--val-every", type=int, help="steps between validations (default: once per epoch)")
    p.add_argument("--val-fraction", type=float, help="held-out share of DATA when no --val is given (default 0.02)")
    p.set_defaults(func=cmd_train, onednn=True)

    p = commands.add_parser("evaluate", help="vocode each clip's own mel and score it against the clip "
                                             "(PESQ, STOI, MCD, ...), beside a Griffin-Lim baseline")
    p.add_argument("data", nargs="+", help="wav files, directories of wavs or LJSpeech folders")
    p.add_argument("--model", help="vocoder checkpoint directory (default: the vocoder shipped in the package)")
    p.add_argument("--run", help="training run directory: score each of its checkpoints (one summary row per step)")
    p.add_argument("--steps", type=_steps, default="fast",
                   help="'fast' (6 steps, default), 'full' (training schedule) or comma-separated betas")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the first clip (clip i: seed + i; default 0)")
    p.add_argument("--baseline", choices=["griffin-lim", "none"], default="griffin-lim",
                   help="also score Griffin-Lim from the same mel (default) or nothing")
    p.add_argument("--metrics", type=_metrics, help="comma-separated subset (default: all): pesq, stoi, estoi, "
                                                    "mcd, mrstft, logmel_l1, f0_rmse, vuv_error, voiced, dnsmos_p808")
    p.add_argument("--max-seconds", type=float, help="score only the first seconds of each clip")
    p.add_argument("--json", help="write settings, summary, per-clip scores and skipped files as JSON")
    p.add_argument("--csv", help="write per-clip scores (one row per clip and system) as CSV")
    p.add_argument("--summary-csv", help="write the summary (one row per system and checkpoint step) as CSV")
    p.add_argument("--by-voice", action="store_true",
                   help="also summarise per voice (table and --summary-csv): clips of corpora made by `corpus`, "
                        "or named in --voices")
    p.add_argument("--voices", metavar="CSV",
                   help="which voice speaks each clip of other data: 'wav path,voice' rows, paths relative to "
                        "the CSV's folder (or absolute); clips of a corpus need none")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("export", help="training run or checkpoint -> vocoder checkpoint, SavedModel or TFLite")
    p.add_argument("source", help="training run directory (its newest checkpoint), one of its checkpoints/step-*, "
                                  "or a vocoder checkpoint")
    p.add_argument("output", help="directory to write (a file for tflite)")
    p.add_argument("--format", choices=["checkpoint", "saved_model", "tflite"], default="checkpoint",
                   help="checkpoint: the directory `vocode`, `info` and load_vocoder read; saved_model: "
                        "TensorFlow SavedModel with a `vocode` signature (mel, seed -> audio) for plain TF and "
                        "TF Serving; tflite: LiteRT model, signatures `denoise` (the network) and `vocode` "
                        "(mel, noise -> audio)")
    p.add_argument("--quantize", choices=["int8"], help="tflite: int8 weights (dynamic-range quantization)")
    p.add_argument("--raw-weights", action="store_true",
                   help="a checkpoint of a run trained with --ema-decay: its trained weights, not their average")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("grow", help="vocoder checkpoint -> a deeper one with the same output, to train further "
                                         "with more capacity (new layers appended, starting as no-ops)")
    p.add_argument("source", help="vocoder checkpoint, training run directory or one of its checkpoints/step-*")
    p.add_argument("output", help="checkpoint directory to write")
    p.add_argument("--residual-layers", type=int, required=True, help="layers of the grown model (more than now)")
    p.add_argument("--seed", type=int, default=0, help="the new layers' initial weights (default 0)")
    p.set_defaults(func=cmd_grow)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: object = None, line: str | None = None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # a warning is one line on stderr, like an error
            warnings.showwarning = _one_line_warning
            if getattr(args, "onednn", False):
                _prefer_onednn()
            if getattr(args, "tensorflow", True):
                _import_tensorflow_quietly()
            status = args.func(args)  # a command returns None, or an exit status other than 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the CLI's contract: one line, no traceback
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
