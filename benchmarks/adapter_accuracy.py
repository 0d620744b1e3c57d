"""How close does each mel adapter get to the mel DiffWave would have computed itself?

For every clip of a speech corpus and every built-in adapter: compute the source toolkit's mel from
the wav with that toolkit's recipe, adapt it to lmnt's convention through the registry, and compare
with lmnt's mel computed directly from the same wav. Reports the mean and 99th-percentile absolute
error in lmnt units (1.0 = 100 dB) and in dB. The z-scored toolkits get statistics computed over
the corpus and written in each toolkit's own file format (stats.h5, feats_stats.npz, stats.npy).

With --vocode-clips N it also vocodes the first --vocode-seconds of N clips from the adapted mel
and from lmnt's own mel with the same seed, and reports the log-mel distance of the two outputs,
next to two references: the same mel with another seed (the sampler's own spread) and the source
mel fed in unconverted (what users did in lmnt-com/diffwave#26). The model is randomly initialised
(reference size) unless --checkpoint is given: the distances say how differently the network is
driven, not how good the audio sounds.

    python benchmarks/adapter_accuracy.py --clips 8 --seed 1 [--vocode-clips 2] [--checkpoint DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from diffwave_vocoder import get_adapter
from diffwave_vocoder.adapters import CONVENTIONS
from diffwave_vocoder.evaluation.corpus import make_speech_corpus
from diffwave_vocoder.features.mel import MelConvention, compute_mel, decompress

TARGET = MelConvention()  # lmnt-com/diffwave's mel: what the reference checkpoints expect
STATS_FILES = {"parallel_wavegan": "stats.h5", "espnet": "feats_stats.npz", "tensorflowtts": "stats.npy"}


def make_corpus(directory: Path, clips: int, seed: int) -> list[Path]:
    make_speech_corpus(directory, clips=clips, seed=seed)
    return sorted((directory / "wavs").glob("*.wav"))


def read(wav: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(wav), dtype="float32")
    if rate != TARGET.sample_rate:
        raise ValueError(f"{wav} is at {rate} Hz; the benchmark needs {TARGET.sample_rate} Hz")
    return audio


def write_stats(audios: list[np.ndarray], directory: Path) -> dict[str, Path]:
    """Corpus statistics of raw log10 mels, in each z-scoring toolkit's own file format."""
    import h5py

    raw = np.concatenate([compute_mel(a, CONVENTIONS["parallel_wavegan"]()) for a in audios]).astype(np.float64)
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    paths = {name: directory / file for name, file in STATS_FILES.items()}
    with h5py.File(paths["parallel_wavegan"], "w") as f:  # ParallelWaveGAN compute_statistics
        f["mean"], f["scale"] = mean, scale
    np.savez(paths["espnet"], count=np.array(len(raw)), sum=raw.sum(axis=0),  # ESPnet collect_stats
             sum_square=(raw ** 2).sum(axis=0))
    np.save(paths["tensorflowtts"], np.stack([mean, scale]))  # TensorFlowTTS compute_statistics
    return paths


def adapters(stats: dict[str, Path]) -> dict[str, object]:
    """Every built-in toolkit adapter, z-scored ones with their statistics files, into lmnt's mel."""
    return {name: get_adapter(name, target=TARGET, **({"stats": stats[name]} if name in stats else {}))
            for name in CONVENTIONS}


def in_band(adapter) -> np.ndarray:
    """Target mel bands whose centre frequency the source's filterbank covers."""
    import librosa

    t, s = adapter.target, adapter.source
    centres = librosa.mel_frequencies(t.n_mels + 2, fmin=t.fmin, fmax=t.f_max, htk=t.mel_scale == "htk")[1:-1]
    return (centres >= s.fmin) & (centres <= s.f_max)


def measure(adapter, audios: list[np.ndarray]) -> dict[str, float]:
    """Mean and 99th-percentile |adapted - direct| over all clips, in target units and in dB, and
    in dB over the bands the source covers (the rest is extrapolated)."""
    errors, db_errors = [], []
    band = in_band(adapter)
    for audio in audios:
        direct = compute_mel(audio, adapter.target)
        adapted = adapter(compute_mel(audio, adapter.source))
        if adapted.shape != direct.shape:
            raise AssertionError(f"{adapter}: adapted shape {adapted.shape} != direct {direct.shape}")
        errors.append(np.abs(adapted - direct).ravel())
        to_db = lambda m: 20 * np.log10(np.maximum(decompress(m, adapter.target), 1e-12))  # noqa: E731
        db_errors.append(np.abs(to_db(adapted) - to_db(direct)))
    e, d = np.concatenate(errors), np.concatenate(db_errors)
    return {"mean": float(e.mean()), "p99": float(np.percentile(e, 99)),
            "mean_db": float(d.mean()), "p99_db": float(np.percentile(d, 99)),
            "band_mean_db": float(d[:, band].mean()), "band_p99_db": float(np.percentile(d[:, band], 99))}


def log_mel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |difference| in dB of lmnt mels of two waveforms (cut to the shorter)."""
    ma, mb = compute_mel(a, TARGET), compute_mel(b, TARGET)
    n = min(len(ma), len(mb))
    return float(100.0 * np.abs(ma[:n] - mb[:n]).mean())


def random_vocoder(seed: int = 0):
    """Reference-size DiffWave with random weights. DiffWave zero-initialises its output layer
    (so an untrained model ignores the mel); that layer gets random weights too."""
    from diffwave_vocoder import load_vocoder

    vocoder = load_vocoder("diffwave", config={}, seed=seed)
    layer = vocoder.model.get_layer("output_projection")
    kernel = np.random.default_rng(seed).normal(0.0, 0.1, layer.kernel.shape).astype(np.float32)
    layer.set_weights([kernel, np.zeros(layer.bias.shape, np.float32)])
    return vocoder


def vocode_comparison(vocoder, chosen: dict[str, object], audios: list[np.ndarray], seconds: float,
                      seed: int = 1) -> dict[str, dict[str, float]]:
    """Per adapter: log-mel distance of vocode(adapted) vs vocode(direct), and of vocoding the
    unconverted source mel (frames as they are) vs vocode(direct); plus the seed-to-seed spread.
    Each utterance's audio depends only on its own seed, so batching (in chunks, for memory) does
    not change the results."""
    clips = [a[: int(seconds * TARGET.sample_rate)] for a in audios]
    direct = [compute_mel(c, TARGET) for c in clips]
    sources = {name: [compute_mel(c, adapter.source) for c in clips] for name, adapter in chosen.items()}
    adapted = [m for name, adapter in chosen.items() for m in adapter(sources[name])]
    unconverted = [m for name in chosen for m in sources[name]]
    def vocode(mels: list[np.ndarray], seed: int, chunk: int = 4) -> list[np.ndarray]:
        return [a for i in range(0, len(mels), chunk) for a in vocoder.vocode(mels[i:i + chunk], seed=seed)]

    reference, other_seed, from_adapted, from_unconverted = (
        vocode(mels, s) for mels, s in ((direct, seed), (direct, seed + 1), (adapted, seed), (unconverted, seed)))
    spread = float(np.mean([log_mel_distance(r, o) for r, o in zip(reference, other_seed)]))
    n = len(clips)
    return {name: {
        "adapted": float(np.mean([log_mel_distance(r, a) for r, a in zip(reference, from_adapted[i * n:])])),
        "unconverted": float(np.mean([log_mel_distance(r, a) for r, a in zip(reference, from_unconverted[i * n:])])),
        "seed_spread": spread} for i, name in enumerate(chosen)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="LJSpeech-layout directory (default: generate one)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (seed 0 was used to pick defaults)")
    parser.add_argument("--vocode-clips", type=int, default=0)
    parser.add_argument("--vocode-seconds", type=float, default=1.5)
    parser.add_argument("--checkpoint", help="trained checkpoint for the vocoding comparison")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wavs = (sorted((args.corpus / "wavs").glob("*.wav"))[: args.clips] if args.corpus
                else make_corpus(tmp / "corpus", args.clips, args.seed))
        audios = [read(w) for w in wavs]
        chosen = adapters(write_stats(audios, tmp))
        seconds = sum(len(a) for a in audios) / TARGET.sample_rate
        print(f"{len(audios)} clips, {seconds:.1f} s of speech -> lmnt mel (1.0 = 100 dB)\n")
        print("| source (adapter) | mean abs error | p99 abs error | mean (dB) | p99 (dB) "
              "| in source band: mean (dB) | p99 (dB) | time (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, adapter in chosen.items():
            start = time.perf_counter()
            r = measure(adapter, audios)
            print(f"| {name} | {r['mean']:.4f} | {r['p99']:.4f} | {r['mean_db']:.2f} | {r['p99_db']:.2f} | "
                  f"{r['band_mean_db']:.2f} | {r['band_p99_db']:.2f} | {time.perf_counter() - start:.1f} |")
        if args.vocode_clips:
            from diffwave_vocoder import load_vocoder

            vocoder = (load_vocoder("diffwave", checkpoint=args.checkpoint) if args.checkpoint
                       else random_vocoder())
            kind = ("trained checkpoint" if args.checkpoint
                    else "randomly initialised reference-size model, output layer included")
            print(f"\nVocoded ({kind}, first {args.vocode_seconds} s of {args.vocode_clips} clips, fast "
                  "schedule, same seed): log-mel distance (dB) to the output for lmnt's own mel\n")
            print("| source (adapter) | adapted | unconverted source mel | same mel, other seed |")
            print("|---|---|---|---|")
            results = vocode_comparison(vocoder, chosen, audios[: args.vocode_clips], args.vocode_seconds)
            for name, r in results.items():
                print(f"| {name} | {r['adapted']:.2f} | {r['unconverted']:.2f} | {r['seed_spread']:.2f} |")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
