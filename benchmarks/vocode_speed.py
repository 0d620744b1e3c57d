"""Vocoding speed and peak memory: ours against the reference PyTorch DiffWave, side by side.

Every figure in the README's "Speed, memory and serving" section comes from this script:

    python benchmarks/vocode_speed.py                      # main table + compute floor
    python benchmarks/vocode_speed.py --levers             # what each speed lever is worth
    python benchmarks/vocode_speed.py --long-minutes 10    # any length: a 10 min input, peak memory
    python benchmarks/vocode_speed.py --tflite             # exported TFLite network: speed and error

Both sides get the same random weights (default size: 64 channels, 30 layers, a reference DiffWave
with torch's seed 0 and a random output layer, converted with `diffwave-vocoder convert`) and the
same mel. Each measurement runs in its own subprocess, so peak resident memory (ru_maxrss) is that
side's alone. Ours is timed after a one-step warm-up call that traces the graph (once per process,
not per length); the reference is timed after a warm-up call that loads its model. The reference
is the real `diffwave.inference.predict` (0.1.7) on CPU; that module imports torchaudio for its
command line's `torchaudio.save` only, and torchaudio does not exist here, so a stand-in module is
put into sys.modules for that one unused import.

The machine is shared: the script prints the load average before and after, and ratios measured in
one run (side by side) are what to compare.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SAMPLE_RATE = 22050
HOP = 256
N_MELS = 80


def _mel(seconds: float) -> "np.ndarray":
    import numpy as np

    frames = int(round(seconds * SAMPLE_RATE / HOP))
    return np.random.default_rng(1234).uniform(0.0, 1.0, (frames, N_MELS)).astype(np.float32)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


# --- workers (each runs in its own process) -------------------------------------------------------

def _set_tf_threads(threads: int | None) -> None:
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def worker_ours(args: dict) -> dict:
    _set_tf_threads(args.get("threads"))
    from diffwave_vocoder import load_vocoder
    from diffwave_vocoder.sampler import InferenceOptions, configure_cpu_threads

    if not args.get("threads") and not args.get("tf_default_threads"):
        configure_cpu_threads()  # as the CLI's vocode does

    vocoder = load_vocoder(args["checkpoint"])
    options = {k: args[k] for k in ("chunk_length", "chunk_threshold", "jit_compile") if args.get(k) is not None}
    vocoder.inference_options = InferenceOptions(**options)
    batch = args.get("batch", 1)
    mel = _mel(args["seconds"])
    # Trace the graph first (once per process, per path: whole-utterance or chunked mel), with a
    # one-step schedule (the schedule is an input of the traced graph, so the same graph serves).
    threshold = vocoder.inference_options.chunk_threshold
    warm = mel[:threshold // HOP + 1] if len(mel) * HOP > threshold else _mel(1.0)
    _, warmup, _ = _timed(lambda: vocoder.vocode([warm] * batch, steps=[1e-4], seed=0))
    audio, wall, cpu = _timed(lambda: vocoder.vocode([mel] * batch, steps=args["steps"], seed=0))
    return {"wall": wall, "cpu": cpu, "audio_seconds": batch * len(audio[0]) / SAMPLE_RATE,
            "warmup": warmup, "peak_rss": _peak_rss(), "rms": float((audio[0] ** 2).mean() ** 0.5)}


def worker_reference(args: dict) -> dict:
    import numpy as np
    import torch

    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    if "torchaudio" not in sys.modules:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # only inference.py's CLI uses it
    from diffwave.inference import predict

    spectrogram = torch.from_numpy(_mel(args["seconds"]).T.copy())
    fast = args["steps"] == "fast"
    # Load and cache the model first (predict caches it per model_dir), as we trace first.
    predict(spectrogram[:, :2], model_dir=args["reference_dir"], device=torch.device("cpu"), fast_sampling=True)
    (audio, _), wall, cpu = _timed(lambda: predict(spectrogram, model_dir=args["reference_dir"],
                                                   device=torch.device("cpu"), fast_sampling=fast))
    audio = audio.numpy()
    return {"wall": wall, "cpu": cpu, "audio_seconds": audio.shape[-1] / SAMPLE_RATE, "peak_rss": _peak_rss(),
            "rms": float(np.sqrt((audio ** 2).mean())), "torch_threads": torch.get_num_threads()}


def worker_matmul(args: dict) -> dict:
    """Sustained fp32 GEMM rate at the shapes one chunk of the network multiplies: from CPU time
    with one thread (per core, robust to the shared machine's load), from wall time with more."""
    _set_tf_threads(args.get("threads"))
    import tensorflow as tf

    c, m, rows = args["channels"], args["n_mels"], args["rows"]
    shapes = {"gate/filter (3C+M -> C)": (rows, 3 * c + m, c), "residual/skip (C -> C)": (rows, c, c),
              "large square": (2048, 2048, 2048)}
    rates = {}
    for name, (r, k, n) in shapes.items():
        a, b = tf.random.normal([r, k]), tf.random.normal([k, n])
        f = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
        f(a, b)
        best = float("inf")
        for _ in range(5):
            reps = max(1, int(2e10 // (2 * r * k * n)))
            _, wall, cpu = _timed(lambda: [f(a, b).numpy() for _ in range(reps)])
            best = min(best, (cpu if args.get("threads") == 1 else wall) / reps)
        rates[name] = 2 * r * k * n / best / 1e9
    # The network's GEMM mix: per layer 2 x (3C+M -> C) and 2 x (C -> C).
    big, small = (3 * c + m) * c, c * c
    mix = 2 * (big + small) / (2 * big / rates["gate/filter (3C+M -> C)"] + 2 * small / rates["residual/skip (C -> C)"])
    return {"rates": rates, "network_mix": mix}


def worker_tflite(args: dict) -> dict:
    """The exported TFLite model (float and int8 weights) against the Keras model: one network
    evaluation and the fast loop on the same input, time and error."""
    import warnings

    import numpy as np
    import tensorflow as tf

    from diffwave_vocoder import load_vocoder, resolve_schedule
    from diffwave_vocoder.chunking import keras_weight_getter, network_weights
    from diffwave_vocoder.formats.export import tflite_bytes

    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
    vocoder = load_vocoder(args["checkpoint"])
    rng = np.random.default_rng(0)
    mel = _mel(args["seconds"])[None]
    length = mel.shape[1] * HOP
    audio = rng.uniform(-1, 1, (1, length)).astype(np.float32)
    step = np.array([22.992493], np.float32)
    schedule = resolve_schedule(vocoder.config, "fast")
    noise = rng.standard_normal((len(schedule), 1, length)).astype(np.float32)

    def best(fn, repeats=3):
        times = []
        for _ in range(repeats):
            result, wall, _ = _timed(fn)
            times.append(wall)
        return result, min(times)

    keras_call = tf.function(lambda a, s, m: vocoder.model([a, s, m]))
    keras_call(audio, step, mel)
    expected, keras_time = best(lambda: keras_call(audio, step, mel).numpy())
    network = vocoder._sampler.network

    @tf.function
    def chunked_call(a, s, m):
        weights = network_weights(vocoder.config, keras_weight_getter(vocoder.model))
        return network(weights, a, s[0], tf.shape(a)[1:], mel=m)

    chunked_call(audio, step, mel)
    chunked, chunked_time = best(lambda: chunked_call(audio, step, mel).numpy())
    sample = vocoder._sampler.sample
    sample(schedule, [HOP], mel=mel[:, :1], noise=noise[:, :, :HOP])  # trace the injected-noise sampler
    loop_expected, loop_time = best(lambda: sample(schedule, [length], mel=mel, noise=noise), 2)
    rms = float(np.sqrt(np.mean(expected ** 2)))
    loop_rms = float(np.sqrt(np.mean(loop_expected ** 2)))
    rows = {"keras whole-input model": {"network": keras_time, "error": 0.0},
            "ours, chunked (the sampler's)": {"network": chunked_time, "loop": loop_time,
                                              "error": float(np.abs(chunked - expected).max()) / rms}}
    for quantize in (None, "int8"):
        data = tflite_bytes(vocoder, quantize)
        interpreter = tf.lite.Interpreter(model_content=data, num_threads=args.get("threads") or os.cpu_count())
        denoise, vocode = interpreter.get_signature_runner("denoise"), interpreter.get_signature_runner("vocode")
        denoise(audio=audio, step=step, mel=mel)
        eps, network_time = best(lambda: denoise(audio=audio, step=step, mel=mel)["noise"])
        result, lite_loop_time = best(lambda: vocode(mel=mel, noise=noise)["audio"], 2)
        rows[f"TFLite, {'int8 weights' if quantize else 'float32'}"] = {
            "network": network_time, "loop": lite_loop_time, "bytes": len(data),
            "error": float(np.abs(eps - expected).max()) / rms,
            "loop_error": float(np.abs(result - loop_expected).max()) / loop_rms}
    return {"rows": rows, "audio_seconds": length / SAMPLE_RATE}


WORKERS = {"ours": worker_ours, "reference": worker_reference,
           "matmul": worker_matmul, "tflite": worker_tflite}


# --- the parent ------------------------------------------------------------------------------------

def run_worker(kind: str, **args) -> dict:
    command = [sys.executable, __file__, "--worker", kind, json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_models(root: Path) -> tuple[Path, Path]:
    """The same random default-size weights for both: a reference checkpoint (torch seed 0, random
    output layer, which the reference initialises to zero) and its conversion for us."""
    import torch
    from diffwave.model import DiffWave
    from diffwave.params import AttrDict, params

    from diffwave_vocoder.formats.lmnt import convert_lmnt_checkpoint

    torch.manual_seed(0)
    model = DiffWave(AttrDict(params))
    torch.nn.init.normal_(model.output_projection.weight, std=0.1)
    reference_dir = root / "reference"
    reference_dir.mkdir()
    torch.save({"step": 0, "model": model.state_dict(), "params": dict(params)}, reference_dir / "weights.pt")
    ours = root / "ours"
    convert_lmnt_checkpoint(reference_dir / "weights.pt", ours)
    return reference_dir, ours


def macs_per_sample_step(channels: int = 64, layers: int = 30, n_mels: int = 80) -> int:
    """Multiply-adds per output sample per network evaluation (upsampler and step embedding, which
    are per frame or per step, excluded)."""
    per_layer = 3 * channels * 2 * channels + n_mels * 2 * channels + channels * 2 * channels
    return layers * per_layer + channels + channels * channels + channels


def _load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _best(runs: list[dict]) -> dict:
    """The fastest of repeated runs: the machine is shared, and load only ever slows a run down."""
    return min(runs, key=lambda r: r["wall"] / r["audio_seconds"])


def main_table(args, reference_dir: Path, ours: Path) -> None:
    print(f"# main table ({_load()}, {os.cpu_count()} CPUs); each side run up to {args.repeats} times, "
          "alternating, fastest kept (a side whose run took over 300 s is not repeated)")
    rows = []
    for steps in args.schedules:
        for seconds in args.clips:
            ref_seconds = seconds if steps == "fast" else min(seconds, args.reference_full_seconds)
            mine, ref = [], []
            for _ in range(args.repeats):
                if not mine or mine[-1]["wall"] < 300:
                    mine.append(run_worker("ours", checkpoint=str(ours), seconds=seconds, steps=steps))
                if not ref or ref[-1]["wall"] < 300:
                    ref.append(run_worker("reference", reference_dir=str(reference_dir), seconds=ref_seconds,
                                          steps=steps))
                print(f"  {steps} {seconds:g} s: ours {[round(r['wall'] / r['audio_seconds'], 2) for r in mine]} s/s, "
                      f"reference {[round(r['wall'] / r['audio_seconds'], 2) for r in ref]} s/s [{_load()}]",
                      flush=True)
            rows.append((steps, seconds, ref_seconds, _best(ref), _best(mine)))
    print("\n| schedule | clip | reference s/s | ours s/s | speed-up | reference CPU s/s | ours CPU s/s | "
          "reference peak RSS | ours peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for steps, seconds, ref_seconds, ref, mine in rows:
        note = "" if ref_seconds == seconds else f" ({ref_seconds:g} s clip)"
        ref_rtf, ours_rtf = ref["wall"] / ref["audio_seconds"], mine["wall"] / mine["audio_seconds"]
        print(f"| {steps} | {seconds:g} s | {ref_rtf:.2f}{note} | {ours_rtf:.2f} | {ref_rtf / ours_rtf:.2f}x | "
              f"{ref['cpu'] / ref['audio_seconds']:.2f} | {mine['cpu'] / mine['audio_seconds']:.2f} | "
              f"{_gb(ref['peak_rss'])}{note} | {_gb(mine['peak_rss'])} |")
    print(f"({_load()})")
    floor(rows)


def floor(rows) -> None:
    macs = macs_per_sample_step()
    print(f"\n# compute floor ({_load()})")
    print(f"multiply-adds per sample per step: {macs:,} (default model); "
          f"{2 * macs * SAMPLE_RATE * 6 / 1e9:.0f} GFLOP per second of audio, fast schedule")
    cores = os.cpu_count()
    gemm = {threads: run_worker("matmul", channels=64, n_mels=N_MELS, rows=8192, threads=threads)
            for threads in sorted({1, cores})}
    for threads, result in gemm.items():
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in result["rates"].items())
        print(f"measured fp32 matmul GFLOP/s, {threads} thread(s): {rates}; the network's mix "
              f"{result['network_mix']:.0f}")
    per_core = gemm[1]["network_mix"]
    for steps, seconds, _, _, mine in rows:
        count = 6 if steps == "fast" else 50
        floor_cpu = 2 * macs * SAMPLE_RATE * count / (per_core * 1e9)
        ours_cpu = mine["cpu"] / mine["audio_seconds"]
        ours_wall = mine["wall"] / mine["audio_seconds"]
        print(f"{steps} {seconds:g} s: at the one-core GEMM rate the network needs {floor_cpu:.2f} CPU s/s "
              f"({floor_cpu / cores:.2f} s/s on {cores} idle cores); ours took {ours_cpu:.2f} CPU s/s = "
              f"{floor_cpu / ours_cpu:.0%} of that rate, {ours_wall:.2f} s/s wall")


# A chunk length no clip reaches: the sampler runs the network as one chunk over the whole utterance.
WHOLE_UTTERANCE = 1 << 30


def levers(args, ours: Path) -> None:
    seconds = args.lever_seconds
    print(f"# levers: fast schedule, {seconds:g} s clip ({_load()})")
    cases = [
        ("whole utterance as one chunk, each layer over every sample", "ours", {"chunk_length": WHOLE_UTTERANCE}),
        ("chunked wavefront, TF's default threads (each op on every core), 8192-sample chunks", "ours",
         {"tf_default_threads": True}),
        ("  same, 4096-sample chunks", "ours", {"tf_default_threads": True, "chunk_length": 4096}),
        ("chunked wavefront, each op on half the cores (CLI), 2048-sample chunks", "ours", {"chunk_length": 2048}),
        ("  same, 4096-sample chunks (default: 4096 per op thread)", "ours", {}),
        ("  same, 8192-sample chunks", "ours", {"chunk_length": 8192}),
        ("chunked, XLA (jit_compile) per chunk", "ours", {"jit_compile": True}),
        ("chunked, one thread in all", "ours", {"threads": 1}),
        ("chunked, batch of 4 utterances", "ours", {"batch": 4}),
    ]
    print("\n| variant | s/s | CPU s/s | peak RSS |")
    print("|---|---|---|---|")
    for name, kind, extra in cases:
        result = run_worker(kind, checkpoint=str(ours), seconds=seconds, steps="fast", **extra)
        print(f"| {name} | {result['wall'] / result['audio_seconds']:.2f} | "
              f"{result['cpu'] / result['audio_seconds']:.2f} | {_gb(result['peak_rss'])} |", flush=True)
    print(f"({_load()})")


def long_input(args, ours: Path) -> None:
    seconds = args.long_minutes * 60
    print(f"# long input: {args.long_minutes:g} min, fast schedule ({_load()})")
    result = run_worker("ours", checkpoint=str(ours), seconds=seconds, steps="fast")
    print(f"{seconds:g} s of audio in {result['wall']:.0f} s ({result['wall'] / result['audio_seconds']:.2f} s/s), "
          f"peak RSS {_gb(result['peak_rss'])}, output rms {result['rms']:.3f} ({_load()})")


def tflite(args, ours: Path) -> None:
    seconds = args.lever_seconds
    print(f"# TFLite: default-size model, {seconds:g} s input ({_load()})")
    result = run_worker("tflite", checkpoint=str(ours), seconds=seconds)
    audio = result["audio_seconds"]
    print("\n| model | one network evaluation, s/s | fast loop (6 steps), s/s "
          "| max error / output RMS (network; loop) | size |")
    print("|---|---|---|---|---|")
    for name, row in result["rows"].items():
        loop = f"{row['loop'] / audio:.2f}" if "loop" in row else "-"
        error = f"{row['error']:.1e}" + (f"; {row['loop_error']:.1e}" if "loop_error" in row else "")
        size = f"{row['bytes'] / 1e6:.1f} MB" if "bytes" in row else "-"
        print(f"| {name} | {row['network'] / audio:.2f} | {loop} | {error} | {size} |")
    print(f"({_load()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--clips", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 20.0],
                        help="clip lengths in seconds (default 5,20)")
    parser.add_argument("--schedules", type=lambda s: s.split(","), default=["fast", "full"])
    parser.add_argument("--repeats", type=int, default=2, help="runs per side and row, fastest kept (default 2)")
    parser.add_argument("--reference-full-seconds", type=float, default=5.0,
                        help="the reference's 50-step schedule runs on clips of at most this length (default 5)")
    parser.add_argument("--levers", action="store_true", help="measure the speed levers instead")
    parser.add_argument("--lever-seconds", type=float, default=5.0, help="clip length for --levers and --tflite")
    parser.add_argument("--long-minutes", type=float, help="vocode an input this many minutes long instead")
    parser.add_argument("--tflite", action="store_true", help="measure the exported TFLite model instead")
    args = parser.parse_args()
    if args.worker:
        kind, payload = args.worker
        print(json.dumps(WORKERS[kind](json.loads(payload))))
        return
    with tempfile.TemporaryDirectory(prefix="vocode-speed-") as tmp:
        reference_dir, ours = make_models(Path(tmp))
        if args.levers:
            levers(args, ours)
        elif args.tflite:
            tflite(args, ours)
        elif args.long_minutes:
            long_input(args, ours)
        else:
            main_table(args, reference_dir, ours)


if __name__ == "__main__":
    main()
