"""Does a vocoder voice speech at any pitch, or only its training voices? Clips of a corpus made by
`diffwave-vocoder corpus` are pitch-shifted (librosa.effects.pitch_shift), vocoded from their own mel and
scored with `evaluate`'s pitch metrics: the share of frames pyin finds voiced in the input (its
ground-truth row) and in the vocoder's output, and the F0 RMSE where both are voiced. A vocoder that reads
the pitch from the mel voices every shift; one that learned only some voices' pitch voices those alone.

    python benchmarks/voicing_by_pitch.py CORPUS... [--model CKPT] [--voices NAME,...]
        [--clips-per-voice 1] [--semitones -12,-6,0,6,12] [--steps fast]

--model: a vocoder checkpoint (default: the shipped one). --voices: which of the corpora's voices (default
all). Row k of the table (voices, their clips, shifts, in that order) is vocoded with seed k, as
`evaluate` seeds its clips.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def shifted_clips(corpora: list[str], voices: list[str] | None, per_voice: int, semitones: list[float],
                  convention) -> list[tuple[str, str, float, object]]:
    """(voice, clip name, shift, EvaluationClip) for the first `per_voice` clips of each voice at each shift."""
    import librosa

    from diffwave_vocoder.evaluation.corpus import corpus_voices
    from diffwave_vocoder.evaluation.evaluate import EvaluationClip
    from diffwave_vocoder.features.mel import compute_mel
    from diffwave_vocoder.io.audio import load_audio

    by_voice: dict[str, list[Path]] = {}
    for corpus in corpora:
        for path, voice in corpus_voices(corpus).items():
            by_voice.setdefault(voice, []).append(path)
    unknown = sorted(set(voices or []) - set(by_voice))
    if unknown:
        raise ValueError(f"no clips of voice(s) {', '.join(unknown)}; the corpora have {', '.join(by_voice)}")
    items = []
    for voice in voices or list(by_voice):
        for path in sorted(by_voice[voice])[:per_voice]:
            audio, _ = load_audio(path, convention.sample_rate, resample=True)
            for shift in semitones:
                moved = audio if shift == 0 else librosa.effects.pitch_shift(audio, sr=convention.sample_rate,
                                                                             n_steps=shift)
                moved = np.clip(moved, -1.0, 1.0).astype(np.float32)
                name = f"{path.stem}{shift:+g}st"
                items.append((voice, path.stem, shift, EvaluationClip(name, path.with_name(name + ".wav"), moved,
                                                                      compute_mel(moved, convention), voice)))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", help="corpora made by `diffwave-vocoder corpus`")
    parser.add_argument("--model", help="vocoder checkpoint (default: the shipped vocoder)")
    parser.add_argument("--voices", type=lambda v: v.split(","), help="comma-separated voice names (default: all)")
    parser.add_argument("--clips-per-voice", type=int, default=1)
    parser.add_argument("--semitones", type=lambda v: [float(s) for s in v.split(",")], default=[-12, -6, 0, 6, 12])
    parser.add_argument("--steps", default="fast", help="the sampler's schedule: fast or full")
    args = parser.parse_args()

    import librosa

    import diffwave_vocoder as dv
    from diffwave_vocoder.evaluation.evaluate import GROUND_TRUTH, METRIC_RATE, OURS, evaluate, pitch_track

    vocoder = dv.load_vocoder(args.model) if args.model else dv.load_vocoder("diffwave")
    items = shifted_clips(args.corpora, args.voices, args.clips_per_voice, args.semitones, vocoder.mel_convention)
    clips = [clip for *_, clip in items]
    report = evaluate(vocoder, clips, steps=args.steps, baseline=None, metrics=["voiced", "f0_rmse"],
                      progress=False)
    rows = {(row["system"], row["clip"]): row for row in report.rows}
    print("| voice | clip | shift (semitones) | input median F0 (Hz) | input voiced | output voiced "
          "| F0 RMSE where both voiced (Hz) |")
    print("|---|---|---|---|---|---|---|")
    for voice, stem, shift, clip in items:
        f0, _ = pitch_track(librosa.resample(clip.audio, orig_sr=vocoder.mel_convention.sample_rate,
                                             target_sr=METRIC_RATE))
        truth, ours = rows[(GROUND_TRUTH, clip.name)], rows[(OURS, clip.name)]
        median = f"{np.nanmedian(f0):.0f}" if np.isfinite(f0).any() else "-"
        rmse = "-" if not np.isfinite(ours["f0_rmse"]) else f"{ours['f0_rmse']:.0f}"
        print(f"| {voice} | {stem} | {shift:+g} | {median} "
              f"| {truth['voiced']:.2f} | {ours['voiced']:.2f} | {rmse} |")


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        sys.exit(f"voicing_by_pitch.py: {error}")
