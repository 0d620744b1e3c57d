#!/usr/bin/env bash
# The main job with the vocoder that ships in the package, 40 to 52 s on 2 CPU cores, the vocoded wav
# after about half of it (much of it TensorFlow starting in the two commands that vocode, and the sampler's
# first trace; info, corpus and preprocess start none):
# text -> speech synthesizer -> wav -> mel -> DiffWave -> wav, and how close the result is.
#
#   bash examples/quickstart.sh [OUT_DIR]
#
# The two clips are spoken by voices the shipped model never heard in training (flite's awb and
# espeak-ng's en-us+m5), with texts it never saw. Train your own with examples/train_small.sh (a few
# minutes) or recipes/default-vocoder/train.sh (the shipped model's recipe, hours).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-quickstart}
mkdir -p "$OUT"

# What the shipped vocoder is (sizes, data, training command, held-out quality): all of it in the file.
diffwave-vocoder info > "$OUT/shipped-vocoder.txt"
head -n 3 "$OUT/shipped-vocoder.txt"
[ -f "$OUT/speech/metadata.csv" ] || diffwave-vocoder corpus "$OUT/speech" --clips 2 --seed 7 \
    --voices flite:awb,espeak-ng:en-us+m5
WAV=$(find "$OUT/speech/wavs" -name '*.wav' | sort | head -n 1)
# wav -> mel file (the reference's (n_mels, frames) layout), as an acoustic model would give one.
diffwave-vocoder preprocess "$OUT/speech"
# mel -> wav with the shipped model, fast schedule (6 steps). `diffwave-vocoder resynth WAV -o OUT` does
# wav -> mel -> wav in one command.
diffwave-vocoder vocode "$WAV.spec.npy" -o "$OUT/vocoded.wav" --seed 0
# Quality against the original and against Griffin-Lim from the same mel.
diffwave-vocoder evaluate "$OUT/speech" --metrics stoi,pesq,logmel_l1 --json "$OUT/evaluation.json"
echo "done: listen to $WAV (original) and $OUT/vocoded.wav"
