"""Quality against training step for a run: `evaluate_run` on every kept checkpoint, plotted beside
Griffin-Lim and ground truth from the same mels.

    python benchmarks/quality_curve.py RUN_DIR DATA... [--out quality.png] [--json quality.json]
        [--metrics stoi,pesq,logmel_l1,dnsmos_p808] [--steps fast] [--max-seconds S] [--earlier CKPT...]
        [--extend quality.json]

Steps count from the start of training: a fine-tuning run's checkpoints sit after the steps of the
checkpoint it started from, which is the first point. `--earlier` adds vocoder checkpoints from before
that (the exports of earlier runs of the chain, whatever their prior), each at its own step.

`--extend` continues a curve this script wrote before (its --json): the stored points stay as they were
scored (their checkpoints may be gone with the machine that trained them), only steps the file lacks are
scored, on the same clips, seed and metrics, and the merged curve is written back (to --json if given).

The plot has one panel per metric: the vocoder's score at each checkpoint step, with Griffin-Lim and
ground truth (where a reference-free metric gives it a score) as horizontal lines, and a vertical line
where the run was resumed with changed settings (a learning rate lowered by hand). Needs the `eval`
extra and matplotlib.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

from diffwave_vocoder.evaluation.evaluate import (GRIFFIN_LIM, GROUND_TRUTH, HIGHER_IS_BETTER, OURS, EvaluationReport,
                                                  clip_names, clip_paths, evaluate_run)
from diffwave_vocoder.io.atomic import atomic_file

LABELS = {"stoi": "STOI", "estoi": "ESTOI", "pesq": "PESQ (wb)", "mcd": "MCD (dB)", "mrstft": "MR-STFT",
          "logmel_l1": "log-mel L1 (1.0 = 100 dB)", "f0_rmse": "F0 RMSE (Hz)", "vuv_error": "V/UV error",
          "voiced": "voiced frames (share)", "dnsmos_p808": "DNSMOS P.808"}


def _setting(field: str, value: object) -> str:
    """A setting's value in the legend: null settings (mixed_precision, max_grad_norm) and a zero
    ema_decay (no weight average) are off."""
    return "off" if value is None or (field == "ema_decay" and value == 0) else str(value)


def plot(summary: list[dict], metrics: list[str], out: Path, title: str,
         changes: Sequence[dict] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = sorted((row for row in summary if row["system"] == OURS), key=lambda row: row["step"])
    others = {row["system"]: row for row in summary if row["system"] != OURS}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        ax.plot([r["step"] for r in ours], [r[metric] for r in ours], "o-", label="diffwave (fast)")
        for system, style in (("griffin-lim", "--"), ("ground-truth", ":")):
            value = others.get(system, {}).get(metric, math.nan)
            if value is not None and math.isfinite(value):
                ax.axhline(value, linestyle=style, color="gray" if system == "griffin-lim" else "black",
                           label=system)
        for change in changes:
            label = ", ".join(f"{field.replace('_', ' ')} {_setting(field, values[0])} -> {_setting(field, values[1])}"
                              for field, values in change.items() if field != "step")
            ax.axvline(change["step"], color="tab:red", alpha=0.6, linewidth=1, label=label)
        arrow = {True: "higher is better", False: "lower is better",
                 None: "nearest ground truth"}[HIGHER_IS_BETTER[metric]]
        ax.set_title(f"{LABELS.get(metric, metric)}\n({arrow})", fontsize=9)
        ax.set_xlabel("training step")
        steps = [r["step"] for r in ours]
        if steps and min(steps) > 0 and max(steps) / min(steps) > 10:
            ax.set_xscale("log")  # quality grows about linearly per doubling of steps
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_file(out, suffix=out.suffix) as tmp:
        fig.savefig(tmp, dpi=110)


def extend(stored: EvaluationReport, run: Path, data: list[str], steps: str, max_seconds: float | None,
           earlier: list[Path]) -> EvaluationReport:
    """`stored` with the points of `run` (and `earlier`) it lacks, scored as it was: on the same clips,
    leaving out those it skipped as unreadable."""
    settings = stored.settings
    wanted = {"steps": steps, "max_seconds": max_seconds}
    differ = {key: (settings.get(key), value) for key, value in wanted.items() if settings.get(key) != value}
    clips = sorted({row["clip"] for row in stored.rows})
    skipped = {entry["path"] for entry in stored.skipped}
    paths = [path for path in clip_paths(data) if str(path) not in skipped]
    given = sorted(clip_names(paths))
    if given != clips:
        differ["clips"] = (f"{len(clips)} clips", f"{len(given)} clips")
    if differ:
        raise SystemExit("quality_curve.py: the stored curve was scored otherwise: " + ", ".join(
            f"{key} {old!r} (stored) vs {new!r} (now)" for key, (old, new) in differ.items()))
    systems = {row["system"] for row in stored.rows}
    new = evaluate_run(run, paths, steps=steps, metrics=stored.metrics, seed=settings.get("seed", 0),
                       max_seconds=max_seconds, progress=True, earlier=earlier,
                       baseline=None if GRIFFIN_LIM in systems else settings.get("baseline", GRIFFIN_LIM),
                       ground_truth=GROUND_TRUTH not in systems,
                       skip_steps=[row["step"] for row in stored.rows if row["system"] == OURS])
    changes = settings.get("setting_changes", [])
    merged = {**new.settings, "checkpoints": settings.get("checkpoints", []) + new.settings["checkpoints"],
              "setting_changes": changes + [c for c in new.settings["setting_changes"] if c not in changes],
              "runs": settings.get("runs", [settings.get("run")]) + [new.settings["run"]],
              "baseline": settings.get("baseline")}
    del merged["run"], merged["steps_before_run"]
    return EvaluationReport(stored.metrics, stored.rows + new.rows, stored.skipped, merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--metrics", help="default: stoi,pesq,logmel_l1,dnsmos_p808 (with --extend: the stored ones)")
    parser.add_argument("--steps", default="fast")
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument("--out", type=Path, default=Path("quality.png"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--earlier", nargs="+", default=[], type=Path, metavar="CKPT",
                        help="vocoder checkpoints of earlier runs of the same model, plotted at their steps")
    parser.add_argument("--extend", type=Path, metavar="JSON",
                        help="a curve this script wrote (--json): score only the steps it lacks and merge")
    args = parser.parse_args()
    metrics = [m.strip() for m in (args.metrics or "stoi,pesq,logmel_l1,dnsmos_p808").split(",") if m.strip()]
    if args.extend:
        try:
            stored = EvaluationReport.read_json(args.extend)
        except ValueError as error:
            raise SystemExit(f"quality_curve.py: {error}") from None
        if args.metrics and tuple(metrics) != stored.metrics:
            raise SystemExit(f"quality_curve.py: --metrics {','.join(metrics)} differ from the stored curve's "
                             f"{','.join(stored.metrics)}")
        metrics = list(stored.metrics)
        report = extend(stored, args.run, args.data, args.steps, args.max_seconds, args.earlier)
    else:
        report = evaluate_run(args.run, args.data, steps=args.steps, metrics=metrics, max_seconds=args.max_seconds,
                              progress=True, earlier=args.earlier)
    print(report.table())
    out_json = args.json or args.extend
    if out_json:
        report.write_json(out_json)
    clips = len({row["clip"] for row in report.rows})
    plot(report.summary(), metrics, args.out, f"quality over training: {clips} held-out clips, {args.steps} schedule",
         report.settings.get("setting_changes", []))
    print(f"wrote {args.out}" + (f" and {out_json}" if out_json else ""))


if __name__ == "__main__":
    main()
