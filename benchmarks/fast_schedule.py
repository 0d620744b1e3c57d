"""Is a vocoder's fast schedule the best of its neighbours? Each beta of the checkpoint's fast schedule is
multiplied by each factor in turn, every variant vocodes the same clips with the same seeds, and each is
scored with `evaluate`'s STOI and multi-resolution STFT distance. The differences from the checkpoint's own
schedule are paired per clip (same clip, same seed), so their mean and spread are the schedule's effect
and not the clips'. A variant outside the training schedule's noise range is listed as skipped.

    python benchmarks/fast_schedule.py DATA... [--model CKPT] [--factors 0.5,2] [--also BETAS]...
        [--full] [--max-seconds 3]

--model: a vocoder checkpoint (default: the shipped one). --also: more schedules to score, comma-separated
betas. --full: also the 50-step training schedule, what a sampler eight times slower reaches.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

METRICS = ("stoi", "mrstft")


def _floats(text: str) -> list[float]:
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def neighbours(betas: list[float], factors: list[float]) -> list[tuple[str, list[float]]]:
    """(what changed, betas) for each beta multiplied by each factor."""
    return [(f"beta {n + 1} x{factor:g}", [b * factor if m == n else b for m, b in enumerate(betas)])
            for n in range(len(betas)) for factor in factors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="wav files, directories or corpora")
    parser.add_argument("--model", help="vocoder checkpoint (default: the shipped vocoder)")
    parser.add_argument("--factors", type=_floats, default=[0.5, 2.0], help="comma-separated (default 0.5,2)")
    parser.add_argument("--also", type=_floats, action="append", default=[], help="comma-separated betas")
    parser.add_argument("--full", action="store_true", help="also score the 50-step training schedule")
    parser.add_argument("--max-seconds", type=float, default=3.0, help="score the first seconds of each clip")
    args = parser.parse_args()

    import diffwave_vocoder as dv
    from diffwave_vocoder.evaluation.evaluate import OURS, evaluate, load_clips
    from diffwave_vocoder.schedule import resolve_schedule

    vocoder = dv.load_vocoder(args.model) if args.model else dv.load_vocoder("diffwave")
    config = vocoder.config
    own = list(config.inference_noise_schedule)
    candidates = [("the checkpoint's", own), *neighbours(own, args.factors),
                  *[("given", betas) for betas in args.also], *([("full (50 steps)", "full")] if args.full else [])]
    clips, _ = load_clips(args.data, vocoder.mel_convention, max_seconds=args.max_seconds)

    def scores(steps) -> dict[str, np.ndarray]:
        report = evaluate(vocoder, clips, steps=steps, baseline=None, ground_truth=False, metrics=METRICS,
                          progress=False)
        rows = [row for row in report.rows if row["system"] == OURS]
        return {metric: np.array([row[metric] for row in rows]) for metric in METRICS}

    base = scores(own)
    print(f"{len(clips)} clips, first {args.max_seconds:g} s of each; differences paired per clip (mean ± sd)\n")
    print("| schedule | betas | STOI | STOI - own | MR-STFT | MR-STFT - own |")
    print("|---|---|---|---|---|---|")
    for name, betas in candidates:
        shown = "training" if betas == "full" else ", ".join(f"{b:g}" for b in betas)
        try:
            resolve_schedule(config, betas)
        except ValueError as error:
            print(f"| {name} | {shown} | skipped: {' '.join(str(error).split())} | | | |")
            continue
        values = base if betas is own else scores(betas)
        cells = []
        for metric in METRICS:
            difference = values[metric] - base[metric]
            cells += [f"{values[metric].mean():.4f}", f"{difference.mean():+.4f} ± {difference.std():.4f}"]
        print(f"| {name} | {shown} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        sys.exit(f"fast_schedule.py: {error}")
