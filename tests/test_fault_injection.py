"""The fault-injection suite's short form (benchmarks/fault_injection.py, whose long form gives the
figures in benchmarks/README.md, "Fault injection"): SIGKILLs at random moments of steps, saves, rotation
and export, each followed by a resume; the run must end with an uninterrupted run's weights and no temporary left.
Then wavs break during training: each is named in the log, skipped, and training finishes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"


@pytest.mark.slow
def test_five_random_sigkills_resume_to_the_uninterrupted_weights_and_broken_wavs_are_skipped(
        speech_corpus, tmp_path):
    figures_file = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--kills", "5", "--data", str(speech_corpus),
                             "--work", str(tmp_path / "work"), "--json", str(figures_file)],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    assert figures["kills_injected"] == 5 and figures["kills_survived"] == 5
    assert sum(figures["kills_by_phase"].values()) == 5 and figures["kills_by_phase"]["export"] >= 1
    assert figures["max_weight_difference_checkpoint"] <= 1e-5
    assert figures["max_weight_difference_vocoder"] <= 1e-5
    assert figures["temporaries_at_end"] == []
    assert figures["checkpoints_kept"] == figures["checkpoints_kept_uninterrupted"] == [22, 24]
    corrupt = figures["corrupt_data"]
    assert corrupt["files_broken"] == corrupt["named_in_log"] == 3 and corrupt["finished"]
    assert figures["passed"]
