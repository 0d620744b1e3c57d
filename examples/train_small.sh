#!/usr/bin/env bash
# Training end to end, on CPU in a few minutes: speech corpus -> mels -> train -> export -> vocode.
#
#   bash examples/train_small.sh [OUT_DIR] [DATA_DIR]
#
# DATA_DIR is any directory of 22.05 kHz wavs or an LJSpeech folder. Without it, a corpus of synthetic
# speech is generated with `diffwave-vocoder corpus` (espeak-ng, flite, festival and sox). The model is
# small and trained for STEPS (default 200) steps, which shows the whole pipeline working but not good
# audio (expect mostly noise): the reference reports intelligible speech after ~8k steps and the paper's
# quality after ~1M steps with the default config.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-train_small}
DATA=${2:-}
STEPS=${STEPS:-200}
mkdir -p "$OUT"

if [ -z "$DATA" ]; then
    DATA="$OUT/corpus"
    # The corpus appears whole or not at all, so an interrupted run simply makes it again.
    [ -f "$DATA/metadata.csv" ] || diffwave-vocoder corpus "$DATA" --clips 40
fi

# Mels beside the wavs (X.wav.spec.npy), cached for training.
diffwave-vocoder preprocess "$DATA"
# Resumable: run the same command again after an interruption and it continues from the last checkpoint.
diffwave-vocoder train "$OUT/run" "$DATA" --config examples/train_small_config.json --max-steps "$STEPS"
diffwave-vocoder export "$OUT/run" "$OUT/vocoder"
diffwave-vocoder info "$OUT/vocoder"

WAV=$(find "$DATA" -name '*.wav' | sort | head -n 1)
diffwave-vocoder resynth --model "$OUT/vocoder" "$WAV" -o "$OUT/resynth.wav" --seed 0
diffwave-vocoder vocode --model "$OUT/vocoder" "$WAV.spec.npy" -o "$OUT/vocoded_full.wav" --steps full --seed 0
echo "done: listen to $OUT/resynth.wav (fast schedule) and $OUT/vocoded_full.wav (full schedule)"
